/**
 * The etcd store: shared state for several daemons, read from a local cache kept by a watch. This
 * class implements the Store contract (arguments checked, expired records settled, then handed to
 * its parts) and offers a leader election and the decision audit; how the state is laid out in
 * etcd, why each agent has one record and a delta, and how writes and the watch work is in
 * README.md beside it.
 *
 * Its parts: requests.ts (every etcd request), mirror.ts (what etcd holds) and view.ts (that under
 * the TTL rule, as reads see it), watch.ts (what keeps the mirror current), writes.ts (what is put
 * and how), leases.ts, codec.ts, keys.ts, election.ts, audit.ts and dump.ts.
 */
import {
  type AgentHeartbeat,
  type AgentRecord,
  appKey,
  type AppKey,
  type AuditEntry,
  type AuditKeeper,
  checkArray,
  checkFreshnessKind,
  checkString,
  checkTtl,
  type Clock,
  type CrashCount,
  type DesiredApp,
  type FreshnessKind,
  type FreshnessMarker,
  type LeaderElectionRequest,
  type LeaderElector,
  type PendingStart,
  type PendingStop,
  type SaveHeartbeatsResult,
  type StageHealth,
  startKey,
  stopKey,
  type Store,
  type StoreChange,
  type StoreSnapshot,
} from '../../src/sdk/index.js';
import type { Etcd3 } from 'etcd3';
import { DecisionAudit } from './audit.js';
import { createEtcdClient, EtcdStoreError, type EtcdConnection } from './client.js';
import { dumpKeys } from './dump.js';
import { LeaderElection } from './election.js';
import { deltaKey, recordKey, storeKeys, type Keys } from './keys.js';
import { LeasePool } from './leases.js';
import { Mirror } from './mirror.js';
import { EtcdRequests, type EtcdWriteStats, type StoreLogger } from './requests.js';
import type { VisibleState } from './view.js';
import { StateWatch } from './watch.js';
import { StoreWriter } from './writes.js';

export { recordPeriodMs } from './leases.js';
export type { EtcdWriteStats, StoreLogger } from './requests.js';

export interface EtcdStoreConfig extends EtcdConnection {
  /** Key prefix without a trailing slash, e.g. "/hmgate". */
  prefix: string;
  /** The largest request etcd accepts (its --max-request-bytes); default etcd's default, 1.5 MiB. */
  maxRequestBytes?: number;
}

/** etcd's default --max-request-bytes. */
export const ETCD_MAX_REQUEST_BYTES = 1_572_864;

export interface EtcdStoreOptions {
  logger?: StoreLogger;
  /**
   * Where errors thrown by change listeners go; they never fail a write nor starve other
   * listeners. Default: rethrown on a fresh microtask.
   */
  onListenerError?: (err: unknown, change: StoreChange) => void;
  /** Real time (ms), on which etcd runs leases; tests move it to bring a record's lease near its end. */
  realNow?: () => number;
}

/** A leader election under the store's prefix; `name` tells elections apart (default "leader"). */
export interface EtcdLeaderElectionRequest extends LeaderElectionRequest {
  name?: string;
}

export class EtcdStore implements Store, LeaderElector, AuditKeeper {
  readonly keys: Keys;
  /** Identifies this store instance's agent writes, so it keeps its own exact deadlines for them. */
  readonly writerId = Math.random().toString(36).slice(2, 10);
  /** Counts of what this store sent to etcd. */
  readonly stats: EtcdWriteStats;

  private readonly requests: EtcdRequests;
  private readonly mirror: Mirror;
  private readonly view: VisibleState;
  private readonly watch: StateWatch;
  private readonly writer: StoreWriter;
  private readonly audit: DecisionAudit;
  private started = false;

  constructor(
    private readonly config: EtcdStoreConfig,
    clock: Clock,
    options: EtcdStoreOptions = {},
  ) {
    const logger = options.logger;
    this.keys = storeKeys(config.prefix);
    this.requests = new EtcdRequests(config, logger);
    this.stats = this.requests.stats;
    const realNow = options.realNow ?? Date.now;
    const leases = new LeasePool(async (ttlSeconds) => {
      const res = await this.requests.call('granting a lease', (c) => c.leaseClient.leaseGrant({ TTL: ttlSeconds }));
      this.stats.leaseGrants++;
      return res.ID;
    }, realNow);
    this.mirror = new Mirror({ keys: this.keys, writerId: this.writerId, clock, requests: this.requests, logger, onListenerError: options.onListenerError });
    this.view = this.mirror.view;
    this.watch = new StateWatch(this.keys.root, this.mirror, this.requests, logger);
    this.writer = new StoreWriter({
      keys: this.keys,
      writerId: this.writerId,
      clock,
      realNow,
      requests: this.requests,
      mirror: this.mirror,
      leases,
      maxRequestBytes: config.maxRequestBytes ?? ETCD_MAX_REQUEST_BYTES,
      logger,
    });
    this.audit = new DecisionAudit(this.keys.root, this.writerId, this.writer, this.requests);
  }

  /** The etcd client (after start), e.g. for leader election on the same connection. */
  get client(): Etcd3 {
    return this.requests.client;
  }

  /** Times the watch broke (each followed by a read of the whole state). */
  get watchBreaks(): number {
    return this.watch.breaks;
  }

  /** A leader election under this store's prefix (`<prefix>/election/<name>/`), on its client. */
  leaderElection(request: EtcdLeaderElectionRequest): LeaderElection {
    return new LeaderElection(this.client.namespace(this.keys.root), {
      name: request.name ?? 'leader',
      ttlSeconds: request.ttlSeconds,
      id: request.id,
      logger: request.logger,
    });
  }

  // --- lifecycle ---

  /**
   * Reads the state and starts the watch. An etcd that cannot be reached does not stop the start:
   * the store reports itself unhealthy (ETCD_UNREACHABLE), refuses writes, and keeps trying in the
   * background, so the daemon serves its API and joins the election once etcd answers. Refused
   * credentials or a refused read still fail the start: trying again would not help.
   */
  async start(): Promise<void> {
    this.requests.stopped = false;
    if (!this.started) {
      this.requests.etcd ??= createEtcdClient(this.config);
      try {
        await this.watch.resync();
      } catch (err) {
        if (err instanceof EtcdStoreError && err.kind === 'unreachable') {
          this.watch.startWithout(err);
        } else {
          this.requests.etcd.close();
          this.requests.etcd = undefined;
          throw err;
        }
      }
      this.started = true;
    }
    this.view.settle();
  }

  async stop(): Promise<void> {
    this.requests.stopped = true;
    this.started = false;
    this.view.disarm();
    const watcher = this.watch.stop();
    const settleWithin = (ps: Promise<unknown>[], ms: number) => Promise.race([Promise.allSettled(ps), new Promise((r) => setTimeout(r, ms).unref())]);
    await settleWithin([...this.mirror.inflight, ...(watcher ? [watcher.cancel()] : [])], 1_000);
    this.requests.etcd?.close();
    this.requests.etcd = undefined;
  }

  /**
   * Unhealthy while a request to etcd fails (a write, or reading the state again) or the watch
   * keeps breaking; a watch that broke and came back on the next read is no problem of etcd's.
   */
  health(): StageHealth {
    const error = this.requests.lastError ?? this.watch.problem() ?? (this.requests.everSynced ? null : `not in sync with ${this.requests.where}`);
    return { healthy: error === null, last_error: error };
  }

  // --- desired ---

  async replaceDesired(apps: Iterable<DesiredApp>): Promise<void> {
    const next = new Map<AppKey, DesiredApp>();
    for (const app of apps) {
      checkString('replaceDesired', 'guid', app?.guid);
      checkString('replaceDesired', 'version', app.version);
      next.set(appKey(app.guid, app.version), { ...app });
    }
    this.view.settle();
    await this.writer.replaceDesired(next);
  }

  async getDesired(): Promise<ReadonlyMap<AppKey, DesiredApp>> {
    this.view.settle();
    return this.view.desired;
  }

  // --- agents ---

  async saveHeartbeats(batch: readonly AgentHeartbeat[], ttlMs: number): Promise<SaveHeartbeatsResult> {
    checkTtl('saveHeartbeats', ttlMs);
    checkArray('saveHeartbeats', 'batch', batch);
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
    this.view.settle();
    return this.writer.saveAgents(latest, ttlMs);
  }

  recordKey(agent: string): string {
    return recordKey(this.keys, agent);
  }

  deltaKey(agent: string): string {
    return deltaKey(this.keys, agent);
  }

  async removeAgent(agent: string): Promise<void> {
    this.view.settle();
    await this.writer.removeAgent(agent);
  }

  async getAgents(): Promise<ReadonlyMap<string, AgentRecord>> {
    this.view.settle();
    return this.view.agents.view();
  }

  // --- crash counts ---

  async putCrashCounts(counts: readonly CrashCount[], ttlMs: number): Promise<void> {
    checkTtl('putCrashCounts', ttlMs);
    checkArray('putCrashCounts', 'counts', counts);
    for (const c of counts) {
      checkString('putCrashCounts', 'app', c?.app);
      checkString('putCrashCounts', 'version', c.version);
    }
    this.view.settle();
    await this.writer.putCrashCounts(counts, ttlMs);
  }

  async deleteCrashCounts(keys: readonly string[]): Promise<void> {
    checkArray('deleteCrashCounts', 'keys', keys);
    this.view.settle();
    await this.writer.deleteInChunks(
      keys.map((k) => this.keys.crashes + k),
      'deleting crash counts',
    );
  }

  async getCrashCounts(): Promise<ReadonlyMap<string, CrashCount>> {
    this.view.settle();
    return this.view.crashes.view();
  }

  // --- pending starts and stops ---

  async putPendingStarts(messages: readonly PendingStart[]): Promise<void> {
    checkArray('putPendingStarts', 'messages', messages);
    for (const m of messages) checkString('putPendingStarts', 'app', m?.app);
    this.view.settle();
    await this.writer.putMessages(
      'start',
      messages.map((m) => ({ id: startKey(m), message: m })),
      this.keys.starts,
      'saving pending starts',
    );
  }

  async deletePendingStarts(keys: readonly string[]): Promise<void> {
    checkArray('deletePendingStarts', 'keys', keys);
    this.view.settle();
    await this.writer.deleteInChunks(
      keys.map((k) => this.keys.starts + k),
      'deleting pending starts',
    );
  }

  async getPendingStarts(): Promise<ReadonlyMap<string, PendingStart>> {
    this.view.settle();
    return this.view.starts.view();
  }

  async putPendingStops(messages: readonly PendingStop[]): Promise<void> {
    checkArray('putPendingStops', 'messages', messages);
    for (const m of messages) checkString('putPendingStops', 'instance', m?.instance);
    this.view.settle();
    await this.writer.putMessages(
      'stop',
      messages.map((m) => ({ id: stopKey(m), message: m })),
      this.keys.stops,
      'saving pending stops',
    );
  }

  async deletePendingStops(keys: readonly string[]): Promise<void> {
    checkArray('deletePendingStops', 'keys', keys);
    this.view.settle();
    await this.writer.deleteInChunks(
      keys.map((k) => this.keys.stops + k),
      'deleting pending stops',
    );
  }

  async getPendingStops(): Promise<ReadonlyMap<string, PendingStop>> {
    this.view.settle();
    return this.view.stops.view();
  }

  // --- freshness ---

  async bumpFreshness(which: FreshnessKind, ttlMs: number): Promise<void> {
    checkFreshnessKind('bumpFreshness', which);
    checkTtl('bumpFreshness', ttlMs);
    // Settling first drops an expired marker, so a bump after a lapse starts a new streak.
    this.view.settle();
    await this.writer.bumpFreshness(which, ttlMs);
  }

  async revokeFreshness(which: FreshnessKind): Promise<void> {
    checkFreshnessKind('revokeFreshness', which);
    this.view.settle();
    await this.writer.deleteInChunks([this.keys.fresh + which], `revoking ${which} freshness`);
  }

  async getFreshness(which: FreshnessKind): Promise<FreshnessMarker | undefined> {
    checkFreshnessKind('getFreshness', which);
    this.view.settle();
    return this.view.freshness.get(which);
  }

  // --- reads of everything ---

  async snapshot(): Promise<StoreSnapshot> {
    this.view.settle();
    return this.view.snapshot();
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    return this.view.onChange(listener);
  }

  /** Every key under the prefix as etcd holds it now (see dump.ts); read from etcd, not from the cache. */
  async dumpRaw(): Promise<string[]> {
    return dumpKeys(this.requests, this.keys);
  }

  // --- the decision audit, kept beside the state (audit.ts) ---

  appendAudit(records: readonly AuditEntry[]): Promise<void> {
    return this.audit.appendAudit(records);
  }

  /** The audit records kept in etcd, oldest first (at most `limit`, the newest ones). */
  readAudit(limit: number): Promise<unknown[]> {
    return this.audit.readAudit(limit);
  }
}

/** Every key of the store's prefix as `key  value  (lease <id> ttl <n>s)` lines, for `hmgate dump --raw`. */
export function dumpRaw(store: EtcdStore): Promise<string[]> {
  return store.dumpRaw();
}
