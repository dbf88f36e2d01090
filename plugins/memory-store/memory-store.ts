/**
 * The in-memory store for a single daemon. Published collections are copy-on-write and records are
 * copied on the way in and never changed in place, so a snapshot costs a handful of references and
 * stays a consistent view while later writes go to fresh copies. (Records are not frozen: reading
 * frozen objects is many times slower, and the analyzer reads every instance.)
 */
import {
  type AgentHeartbeat,
  type AgentRecord,
  appKey,
  type AppKey,
  checkArray,
  checkFreshnessKind,
  checkString,
  checkTtl,
  type Clock,
  CowMap,
  crashApp,
  type CrashCount,
  crashKey,
  DeadlineHeap,
  DeadlineTimer,
  type DesiredApp,
  type FreshnessKind,
  type FreshnessMarker,
  groupByApp,
  type InstanceHeartbeat,
  keptInstances,
  type PendingStart,
  type PendingStop,
  sameInstanceSet,
  type SaveHeartbeatsResult,
  startKey,
  stopKey,
  type Store,
  type StoreChange,
  type StoreSnapshot,
  CrashCountIndex,
} from '../../src/sdk/index.js';

export interface MemoryStoreOptions {
  /**
   * Where errors thrown by change listeners go. A listener's bug must not undo or fail a write that
   * already happened, nor starve the other listeners. Default: rethrown on a fresh microtask.
   */
  onListenerError?: (err: unknown, change: StoreChange) => void;
}

type ExpiryTarget = { kind: 'agent'; key: string } | { kind: 'crash'; key: string } | { kind: 'freshness'; key: FreshnessKind };

interface AgentState {
  record: AgentRecord;
  byApp: Map<AppKey, readonly InstanceHeartbeat[]>;
}

export class MemoryStore implements Store {
  private desired: ReadonlyMap<AppKey, DesiredApp> = new Map();

  private readonly agentStates = new Map<string, AgentState>();
  private readonly agents = new CowMap<string, AgentRecord>();
  /** Per app, per agent: the source of the published per-app instance lists. */
  private readonly instancesByAgent = new Map<AppKey, Map<string, readonly InstanceHeartbeat[]>>();
  private readonly instances = new CowMap<AppKey, readonly InstanceHeartbeat[]>();

  private readonly crashExpiresAt = new Map<string, number>();
  private readonly crashes = new CrashCountIndex();

  private readonly starts = new CowMap<string, PendingStart>();
  private readonly stops = new CowMap<string, PendingStop>();
  private readonly freshness = new Map<FreshnessKind, FreshnessMarker>();

  private readonly expiries = new DeadlineHeap<ExpiryTarget>();
  /**
   * One clock timer for the earliest deadline rather than one per record: thousands of agents
   * renew every heartbeat, and the queue also lets every call drop what is already overdue, so a
   * record is gone exactly at its deadline even before a late timer fires.
   */
  private readonly deadlines: DeadlineTimer;
  private stopped = false;

  private readonly listeners = new Set<(change: StoreChange) => void>();

  constructor(
    private readonly clock: Clock,
    private readonly options: MemoryStoreOptions = {},
  ) {
    this.deadlines = new DeadlineTimer(clock, () => this.settle());
  }

  start(): void {
    this.stopped = false;
    this.settle();
  }

  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  // --- desired ---

  async replaceDesired(apps: Iterable<DesiredApp>): Promise<void> {
    const next = new Map<AppKey, DesiredApp>();
    for (const app of apps) {
      checkString('replaceDesired', 'guid', app?.guid);
      checkString('replaceDesired', 'version', app.version);
      next.set(appKey(app.guid, app.version), { ...app });
    }
    this.settle();
    this.desired = next;
    this.emit([{ kind: 'desired' }]);
  }

  async getDesired(): Promise<ReadonlyMap<AppKey, DesiredApp>> {
    this.settle();
    return this.desired;
  }

  // --- agents and their instances ---

  async saveHeartbeats(batch: readonly AgentHeartbeat[], ttlMs: number): Promise<SaveHeartbeatsResult> {
    checkTtl('saveHeartbeats', ttlMs);
    checkArray('saveHeartbeats', 'batch', batch);
    // Last heartbeat of an agent in the batch wins, as if they were saved one after another.
    const latest = new Map<string, AgentHeartbeat>();
    for (const hb of batch) {
      checkString('saveHeartbeats', 'agent', hb?.agent);
      checkArray('saveHeartbeats', `instances of agent ${hb.agent}`, hb.instances);
      for (const inst of hb.instances) {
        checkString('saveHeartbeats', `app of an instance of agent ${hb.agent}`, inst?.app);
        checkString('saveHeartbeats', `version of an instance of agent ${hb.agent}`, inst.version);
      }
      latest.delete(hb.agent);
      latest.set(hb.agent, hb);
    }

    this.settle();
    const expiresAt = this.clock.now() + ttlMs;
    const changed: string[] = [];
    const changes: StoreChange[] = [];
    for (const hb of latest.values()) {
      const previous = this.agentStates.get(hb.agent);
      if (previous !== undefined && sameInstanceSet(previous.record.instances, hb.instances)) {
        // Only the presence is renewed; the instances (and their stored order) stay as they were.
        const record = { ...previous.record, expiresAt };
        previous.record = record;
        this.agents.set(hb.agent, record);
      } else {
        // An agent that was absent counts as changed even with no instances: its record is new.
        // Copied (not frozen: reading fields of frozen objects is many times slower on the
        // analyzer's hot path) unless the heartbeat source made them; never changed in place.
        const instances = keptInstances(hb.instances);
        const record: AgentRecord = { agent: hb.agent, instances, expiresAt };
        const byApp = new Map<AppKey, readonly InstanceHeartbeat[]>();
        for (const [key, list] of groupByApp(instances)) byApp.set(key, list);
        const apps = this.replaceAgentInstances(hb.agent, previous?.byApp, byApp);
        this.agentStates.set(hb.agent, { record, byApp });
        this.agents.set(hb.agent, record);
        changed.push(hb.agent);
        changes.push({ kind: 'agent', agent: hb.agent, apps });
      }
      this.expiries.push({ kind: 'agent', key: hb.agent }, expiresAt);
    }
    this.arm();
    this.emit(changes);
    return { changed };
  }

  async removeAgent(agent: string): Promise<void> {
    this.settle();
    const change = this.dropAgent(agent);
    if (change) this.emit([change]);
  }

  async getAgents(): Promise<ReadonlyMap<string, AgentRecord>> {
    this.settle();
    return this.agents.view();
  }

  // --- crash counts ---

  async putCrashCounts(counts: readonly CrashCount[], ttlMs: number): Promise<void> {
    checkTtl('putCrashCounts', ttlMs);
    checkArray('putCrashCounts', 'counts', counts);
    for (const c of counts) {
      checkString('putCrashCounts', 'app', c?.app);
      checkString('putCrashCounts', 'version', c.version);
    }
    this.settle();
    const expiresAt = this.clock.now() + ttlMs;
    const changes: StoreChange[] = [];
    for (const c of counts) {
      const key = crashKey(c);
      this.setCrash(key, { ...c });
      this.crashExpiresAt.set(key, expiresAt);
      this.expiries.push({ kind: 'crash', key }, expiresAt);
      changes.push({ kind: 'crash', key, app: appKey(c.app, c.version) });
    }
    this.arm();
    this.emit(changes);
  }

  async deleteCrashCounts(keys: readonly string[]): Promise<void> {
    checkArray('deleteCrashCounts', 'keys', keys);
    this.settle();
    const changes: StoreChange[] = [];
    for (const key of keys) {
      if (this.deleteCrash(key)) changes.push({ kind: 'crash', key, app: crashApp(key) });
    }
    this.emit(changes);
  }

  async getCrashCounts(): Promise<ReadonlyMap<string, CrashCount>> {
    this.settle();
    return this.crashes.view();
  }

  // --- pending starts and stops (no TTL: the sender removes them) ---

  async putPendingStarts(messages: readonly PendingStart[]): Promise<void> {
    checkArray('putPendingStarts', 'messages', messages);
    for (const m of messages) checkString('putPendingStarts', 'app', m?.app);
    this.settle();
    const changes: StoreChange[] = [];
    for (const m of messages) {
      const key = startKey(m);
      this.starts.set(key, { ...m });
      changes.push({ kind: 'start', key, app: appKey(m.app, m.version) });
    }
    this.emit(changes);
  }

  async deletePendingStarts(keys: readonly string[]): Promise<void> {
    checkArray('deletePendingStarts', 'keys', keys);
    this.settle();
    const changes: StoreChange[] = [];
    for (const key of keys) {
      const old = this.starts.get(key);
      if (old && this.starts.delete(key)) changes.push({ kind: 'start', key, app: appKey(old.app, old.version) });
    }
    this.emit(changes);
  }

  async getPendingStarts(): Promise<ReadonlyMap<string, PendingStart>> {
    this.settle();
    return this.starts.view();
  }

  async putPendingStops(messages: readonly PendingStop[]): Promise<void> {
    checkArray('putPendingStops', 'messages', messages);
    for (const m of messages) checkString('putPendingStops', 'instance', m?.instance);
    this.settle();
    const changes: StoreChange[] = [];
    for (const m of messages) {
      const key = stopKey(m);
      this.stops.set(key, { ...m });
      changes.push({ kind: 'stop', key, app: appKey(m.app, m.version) });
    }
    this.emit(changes);
  }

  async deletePendingStops(keys: readonly string[]): Promise<void> {
    checkArray('deletePendingStops', 'keys', keys);
    this.settle();
    const changes: StoreChange[] = [];
    for (const key of keys) {
      const old = this.stops.get(key);
      if (old && this.stops.delete(key)) changes.push({ kind: 'stop', key, app: appKey(old.app, old.version) });
    }
    this.emit(changes);
  }

  async getPendingStops(): Promise<ReadonlyMap<string, PendingStop>> {
    this.settle();
    return this.stops.view();
  }

  // --- freshness ---

  async bumpFreshness(which: FreshnessKind, ttlMs: number): Promise<void> {
    checkFreshnessKind('bumpFreshness', which);
    checkTtl('bumpFreshness', ttlMs);
    // Settling first drops an expired marker, so a bump after a lapse starts a new streak.
    this.settle();
    const now = this.clock.now();
    const current = this.freshness.get(which);
    const marker = Object.freeze({ timestamp: current?.timestamp ?? now, expiresAt: now + ttlMs });
    this.freshness.set(which, marker);
    this.expiries.push({ kind: 'freshness', key: which }, marker.expiresAt);
    this.arm();
    this.emit([{ kind: 'freshness', which }]);
  }

  async revokeFreshness(which: FreshnessKind): Promise<void> {
    checkFreshnessKind('revokeFreshness', which);
    this.settle();
    if (this.freshness.delete(which)) this.emit([{ kind: 'freshness', which }]);
  }

  async getFreshness(which: FreshnessKind): Promise<FreshnessMarker | undefined> {
    checkFreshnessKind('getFreshness', which);
    this.settle();
    return this.freshness.get(which);
  }

  // --- reads of everything ---

  async snapshot(): Promise<StoreSnapshot> {
    this.settle();
    const freshness: StoreSnapshot['freshness'] = {};
    const actual = this.freshness.get('actual');
    const desired = this.freshness.get('desired');
    if (actual) freshness.actual = actual;
    if (desired) freshness.desired = desired;
    return {
      now: this.clock.now(),
      desired: this.desired,
      instances: this.instances.view(),
      crashCounts: this.crashes.viewByApp(),
      starts: this.starts.view(),
      stops: this.stops.view(),
      freshness,
    };
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    // Wrapped so the same function subscribed twice gets two independent subscriptions.
    const wrapped = (change: StoreChange): void => listener(change);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  // --- internals ---

  /**
   * Swap an agent's per-app instance lists and rebuild only the apps whose lists differ. Returns
   * those apps.
   */
  private replaceAgentInstances(
    agent: string,
    before: ReadonlyMap<AppKey, readonly InstanceHeartbeat[]> | undefined,
    after: ReadonlyMap<AppKey, readonly InstanceHeartbeat[]>,
  ): AppKey[] {
    const affected: AppKey[] = [];
    const keys = new Set<AppKey>([...(before?.keys() ?? []), ...after.keys()]);
    for (const key of keys) {
      const oldList = before?.get(key);
      const newList = after.get(key);
      if (oldList && newList && sameInstanceSet(oldList, newList)) continue;
      let perAgent = this.instancesByAgent.get(key);
      if (newList) {
        if (!perAgent) this.instancesByAgent.set(key, (perAgent = new Map()));
        perAgent.set(agent, newList);
      } else {
        perAgent?.delete(agent);
      }
      this.publishAppInstances(key);
      affected.push(key);
    }
    return affected;
  }

  private publishAppInstances(key: AppKey): void {
    const perAgent = this.instancesByAgent.get(key);
    if (!perAgent || perAgent.size === 0) {
      this.instancesByAgent.delete(key);
      this.instances.delete(key);
      return;
    }
    const all: InstanceHeartbeat[] = [];
    for (const list of perAgent.values()) all.push(...list);
    this.instances.set(key, all);
  }

  private dropAgent(agent: string): StoreChange | undefined {
    const state = this.agentStates.get(agent);
    if (!state) return undefined;
    const apps = this.replaceAgentInstances(agent, state.byApp, new Map());
    this.agentStates.delete(agent);
    this.agents.delete(agent);
    return { kind: 'agent', agent, apps };
  }

  private setCrash(key: string, count: CrashCount): void {
    this.crashes.set(key, count);
  }

  private deleteCrash(key: string): boolean {
    if (this.crashes.delete(key) === undefined) return false;
    this.crashExpiresAt.delete(key);
    return true;
  }

  /** Drop every record whose deadline has passed (alive iff now < expiresAt), then re-arm. */
  private settle(): void {
    const now = this.clock.now();
    const changes: StoreChange[] = [];
    for (let e = this.expiries.peek(); e !== undefined && e.due <= now; e = this.expiries.peek()) {
      this.expiries.pop();
      // An entry whose record was renewed or removed since is stale; the deadline must match.
      switch (e.kind) {
        case 'agent': {
          if (this.agentStates.get(e.key)?.record.expiresAt !== e.due) break;
          const change = this.dropAgent(e.key);
          if (change) changes.push(change);
          break;
        }
        case 'crash':
          if (this.crashExpiresAt.get(e.key) !== e.due) break;
          this.deleteCrash(e.key);
          changes.push({ kind: 'crash', key: e.key, app: crashApp(e.key) });
          break;
        case 'freshness':
          if (this.freshness.get(e.key)?.expiresAt !== e.due) break;
          this.freshness.delete(e.key);
          changes.push({ kind: 'freshness', which: e.key });
          break;
      }
    }
    this.arm();
    this.emit(changes);
  }

  /** One clock timer, at the earliest deadline, unless stopped. */
  private arm(): void {
    this.deadlines.aim(this.stopped ? undefined : this.expiries.peek()?.due);
  }

  private disarm(): void {
    this.deadlines.cancel();
  }

  private emit(changes: readonly StoreChange[]): void {
    for (const change of changes) {
      for (const listener of [...this.listeners]) {
        try {
          listener(change);
        } catch (err) {
          this.reportListenerError(err, change);
        }
      }
    }
  }

  private reportListenerError(err: unknown, change: StoreChange): void {
    if (this.options.onListenerError) {
      this.options.onListenerError(err, change);
      return;
    }
    queueMicrotask(() => {
      throw err;
    });
  }
}
