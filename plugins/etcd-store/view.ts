/**
 * What reads see: the mirror of etcd (mirror.ts) under the TTL rule, as the store hands it out.
 *
 * A record whose deadline has passed on the injected clock is absent for every read and fires its
 * change from one clock timer, at the earliest deadline; its keys are then deleted in etcd unless
 * they were written again meanwhile. The per-app lists of instances and crash counts are kept up
 * to date as records come and go, so a snapshot costs nothing.
 */
import {
  appKey,
  type AgentRecord,
  type AppKey,
  type Clock,
  CowMap,
  crashApp,
  type CrashCount,
  DeadlineHeap,
  DeadlineTimer,
  type DesiredApp,
  type FreshnessKind,
  type FreshnessMarker,
  type InstanceHeartbeat,
  type PendingStart,
  type PendingStop,
  sameInstanceSet,
  type StoreChange,
  type StoreSnapshot,
  CrashCountIndex,
} from '../../src/sdk/index.js';
import type { AgentValue, CrashValue } from './codec.js';
import { deltaKey, recordKey, type Keys } from './keys.js';

/** What the view reads of the mirror: the values etcd holds, decoded (an agent's with its delta applied). */
export interface StoredValues {
  readonly agents: ReadonlyMap<string, AgentValue>;
  readonly crashes: ReadonlyMap<string, CrashValue>;
  readonly freshness: ReadonlyMap<FreshnessKind, FreshnessMarker>;
}

export interface VisibleStateOptions {
  clock: Clock;
  keys: Keys;
  /** This store instance's mark on its agent writes. */
  writerId: string;
  stored: StoredValues;
  /** Deletes the keys of an expired record in etcd, unless written again since. */
  deleteExpired: (keys: readonly string[]) => void;
  /** Whether the store is stopped (then no timer is armed). */
  isStopped: () => boolean;
  onListenerError?: (err: unknown, change: StoreChange) => void;
}

type ExpiryKind = 'agent' | 'crash' | 'fresh';

interface AgentState {
  record: AgentRecord;
}

/**
 * The apps of the instances that are not the very same objects in an agent's `prev` and `next`
 * instances. A store hands on unchanged instances as they were, so a few changes touch a few apps;
 * instances read again from etcd touch all of theirs.
 */
function appsTouched(prev: readonly InstanceHeartbeat[], next: readonly InstanceHeartbeat[]): Set<AppKey> {
  const apps = new Set<AppKey>();
  if (prev.length === next.length) {
    let i = 0;
    while (i < prev.length && prev[i] === next[i]) i++;
    if (i === prev.length) return apps;
  }
  const before = new Set(prev);
  const after = new Set(next);
  for (const inst of next) if (!before.has(inst)) apps.add(appKey(inst.app, inst.version));
  for (const inst of prev) if (!after.has(inst)) apps.add(appKey(inst.app, inst.version));
  return apps;
}

function appsOf(instances: readonly InstanceHeartbeat[]): Set<AppKey> {
  const apps = new Set<AppKey>();
  for (const inst of instances) apps.add(appKey(inst.app, inst.version));
  return apps;
}

export class VisibleState {
  desired: ReadonlyMap<AppKey, DesiredApp> = new Map();
  /** The deadline of this store's own last save of each agent (clock ms). */
  readonly ownDeadline = new Map<string, number>();
  readonly agents = new CowMap<string, AgentRecord>();
  readonly instances = new CowMap<AppKey, readonly InstanceHeartbeat[]>();
  /** The crash values shown, as the mirror decoded them. */
  readonly visibleCrash = new Map<string, CrashValue>();
  readonly crashes = new CrashCountIndex();
  readonly starts = new CowMap<string, PendingStart>();
  readonly stops = new CowMap<string, PendingStop>();
  readonly freshness = new Map<FreshnessKind, FreshnessMarker>();

  private readonly agentStates = new Map<string, AgentState>();
  private readonly expiries = new DeadlineHeap<{ kind: ExpiryKind; id: string }>();
  private readonly deadlines: DeadlineTimer;
  private readonly listeners = new Set<(change: StoreChange) => void>();

  constructor(private readonly opts: VisibleStateOptions) {
    this.deadlines = new DeadlineTimer(opts.clock, () => this.settle());
  }

  /** An agent's record as reads see it, if present. */
  agent(agent: string): AgentRecord | undefined {
    return this.agentStates.get(agent)?.record;
  }

  snapshot(): StoreSnapshot {
    const freshness: StoreSnapshot['freshness'] = {};
    const actual = this.freshness.get('actual');
    const desired = this.freshness.get('desired');
    if (actual) freshness.actual = actual;
    if (desired) freshness.desired = desired;
    return {
      now: this.opts.clock.now(),
      desired: this.desired,
      instances: this.instances.view(),
      crashCounts: this.crashes.viewByApp(),
      starts: this.starts.view(),
      stops: this.stops.view(),
      freshness,
    };
  }

  // --- the TTL rule ---

  /** Until when an agent is present: this store's own deadline for its own writes, else the latest vouched. */
  private agentDeadline(agent: string, stored: AgentValue): number {
    const own = this.ownDeadline.get(agent);
    if (stored.writer === this.opts.writerId) return own ?? stored.vouchedUntil;
    return own === undefined ? stored.vouchedUntil : Math.max(own, stored.vouchedUntil);
  }

  refreshAgent(agent: string, out: StoreChange[]): void {
    const stored = this.opts.stored.agents.get(agent);
    const previous = this.agentStates.get(agent);
    const deadline = stored === undefined ? undefined : this.agentDeadline(agent, stored);
    if (stored !== undefined && deadline !== undefined && deadline > this.opts.clock.now()) {
      if (previous !== undefined && sameInstanceSet(previous.record.instances, stored.instances)) {
        // Keep the instances (and their stored order) as they were; renew the deadline only.
        stored.instances = previous.record.instances;
        if (previous.record.expiresAt !== deadline) {
          const record = { ...previous.record, expiresAt: deadline };
          previous.record = record;
          this.agents.set(agent, record);
          this.expiries.push({ kind: 'agent', id: agent }, deadline);
        }
        return;
      }
      const instances: readonly InstanceHeartbeat[] = stored.instances;
      // Most changes are a few states or restarts (a delta): only the apps they touch are regrouped.
      const touched = previous === undefined ? appsOf(instances) : appsTouched(previous.record.instances, instances);
      const apps = this.replaceAgentInstances(previous?.record.instances ?? [], instances, touched);
      const record: AgentRecord = { agent, instances, expiresAt: deadline };
      this.agentStates.set(agent, { record });
      this.agents.set(agent, record);
      this.expiries.push({ kind: 'agent', id: agent }, deadline);
      out.push({ kind: 'agent', agent, apps });
      return;
    }
    if (previous !== undefined) {
      const apps = this.replaceAgentInstances(previous.record.instances, [], appsOf(previous.record.instances));
      this.agentStates.delete(agent);
      this.agents.delete(agent);
      out.push({ kind: 'agent', agent, apps });
    }
    if (stored !== undefined) this.opts.deleteExpired([recordKey(this.opts.keys, agent), deltaKey(this.opts.keys, agent)]);
  }

  /**
   * One agent's instances of the `touched` apps go from `before` to `after` in the per-app lists.
   * A list holds each agent's instances together, in the agent's order, agents in the order they
   * first reported the app; the lists hold the agents' very instance objects, so the agent's old
   * ones are found by identity. Returns the apps whose instances changed.
   */
  private replaceAgentInstances(before: readonly InstanceHeartbeat[], after: readonly InstanceHeartbeat[], touched: ReadonlySet<AppKey>): AppKey[] {
    const affected: AppKey[] = [];
    if (touched.size === 0) return affected;
    const gone = new Set<InstanceHeartbeat>();
    for (const inst of before) if (touched.has(appKey(inst.app, inst.version))) gone.add(inst);
    const added = new Map<AppKey, InstanceHeartbeat[]>();
    for (const inst of after) {
      const key = appKey(inst.app, inst.version);
      if (!touched.has(key)) continue;
      const list = added.get(key);
      if (list) list.push(inst);
      else added.set(key, [inst]);
    }
    for (const key of touched) {
      const old = this.instances.get(key) ?? [];
      const kept: InstanceHeartbeat[] = [];
      let at = -1;
      for (const inst of old) {
        if (!gone.has(inst)) kept.push(inst);
        else if (at < 0) at = kept.length;
      }
      const add = added.get(key) ?? [];
      const next = at < 0 ? kept.concat(add) : [...kept.slice(0, at), ...add, ...kept.slice(at)];
      if (next.length === 0) {
        if (this.instances.delete(key)) affected.push(key);
        continue;
      }
      // Other objects, maybe equal ones (read again from etcd): the list takes them all the same.
      this.instances.set(key, next);
      if (!sameInstanceSet(old, next)) affected.push(key);
    }
    return affected;
  }

  refreshCrash(id: string, out: StoreChange[]): void {
    const stored = this.opts.stored.crashes.get(id);
    const shown = this.visibleCrash.get(id);
    if (stored !== undefined && stored.expiresAt > this.opts.clock.now()) {
      if (shown === stored) return;
      this.visibleCrash.set(id, stored);
      this.setCrash(id, stored.count);
      this.expiries.push({ kind: 'crash', id }, stored.expiresAt);
      out.push({ kind: 'crash', key: id, app: appKey(stored.count.app, stored.count.version) });
      return;
    }
    if (shown !== undefined) {
      this.visibleCrash.delete(id);
      this.deleteCrash(id);
      out.push({ kind: 'crash', key: id, app: crashApp(id) });
    }
    if (stored !== undefined) this.opts.deleteExpired([this.opts.keys.crashes + id]);
  }

  private setCrash(id: string, count: CrashCount): void {
    this.crashes.set(id, count);
  }

  private deleteCrash(id: string): void {
    this.crashes.delete(id);
  }

  refreshFresh(which: FreshnessKind, out: StoreChange[]): void {
    const stored = this.opts.stored.freshness.get(which);
    const shown = this.freshness.get(which);
    if (stored !== undefined && stored.expiresAt > this.opts.clock.now()) {
      if (shown === stored) return;
      this.freshness.set(which, stored);
      this.expiries.push({ kind: 'fresh', id: which }, stored.expiresAt);
      out.push({ kind: 'freshness', which });
      return;
    }
    if (shown !== undefined) {
      this.freshness.delete(which);
      out.push({ kind: 'freshness', which });
    }
    if (stored !== undefined) this.opts.deleteExpired([this.opts.keys.fresh + which]);
  }

  /** Drop every record whose deadline has passed (alive iff now < deadline), then re-arm. */
  settle(): void {
    const now = this.opts.clock.now();
    const out: StoreChange[] = [];
    for (let e = this.expiries.peek(); e !== undefined && e.due <= now; e = this.expiries.peek()) {
      this.expiries.pop();
      if (e.kind === 'agent') this.refreshAgent(e.id, out);
      else if (e.kind === 'crash') this.refreshCrash(e.id, out);
      else this.refreshFresh(e.id as FreshnessKind, out);
    }
    this.arm();
    this.emit(out);
  }

  /** One clock timer, at the earliest deadline, unless stopped. */
  arm(): void {
    this.deadlines.aim(this.opts.isStopped() ? undefined : this.expiries.peek()?.due);
  }

  disarm(): void {
    this.deadlines.cancel();
  }

  // --- change events ---

  onChange(listener: (change: StoreChange) => void): () => void {
    const wrapped = (change: StoreChange): void => listener(change);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  emit(changes: readonly StoreChange[]): void {
    for (const change of changes) {
      for (const listener of [...this.listeners]) {
        try {
          listener(change);
        } catch (err) {
          if (this.opts.onListenerError) this.opts.onListenerError(err, change);
          else
            queueMicrotask(() => {
              throw err;
            });
        }
      }
    }
  }
}
