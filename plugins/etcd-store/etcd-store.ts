/**
 * The etcd store: shared state for several daemons, read from a local cache.
 *
 * Layout under `<prefix>/` (values in codec.ts):
 *
 *   agents/<agent>      one record per agent: its instances (compact JSON), on a shared lease
 *   agents/<agent>/d    the agent's delta: only what changed since its record was written
 *                       (states, instances gone and added), on the record's lease ('%' and '/'
 *                       in <agent> are written %25 and %2F, so no agent's record is another's
 *                       delta)
 *   desired/<n>         the desired apps in a few chunks (an app's chunk is a hash of its key)
 *   desired/meta        {"chunks":n,"apps":count}; chunks and meta are replaced in ONE transaction
 *   crashes/<crashKey>  a crash count, on a shared lease of its TTL
 *   starts/<startKey>   a pending start (no lease: the sender removes it)
 *   stops/<stopKey>     a pending stop (no lease)
 *   fresh/actual|desired a freshness marker, on a shared lease of its TTL
 *
 * Reads. One range of the prefix at start (paged, at one revision) fills a mirror of these keys,
 * then a watch from that revision keeps it current; every get*, snapshot() and onChange is served
 * from it, so a cycle costs no etcd round trip. Writes are applied to the mirror only once etcd
 * has committed them, at their revision; the watch delivers the same change again and the mirror
 * skips any change not newer than what it holds for that key (a deleted key keeps its revision as
 * a tombstone until the watch has passed it), so an event fires once whether the write's answer
 * or the watch arrives first — and changes written by another daemon fire events the same way.
 * When the watch breaks (etcd restarted, a compaction, a dead connection) the store ranges the
 * prefix again, emits events for whatever differs, and watches from the new revision.
 *
 * Time. Deadlines are computed on the injected clock and kept in the records, and the TTL rule is
 * applied on that clock: a record whose deadline has passed is absent for every read and fires its
 * change from a clock timer (as the memory store does), and the store then deletes its key —
 * unless it was rewritten meanwhile (compare-and-delete on its revision), like HM9000 deleting the
 * heartbeats of absent DEAs on read. etcd's leases (whole seconds, rounded up) are only the
 * backstop that removes keys of a store that is gone.
 *
 * Agent presence without a write per heartbeat. An agent's keys say until when their writer vouches
 * for it (`x` = save time + 3 × ttl). A heartbeat whose instance set is unchanged writes nothing
 * while the stored `x` still covers the new deadline (save time + ttl); only when it no longer
 * does — once per 2 × ttl, about every sixth heartbeat with HM9000's timings — is a new `x`
 * written. The writing store keeps the exact deadline of its own saves locally (now + ttl, as the
 * memory store does) and deletes the keys when it passes; another daemon, which did not receive
 * those heartbeats, counts the agent present until the writer deletes them or until `x`, whichever
 * comes first. Leases are shared: one per (lifetime, time bucket), see leases.ts, so 10 000 agents
 * hold about nine leases, not 10 000, and no lease is ever kept alive.
 *
 * Records and deltas. A record takes ~50 to ~140 bytes per instance (13.8 KB for the 100 instances
 * of bench/etcd.ts); rewriting it because one instance crashed would make state changes most of
 * etcd's load, and so would rewriting it because one instance restarted under a new guid (1 % of
 * the instances every heartbeat in HM9000's scale measurements: nearly every agent, every time).
 * So the writer puts the agent's delta instead: the rows of states (state, state timestamp, index)
 * changed since the record (each ~25 bytes), the positions of instances gone, the instances added
 * (~100 bytes each), and the new `x`, naming the record's revision it applies to and put on the
 * record's lease, so both go at once when it expires. Readers (the mirror, another daemon's,
 * `dump --raw`) apply a delta only to the record revision it names: a delta left from an older
 * record is ignored; the writer applies its own without reading it back. The record is written
 * again, in one transaction with the delete of its delta, when the delta would exceed an eighth of
 * the record (every delta put carries all changes since the record); when a guid is not unique
 * (positions would be ambiguous); when the record was written by another store (only the writer
 * knows its lease); and periodically, once per 8 × ttl, each agent at its own phase of that period so
 * records written together (all of them, at start) are rewritten evenly over it, not in one save.
 * A record's lease lives 12 × ttl, so its deltas can vouch 3 × ttl ahead until it is rewritten; a
 * delta is never put on a lease that might end before what it vouches for.
 *
 * Per heartbeat of an unchanged agent that is 0 etcd requests, and one small delta put (in a
 * transaction of up to 128 keys with the rest of the batch) every 2 × ttl; per changed heartbeat
 * one delta put; one record put per eighth of a record's worth of changes and every 8 × ttl.
 * Keeping each agent's own lease alive instead would cost no puts but a KeepAlive per agent per ttl/3 and
 * 10 000 leases; putting every heartbeat (HM9000's presence keys) would cost one put per agent per
 * heartbeat.
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
  type InstanceHeartbeat,
  keptInstances,
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
import type { Etcd3, ICompare, IKeyValue, IRequestOp, ITxnResponse, IWatchResponse, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { LeaderElection } from './election.js';
import { createEtcdClient, describeEndpoints, etcdError, EtcdStoreError, type EtcdConnection } from './client.js';
import {
  applyDelta,
  decodeAgent,
  decodeAgentDelta,
  decodeCrash,
  decodeDesiredChunk,
  decodeDesiredMeta,
  decodeFreshness,
  decodeMessage,
  diffInstances,
  encodeAgent,
  encodeAgentDelta,
  encodeCrash,
  encodeDesiredApp,
  encodeDesiredMeta,
  encodeFreshness,
  encodeMessage,
  joinDesiredChunk,
  sameInstanceSet,
  type AgentDelta,
  type AgentValue,
  type CrashValue,
  type DesiredMeta,
} from './codec.js';
import { LeasePool } from './leases.js';

/** An agent write vouches for its presence this many ttls beyond the saved deadline. */
const VOUCH_EXTRA_TTLS = 2;
/** A record is written again once per this many ttls (its deltas folded in), each agent at its own phase. */
const RECORD_PERIOD_TTLS = 8;
/** A record's lease: its period, the 3 ttls its last delta vouches ahead, and one ttl to spare. */
const RECORD_LEASE_TTLS = RECORD_PERIOD_TTLS + 1 + VOUCH_EXTRA_TTLS + 1;
/** A delta larger than this share of its record is folded into a new record. */
const DELTA_MAX_SHARE = 1 / 8;
const DELTA_SUFFIX = '/d';
/** etcd's default --max-txn-ops. */
const MAX_TXN_OPS = 128;
/** Keep each transaction well under etcd's default --max-request-bytes (1.5 MiB). */
const MAX_TXN_BYTES = 1_000_000;
/** Desired chunks aim at this size; their number is a power of two, changed only when far off. */
const DESIRED_CHUNK_BYTES = 64 * 1024;
const MAX_DESIRED_CHUNKS = 64;
/** Keys per page of the initial range. */
const RANGE_PAGE = 500;
/** Tombstones are pruned once there are this many (only those the watch has passed). */
const TOMBSTONE_PRUNE_AT = 1_000;
const RESYNC_BACKOFF_MIN_MS = 100;
/** The watch breaking this many times without coming up in between is reported. */
const WATCH_BREAKS_REPORTED = 3;
const RESYNC_BACKOFF_MAX_MS = 5_000;

export interface EtcdStoreConfig extends EtcdConnection {
  /** Key prefix without a trailing slash, e.g. "/hmgate". */
  prefix: string;
  /** The largest request etcd accepts (its --max-request-bytes); default etcd's default, 1.5 MiB. */
  maxRequestBytes?: number;
}

/** etcd's default --max-request-bytes. */
export const ETCD_MAX_REQUEST_BYTES = 1_572_864;
/** Room left in a request for what surrounds the keys and values put (transaction, lease ids, compares). */
const REQUEST_OVERHEAD_BYTES = 4_096;

export type StoreLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

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

/** Counts of what this store sent to etcd (for write-volume measurements and metrics). */
export interface EtcdWriteStats {
  txns: number;
  puts: number;
  /** Bytes of the keys and values put. */
  putBytes: number;
  /** Of the puts: agent records, and agent deltas. */
  recordPuts: number;
  deltaPuts: number;
  /** Compare-and-deletes of expired records sent. */
  expiredDeletes: number;
  deletes: number;
  ranges: number;
  leaseGrants: number;
  /** Agent writes not sent because one put would be larger than etcd accepts in a request. */
  refusedRecords: number;
}

type ExpiryKind = 'agent' | 'crash' | 'fresh';
/** The end of the key range of everything that starts with `prefix`. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** FNV-1a: which desired chunk an app goes to. */
function chunkOf(key: string, chunks: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % chunks;
}

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

interface WriteOp {
  key: string;
  /** Undefined deletes the key. */
  value?: string;
  lease?: string;
  /** What `value` decodes to, for this store's own agent writes: applied without parsing it again. */
  decoded?: AgentValue | AgentDelta;
}

interface Batch {
  changes: StoreChange[];
  /** Desired keys changed since the last 'desired' event of this batch, at this revision. */
  desiredDirty: boolean;
  desiredRev?: number;
  /** Agents whose record or delta changed at `agentsRev`: refreshed once, after all keys of that revision. */
  agentsDirty: Set<string>;
  agentsRev?: number;
  /** A range: every key is applied before anything is refreshed (a record and its delta come at different revisions). */
  whole?: boolean;
}

function newBatch(whole = false): Batch {
  return { changes: [], desiredDirty: false, agentsDirty: new Set(), whole };
}

/** An agent's record as the mirror holds it: its key's revision and lease, and its size. */
interface RecordEntry {
  value: AgentValue;
  rev: number;
  lease: string;
  bytes: number;
}

/** One agent's write of a save: a new record, or a delta on the record the mirror holds. */
interface RecordWrite {
  kind: 'record';
  agent: string;
  instances: readonly InstanceHeartbeat[];
  vouchedUntil: number;
  /** Whether the agent's delta goes in the same transaction (it was of the old record). */
  clearDelta: boolean;
  /** Encoded when grouped. */
  text?: string;
}
type AgentWrite = RecordWrite | { kind: 'delta'; agent: string; text: string; lease: string; delta: AgentDelta; record: RecordWrite };

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

/** An agent's segment of its keys: '%' and '/' escaped, so `<agent>/d` is never another agent's record. */
function agentSegment(agent: string): string {
  return /[%/]/.test(agent) ? agent.replace(/%/g, '%25').replace(/\//g, '%2F') : agent;
}

function agentOfSegment(segment: string): string {
  return segment.includes('%') ? segment.replace(/%(25|2F)/g, (_, c: string) => (c === '25' ? '%' : '/')) : segment;
}

interface AgentState {
  record: AgentRecord;
}

interface Keys {
  root: string;
  agents: string;
  desired: string;
  crashes: string;
  starts: string;
  stops: string;
  fresh: string;
}

/** How long decision records are kept in etcd. */
const AUDIT_TTL_MS = 24 * 3_600_000;

export class EtcdStore implements Store {
  readonly keys: Keys;
  /** Identifies this store instance's agent writes, so it keeps its own exact deadlines for them. */
  readonly writerId = Math.random().toString(36).slice(2, 10);
  readonly stats: EtcdWriteStats = {
    txns: 0,
    puts: 0,
    putBytes: 0,
    recordPuts: 0,
    deltaPuts: 0,
    expiredDeletes: 0,
    deletes: 0,
    ranges: 0,
    leaseGrants: 0,
    refusedRecords: 0,
  };

  private etcd: Etcd3 | undefined;
  private readonly leases: LeasePool;
  private readonly realNow: () => number;
  private readonly logger: StoreLogger | undefined;
  private readonly where: string;

  // --- the mirror: what etcd holds under the prefix, at which revision ---
  private readonly revs = new Map<string, number>();
  private readonly tombs = new Map<string, number>();
  /** Texts of the small keys (all but agents), to skip writes that would change nothing. */
  private readonly texts = new Map<string, string>();
  /** Every change up to this revision under the prefix has been applied. */
  private watchRev = 0;

  /** Each agent's record and delta as etcd holds them, and the two merged (what reads see). */
  private readonly agentRecords = new Map<string, RecordEntry>();
  private readonly agentDeltas = new Map<string, { value: AgentDelta; rev: number }>();
  private readonly agentsRaw = new Map<string, AgentValue>();
  /** Leases this store was granted, by id → real time (ms) before which they do not expire. */
  private readonly ownLeases = new Map<string, number>();
  /** When (real ms) this store last wrote each agent's record, for the periodic rewrite. */
  private readonly recordWrittenAt = new Map<string, number>();
  /** The deadline of this store's own last save of each agent (clock ms). */
  private readonly ownDeadline = new Map<string, number>();
  private readonly desiredChunks = new Map<number, DesiredApp[]>();
  private desiredMeta: DesiredMeta | undefined;
  private readonly crashRaw = new Map<string, CrashValue>();
  private readonly freshRaw = new Map<FreshnessKind, FreshnessMarker>();

  // --- the visible state: the mirror under the TTL rule, as handed out ---
  private desired: ReadonlyMap<AppKey, DesiredApp> = new Map();
  private readonly agentStates = new Map<string, AgentState>();
  private readonly agents = new CowMap<string, AgentRecord>();
  private readonly instances = new CowMap<AppKey, readonly InstanceHeartbeat[]>();
  private readonly visibleCrash = new Map<string, CrashValue>();
  private readonly crashes = new CowMap<string, CrashCount>();
  private readonly crashesByKeyPerApp = new Map<AppKey, Map<string, CrashCount>>();
  private readonly crashesByApp = new CowMap<AppKey, readonly CrashCount[]>();
  private readonly starts = new CowMap<string, PendingStart>();
  private readonly stops = new CowMap<string, PendingStop>();
  private readonly freshness = new Map<FreshnessKind, FreshnessMarker>();

  private readonly expiries = new DeadlineHeap<{ kind: ExpiryKind; id: string }>();
  private readonly deadlines: DeadlineTimer;
  /** Compare-and-deletes of expired keys in flight, by first key → the revisions they delete. */
  private readonly expiredDeletes = new Map<string, string>();
  private readonly inflight = new Set<Promise<unknown>>();

  private watcher: Watcher | undefined;
  private resyncTimer: ReturnType<typeof setTimeout> | undefined;
  private resyncBackoff = RESYNC_BACKOFF_MIN_MS;
  private resyncing = false;
  private synced = false;
  private started = false;
  private stopped = false;
  private lastError: string | null = null;
  /** Why the last read of the whole state failed (at start or after a break); null once one succeeds. */
  private syncError: string | null = null;
  /** Whether the state was ever read: until then there is nothing to write against. */
  private everSynced = false;
  private watchError: string | null = null;
  /** Watch breaks since the watch last came up: a watch that keeps breaking is a problem, one break is not. */
  private breaksInARow = 0;
  /** Times the watch broke (each followed by a read of the whole state). */
  watchBreaks = 0;
  /** The most one put (key and value) may carry: what etcd accepts in a request, less some room. */
  private readonly maxPutBytes: number;
  /** Agents refused as too large, logged once until one of their writes succeeds. */
  private readonly refusedLogged = new Set<string>();

  private readonly listeners = new Set<(change: StoreChange) => void>();

  constructor(
    private readonly config: EtcdStoreConfig,
    private readonly clock: Clock,
    private readonly options: EtcdStoreOptions = {},
  ) {
    this.deadlines = new DeadlineTimer(clock, () => this.settle());
    const root = `${config.prefix.replace(/\/+$/, '')}/`;
    this.keys = {
      root,
      agents: `${root}agents/`,
      desired: `${root}desired/`,
      crashes: `${root}crashes/`,
      starts: `${root}starts/`,
      stops: `${root}stops/`,
      fresh: `${root}fresh/`,
    };
    this.logger = options.logger;
    this.where = `etcd at ${describeEndpoints(config.endpoints)}`;
    this.maxPutBytes = (config.maxRequestBytes ?? ETCD_MAX_REQUEST_BYTES) - REQUEST_OVERHEAD_BYTES;
    this.realNow = options.realNow ?? Date.now;
    this.leases = new LeasePool(async (ttlSeconds) => {
      const res = await this.call('granting a lease', (c) => c.leaseClient.leaseGrant({ TTL: ttlSeconds }));
      this.stats.leaseGrants++;
      return res.ID;
    }, this.realNow);
  }

  /** The etcd client (after start), e.g. for leader election on the same connection. */
  get client(): Etcd3 {
    if (!this.etcd) throw new Error('etcd store: not started');
    return this.etcd;
  }

  /** A leader election under this store's prefix (`<prefix>/election/<name>/`), on its client. */
  leaderElection(opts: { id: string; ttlSeconds: number; logger: Logger; name?: string }): LeaderElection {
    return new LeaderElection(this.client.namespace(this.keys.root), {
      name: opts.name ?? 'leader',
      ttlSeconds: opts.ttlSeconds,
      id: opts.id,
      logger: opts.logger,
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
    this.stopped = false;
    if (!this.started) {
      this.etcd ??= createEtcdClient(this.config);
      try {
        await this.resync();
      } catch (err) {
        if (err instanceof EtcdStoreError && err.kind === 'unreachable') {
          this.syncError = err.message;
          this.logger?.warn({ error: err.message }, `${err.message}; starting without it and trying again in the background`);
          this.scheduleResync();
        } else {
          this.etcd.close();
          this.etcd = undefined;
          throw err;
        }
      }
      this.started = true;
    }
    this.settle();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.started = false;
    this.synced = false;
    this.disarm();
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    const watcher = this.watcher;
    this.watcher = undefined;
    const settleWithin = (ps: Promise<unknown>[], ms: number) => Promise.race([Promise.allSettled(ps), new Promise((r) => setTimeout(r, ms).unref())]);
    await settleWithin([...this.inflight, ...(watcher ? [watcher.cancel()] : [])], 1_000);
    this.etcd?.close();
    this.etcd = undefined;
  }

  /**
   * Unhealthy while a request to etcd fails (a write, or reading the state again) or the watch
   * keeps breaking; a watch that broke and came back on the next read is no problem of etcd's.
   */
  health(): StageHealth {
    const error =
      this.lastError ??
      this.syncError ??
      (this.breaksInARow >= WATCH_BREAKS_REPORTED ? this.watchError : null) ??
      (this.everSynced ? null : `not in sync with ${this.where}`);
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
    this.settle();
    for (let attempt = 1; ; attempt++) {
      const ops = this.planDesired(next);
      if (ops.length === 0) {
        // Already what etcd holds: nothing to write, but the replace still happened.
        this.emit([{ kind: 'desired' }]);
        return;
      }
      const metaKey = `${this.keys.desired}meta`;
      const compare: ICompare = { key: Buffer.from(metaKey), target: 'Mod', result: 'Equal', mod_revision: this.revs.get(metaKey) ?? 0 };
      const res = await this.commit(ops, 'replacing the desired state', [compare]);
      if (res.succeeded) {
        this.applyResult(res, ops);
        return;
      }
      // Another daemon replaced it since this mirror last heard: read it, then plan again.
      if (attempt >= 3) throw new EtcdStoreError(`${this.where}: the desired state kept changing under this replace (3 attempts)`, 'rejected');
      await this.refreshRange(this.keys.desired, 'reading the desired state');
    }
  }

  async getDesired(): Promise<ReadonlyMap<AppKey, DesiredApp>> {
    this.settle();
    return this.desired;
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

    this.settle();
    const now = this.clock.now();
    const realNow = this.realNow();
    const deadline = now + ttlMs;
    const vouchedUntil = deadline + VOUCH_EXTRA_TTLS * ttlMs;
    for (const [lease, until] of this.ownLeases) if (until <= realNow) this.ownLeases.delete(lease);
    const changed: string[] = [];
    const writes: AgentWrite[] = [];
    for (const hb of latest.values()) {
      const visible = this.agentStates.get(hb.agent);
      const stored = this.agentsRaw.get(hb.agent);
      const isChanged = visible === undefined || !sameInstanceSet(visible.record.instances, hb.instances);
      if (isChanged) changed.push(hb.agent);
      // Unchanged and still vouched for by what etcd holds: nothing to write.
      if (!isChanged && stored !== undefined && stored.vouchedUntil >= deadline) continue;
      const instances = isChanged ? keptInstances(hb.instances) : visible.record.instances;
      writes.push(this.planAgentWrite(hb.agent, instances, vouchedUntil, vouchedUntil - now, realNow, ttlMs));
    }

    const failed = new Set<string>();
    let firstError: unknown;
    const results: { res: ITxnResponse; ops: WriteOp[] }[][] = [];
    // A record etcd would refuse is not sent: the other agents are saved, and the save then fails naming it.
    const sendable = this.refuseOversized(writes, failed);
    if (failed.size > 0) firstError = this.oversizedError(writes.filter((w) => failed.has(w.agent)));
    if (sendable.length > 0) {
      // All transactions of a save at once: a save of many agents takes about one round trip.
      const groups = this.groupAgentWrites(sendable);
      const settled = await Promise.allSettled(groups.map((g) => this.commitAgentWrites(g, RECORD_LEASE_TTLS * ttlMs)));
      settled.forEach((s, i) => {
        if (s.status === 'fulfilled') results.push(s.value);
        else {
          firstError ??= s.reason;
          for (const w of groups[i]!) failed.add(w.agent);
        }
      });
    }

    // What etcd now holds, then this store's deadlines; a failed agent keeps its old ones.
    for (const agent of latest.keys()) {
      if (failed.has(agent)) continue;
      this.ownDeadline.set(agent, deadline);
      this.refusedLogged.delete(agent);
    }
    const out = newBatch();
    for (const r of results.flat()) this.applyResultInto(r.res, r.ops, out);
    for (const agent of latest.keys()) this.refreshAgent(agent, out.changes);
    this.arm();
    this.emit(out.changes);
    if (firstError !== undefined) throw firstError;
    return { changed };
  }

  /**
   * How to write one agent: its delta when it is present, its record is this store's, not due for
   * its periodic rewrite and on a lease that surely outlives `leaseNeedMs` from now, the instances
   * are the record's with other states, and the delta stays small; else a new record.
   */
  private planAgentWrite(
    agent: string,
    instances: readonly InstanceHeartbeat[],
    vouchedUntil: number,
    leaseNeedMs: number,
    realNow: number,
    ttlMs: number,
  ): AgentWrite {
    const record: RecordWrite = { kind: 'record', agent, instances, vouchedUntil, clearDelta: this.agentDeltas.has(agent) };
    const entry = this.agentRecords.get(agent);
    // (An agent that lapsed is written anew: its keys may be being deleted.)
    if (entry === undefined || entry.value.writer !== this.writerId || !this.agentStates.has(agent)) return record;
    const writtenAt = this.recordWrittenAt.get(agent);
    if (writtenAt === undefined || this.recordDue(agent, writtenAt, realNow, ttlMs)) return record;
    const leaseUntil = this.ownLeases.get(entry.lease);
    if (leaseUntil === undefined || leaseUntil - realNow < leaseNeedMs) return record;
    const changes = diffInstances(entry.value.instances, instances);
    if (changes === undefined) return record;
    // The merged instances are these very ones (kept with the delta, so applying it reads nothing).
    const delta: AgentDelta = { base: entry.rev, vouchedUntil, ...changes, merged: instances };
    const text = encodeAgentDelta(agent, delta);
    if (text.length > entry.bytes * DELTA_MAX_SHARE) return record;
    // Should the delta's put fail, this record replaces it; the delta, of an older record, is then ignored.
    return { kind: 'delta', agent, text, lease: entry.lease, delta, record: { ...record, clearDelta: false } };
  }

  /**
   * Whether a record written at `writtenAt` is due again: once per period, when real time crosses
   * the agent's phase in it. Phases are spread by a hash of the agent, so records written in the
   * same save (all of them, at start) are rewritten evenly over the period, not all at once.
   */
  private recordDue(agent: string, writtenAt: number, realNow: number, ttlMs: number): boolean {
    const period = RECORD_PERIOD_TTLS * ttlMs;
    const phase = (chunkOf(agent, 4096) / 4096) * period;
    return Math.floor((realNow + phase) / period) > Math.floor((writtenAt + phase) / period);
  }

  private recordText(w: RecordWrite): string {
    return (w.text ??= encodeAgent(w.agent, { writer: this.writerId, vouchedUntil: w.vouchedUntil, instances: w.instances }));
  }

  private putBytes(w: AgentWrite): number {
    const key = w.kind === 'record' ? this.recordKey(w.agent) : this.deltaKey(w.agent);
    return Buffer.byteLength(key) + Buffer.byteLength(w.kind === 'record' ? this.recordText(w) : w.text);
  }

  /** The writes etcd can take; the agents of the others go into `failed`, counted and logged. */
  private refuseOversized(writes: readonly AgentWrite[], failed: Set<string>): AgentWrite[] {
    const ok: AgentWrite[] = [];
    for (const w of writes) {
      const bytes = this.putBytes(w);
      if (bytes <= this.maxPutBytes) {
        ok.push(w);
        continue;
      }
      failed.add(w.agent);
      this.stats.refusedRecords++;
      if (!this.refusedLogged.has(w.agent)) {
        this.refusedLogged.add(w.agent);
        this.logger?.warn(
          { agent: w.agent, bytes, instances: w.kind === 'record' ? w.instances.length : w.record.instances.length, max_put_bytes: this.maxPutBytes },
          `${this.tooLarge(w.agent, bytes)}; not sent`,
        );
      }
    }
    return ok;
  }

  private tooLarge(agent: string, bytes: number): string {
    return `agent ${JSON.stringify(agent)} is too large for ${this.where}: its record is ${bytes} bytes, more than one etcd request may carry (${this.maxPutBytes + REQUEST_OVERHEAD_BYTES} bytes, max_request_bytes / etcd's --max-request-bytes)`;
  }

  private oversizedError(refused: readonly AgentWrite[]): EtcdStoreError {
    const first = refused[0]!;
    const more = refused.length > 1 ? ` (and ${refused.length - 1} more agents)` : '';
    return new EtcdStoreError(`${this.tooLarge(first.agent, this.putBytes(first))}${more}: its heartbeats are not saved`, 'rejected');
  }

  /** Transactions of at most MAX_TXN_OPS operations and MAX_TXN_BYTES. */
  private groupAgentWrites(writes: readonly AgentWrite[]): AgentWrite[][] {
    const groups: AgentWrite[][] = [];
    let group: AgentWrite[] = [];
    let ops = 0;
    let bytes = 0;
    for (const w of writes) {
      const n = w.kind === 'record' && w.clearDelta ? 2 : 1;
      const size = (w.kind === 'record' ? this.recordText(w).length : w.text.length) + w.agent.length;
      if (group.length > 0 && (ops + n > MAX_TXN_OPS || bytes + size > Math.min(MAX_TXN_BYTES, this.maxPutBytes))) {
        groups.push(group);
        group = [];
        ops = 0;
        bytes = 0;
      }
      group.push(w);
      ops += n;
      bytes += size;
    }
    groups.push(group);
    return groups;
  }

  /**
   * One transaction of agent writes. When etcd has lost a lease (the pool's, or a record's that a
   * delta goes on), the pool gets a new one and the deltas become records, once.
   */
  private async commitAgentWrites(writes: readonly AgentWrite[], recordLifeMs: number, retry = true): Promise<{ res: ITxnResponse; ops: WriteOp[] }[]> {
    const pooled = writes.some((w) => w.kind === 'record') ? await this.leases.leaseFor(recordLifeMs) : undefined;
    if (pooled) this.ownLeases.set(pooled.id, pooled.until);
    const ops: WriteOp[] = [];
    for (const w of writes) {
      if (w.kind === 'delta') {
        ops.push({ key: this.deltaKey(w.agent), value: w.text, lease: w.lease, decoded: w.delta });
        continue;
      }
      const decoded: AgentValue = { writer: this.writerId, vouchedUntil: w.vouchedUntil, instances: w.instances };
      ops.push({ key: this.recordKey(w.agent), value: this.recordText(w), lease: pooled!.id, decoded });
      if (w.clearDelta) ops.push({ key: this.deltaKey(w.agent) });
    }
    try {
      const res = await this.commit(ops, 'saving heartbeats');
      const at = this.realNow();
      for (const w of writes) {
        if (w.kind === 'record') this.recordWrittenAt.set(w.agent, at);
        this.stats[w.kind === 'delta' ? 'deltaPuts' : 'recordPuts']++;
      }
      return [{ res, ops }];
    } catch (err) {
      if (!retry || !/lease not found/i.test((err as Error).message)) throw err;
      if (pooled) {
        this.leases.forget(pooled.id);
        this.ownLeases.delete(pooled.id);
      }
      const records = writes.map((w) => {
        if (w.kind === 'record') return w;
        this.ownLeases.delete(w.lease);
        return w.record;
      });
      // Records are larger than deltas: grouped again.
      const again = await Promise.all(this.groupAgentWrites(records).map((g) => this.commitAgentWrites(g, recordLifeMs, false)));
      return again.flat();
    }
  }

  recordKey(agent: string): string {
    return this.keys.agents + agentSegment(agent);
  }

  deltaKey(agent: string): string {
    return this.keys.agents + agentSegment(agent) + DELTA_SUFFIX;
  }

  async removeAgent(agent: string): Promise<void> {
    this.settle();
    const ops: WriteOp[] = [{ key: this.recordKey(agent) }, { key: this.deltaKey(agent) }];
    const res = await this.commit(ops, `removing agent ${agent}`);
    this.ownDeadline.delete(agent);
    this.applyResult(res, ops);
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
    const items = counts.map((c) => ({
      key: this.keys.crashes + crashKey(c),
      value: encodeCrash(c, expiresAt),
      app: appKey(c.app, c.version),
      id: crashKey(c),
    }));
    // The last put of a key in one call wins, as with consecutive puts.
    const last = new Map(items.map((i) => [i.key, i]));
    const toWrite = [...last.values()].filter((i) => !(this.visibleCrash.has(i.id) && this.texts.get(i.key) === i.value));
    await this.writeInChunks(toWrite, 'saving crash counts', ttlMs);
    const written = new Set(toWrite);
    // A put that changed nothing in etcd is still a put: it is reported, as the memory store does.
    this.emit(items.filter((i) => !written.has(i)).map((i) => ({ kind: 'crash', key: i.id, app: i.app })));
  }

  async deleteCrashCounts(keys: readonly string[]): Promise<void> {
    checkArray('deleteCrashCounts', 'keys', keys);
    this.settle();
    await this.deleteInChunks(
      keys.map((k) => this.keys.crashes + k),
      'deleting crash counts',
    );
  }

  async getCrashCounts(): Promise<ReadonlyMap<string, CrashCount>> {
    this.settle();
    return this.crashes.view();
  }

  // --- pending starts and stops ---

  async putPendingStarts(messages: readonly PendingStart[]): Promise<void> {
    checkArray('putPendingStarts', 'messages', messages);
    for (const m of messages) checkString('putPendingStarts', 'app', m?.app);
    this.settle();
    await this.putMessages(
      'start',
      messages.map((m) => ({ id: startKey(m), message: m })),
      this.keys.starts,
      'saving pending starts',
    );
  }

  async deletePendingStarts(keys: readonly string[]): Promise<void> {
    checkArray('deletePendingStarts', 'keys', keys);
    this.settle();
    await this.deleteInChunks(
      keys.map((k) => this.keys.starts + k),
      'deleting pending starts',
    );
  }

  async getPendingStarts(): Promise<ReadonlyMap<string, PendingStart>> {
    this.settle();
    return this.starts.view();
  }

  async putPendingStops(messages: readonly PendingStop[]): Promise<void> {
    checkArray('putPendingStops', 'messages', messages);
    for (const m of messages) checkString('putPendingStops', 'instance', m?.instance);
    this.settle();
    await this.putMessages(
      'stop',
      messages.map((m) => ({ id: stopKey(m), message: m })),
      this.keys.stops,
      'saving pending stops',
    );
  }

  async deletePendingStops(keys: readonly string[]): Promise<void> {
    checkArray('deletePendingStops', 'keys', keys);
    this.settle();
    await this.deleteInChunks(
      keys.map((k) => this.keys.stops + k),
      'deleting pending stops',
    );
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
    const key = this.keys.fresh + which;
    const value = encodeFreshness({ timestamp: current?.timestamp ?? now, expiresAt: now + ttlMs });
    if (current !== undefined && this.texts.get(key) === value) {
      this.emit([{ kind: 'freshness', which }]);
      return;
    }
    await this.writeInChunks([{ key, value }], `bumping ${which} freshness`, ttlMs);
  }

  async revokeFreshness(which: FreshnessKind): Promise<void> {
    checkFreshnessKind('revokeFreshness', which);
    this.settle();
    await this.deleteInChunks([this.keys.fresh + which], `revoking ${which} freshness`);
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
      crashCounts: this.crashesByApp.view(),
      starts: this.starts.view(),
      stops: this.stops.view(),
      freshness,
    };
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    const wrapped = (change: StoreChange): void => listener(change);
    this.listeners.add(wrapped);
    return () => {
      this.listeners.delete(wrapped);
    };
  }

  /**
   * Every key under the prefix as etcd holds it now, one line each: `key  value  (lease <id> ttl
   * <remaining>s)` or `(no lease)`, sorted by key; after an agent's delta, one more line
   * `<record key> (merged)  <record with the delta applied>`, the agent as every store reads it.
   * Read from etcd, not from the cache.
   */
  async dumpRaw(): Promise<string[]> {
    const { kvs } = await this.rangeAll(this.keys.root, 'dumping the keys');
    const ttls = new Map<string, string>();
    for (const lease of new Set(kvs.map((kv) => kv.lease).filter((l) => l !== '0'))) {
      const res = await this.call('reading a lease', (c) => c.leaseClient.leaseTimeToLive({ ID: lease }), false);
      ttls.set(lease, Number(res.TTL) < 0 ? 'expired' : `${res.TTL}s`);
    }
    const records = new Map<string, IKeyValue>();
    const lines: string[] = [];
    for (const kv of kvs) {
      const key = kv.key.toString();
      const lease = kv.lease === '0' ? '(no lease)' : `(lease ${BigInt(kv.lease).toString(16)} ttl ${ttls.get(kv.lease)})`;
      lines.push(`${key}  ${kv.value.toString()}  ${lease}`);
      const agentKey = key.startsWith(this.keys.agents) ? this.parseAgentKey(key) : undefined;
      if (agentKey === undefined) continue;
      if (!agentKey.delta) {
        records.set(agentKey.agent, kv);
        continue;
      }
      // After a delta (it sorts after its record), the agent as readers see it.
      const record = records.get(agentKey.agent);
      try {
        const delta = decodeAgentDelta(agentKey.agent, kv.value.toString());
        if (record === undefined || Number(record.mod_revision) !== delta.base) {
          lines.push(`${key} (ignored)  a delta of record revision ${delta.base}, which etcd does not hold`);
          continue;
        }
        const base = decodeAgent(agentKey.agent, record.value.toString());
        const merged = encodeAgent(agentKey.agent, {
          writer: base.writer,
          vouchedUntil: Math.max(base.vouchedUntil, delta.vouchedUntil),
          instances: applyDelta(agentKey.agent, base.instances, delta),
        });
        lines.push(`${record.key.toString()} (merged)  ${merged}  (record revision ${delta.base} with its delta: as the store reads it)`);
      } catch (err) {
        lines.push(`${key} (unreadable)  ${(err as Error).message}`);
      }
    }
    return lines;
  }

  // --- the decision audit, kept beside the state ---

  /**
   * Appends decision records under `<prefix>/audit/`, each on a shared lease of AUDIT_TTL_MS, so a
   * standby or the next leader can show what was decided. Keys sort by time, then by writer.
   */
  async appendAudit(records: readonly { seq: number; at: number }[]): Promise<void> {
    if (records.length === 0) return;
    const items = records.map((r) => ({
      key: `${this.keys.root}audit/${String(r.at).padStart(15, '0')}-${this.writerId}-${String(r.seq).padStart(9, '0')}`,
      value: JSON.stringify(r),
    }));
    await this.writeInChunks(items, 'writing the decision audit', AUDIT_TTL_MS);
  }

  /** The audit records kept in etcd, oldest first (at most `limit`, the newest ones). */
  async readAudit(limit: number): Promise<unknown[]> {
    const { kvs } = await this.rangeAll(`${this.keys.root}audit/`, 'reading the decision audit');
    const out: unknown[] = [];
    for (const kv of kvs.slice(-limit)) {
      try {
        out.push(JSON.parse(kv.value.toString()));
      } catch {
        // a record that is not JSON was not written by hmgate: skipped
      }
    }
    return out;
  }

  // --- writing ---

  /** Runs an etcd call with this store's client, turning failures into errors naming etcd. */
  private async call<T>(doing: string, fn: (client: Etcd3) => Promise<T>, write = true): Promise<T> {
    const client = this.etcd;
    // Nothing is written against a state never read (the compares and skipped writes rely on it).
    if (write && !this.everSynced) {
      throw new EtcdStoreError(`${this.where} is unreachable: the state has not been read from it yet (${doing})`, 'unreachable');
    }
    if (!client) throw new EtcdStoreError(`${this.where}: the store is not started (${doing})`, 'unreachable');
    try {
      return await fn(client);
    } catch (err) {
      throw etcdError(err, this.config.endpoints, this.config.timeoutMs, doing);
    }
  }

  /** One transaction; a failure is recorded for health() and rethrown. */
  private async commit(ops: readonly WriteOp[], doing: string, compare: ICompare[] = []): Promise<ITxnResponse> {
    const success: IRequestOp[] = ops.map((op) =>
      op.value === undefined
        ? { request_delete_range: { key: Buffer.from(op.key) } }
        : { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value), ...(op.lease ? { lease: op.lease } : {}) } },
    );
    this.stats.txns++;
    for (const op of ops) {
      if (op.value === undefined) this.stats.deletes++;
      else {
        this.stats.puts++;
        this.stats.putBytes += Buffer.byteLength(op.key) + Buffer.byteLength(op.value);
      }
    }
    try {
      const res = await this.call(doing, (c) => c.kv.txn({ compare, success, failure: [] }));
      this.lastError = null;
      return res;
    } catch (err) {
      this.lastError = (err as Error).message;
      this.logger?.warn({ error: this.lastError }, this.lastError);
      throw err;
    }
  }

  /** Runs `write` with a shared lease for `lifeMs`; a lease etcd has lost is replaced once. */
  private async withLease<T>(lifeMs: number, write: (lease: string) => Promise<T>): Promise<{ value: T; lease: string }> {
    for (let attempt = 1; ; attempt++) {
      const { id } = await this.leases.leaseFor(lifeMs);
      try {
        return { value: await write(id), lease: id };
      } catch (err) {
        if (attempt >= 2 || !/lease not found/i.test((err as Error).message)) throw err;
        this.leases.forget(id);
      }
    }
  }

  /** Puts keys (on a shared lease when `ttlMs` is given), in transactions of at most 128. */
  private async writeInChunks(items: readonly { key: string; value: string }[], doing: string, ttlMs?: number): Promise<void> {
    for (let i = 0; i < items.length; i += MAX_TXN_OPS) {
      const slice = items.slice(i, i + MAX_TXN_OPS);
      const ops = (lease?: string): WriteOp[] => slice.map((it) => ({ key: it.key, value: it.value, lease }));
      if (ttlMs === undefined) {
        const res = await this.commit(ops(), doing);
        this.applyResult(res, ops());
      } else {
        const { value: res, lease } = await this.withLease(ttlMs, (l) => this.commit(ops(l), doing));
        this.applyResult(res, ops(lease));
      }
    }
  }

  private async deleteInChunks(keys: readonly string[], doing: string): Promise<void> {
    const unique = [...new Set(keys)];
    for (let i = 0; i < unique.length; i += MAX_TXN_OPS) {
      const ops = unique.slice(i, i + MAX_TXN_OPS).map((key) => ({ key }));
      const res = await this.commit(ops, doing);
      this.applyResult(res, ops);
    }
  }

  private async putMessages(kind: 'start' | 'stop', items: { id: string; message: PendingStart | PendingStop }[], under: string, doing: string): Promise<void> {
    const view = kind === 'start' ? this.starts : this.stops;
    const encoded = items.map(({ id, message }) => ({ id, key: under + id, value: encodeMessage(message), app: appKey(message.app, message.version) }));
    // The last put of a key in one call wins, as with consecutive puts.
    const last = new Map(encoded.map((e) => [e.key, e]));
    const toWrite = [...last.values()].filter((e) => !(view.has(e.id) && this.texts.get(e.key) === e.value));
    await this.writeInChunks(toWrite, doing);
    const written = new Set(toWrite);
    // A put that changed nothing in etcd is still a put: it is reported, as the memory store does.
    this.emit(encoded.filter((e) => !written.has(e)).map((e) => ({ kind, key: e.id, app: e.app })));
  }

  /** The writes that make etcd hold `next` as the desired state; none if it already does. */
  private planDesired(next: ReadonlyMap<AppKey, DesiredApp>): WriteOp[] {
    const rows: { key: AppKey; text: string }[] = [];
    let total = 0;
    for (const [key, app] of next) {
      const text = encodeDesiredApp(app);
      rows.push({ key, text });
      total += text.length + 1;
    }
    const current = this.desiredMeta?.chunks ?? 0;
    let chunks = 0;
    if (rows.length > 0) {
      const ideal = Math.min(MAX_DESIRED_CHUNKS, nextPowerOfTwo(Math.ceil(total / DESIRED_CHUNK_BYTES)));
      // Re-chunking rewrites every chunk, so the count only moves when far from the ideal.
      chunks = current > 0 && current * 4 >= ideal && current <= ideal * 4 ? current : ideal;
    }
    const buckets: { key: AppKey; text: string }[][] = Array.from({ length: chunks }, () => []);
    for (const row of rows) buckets[chunkOf(row.key, chunks)]!.push(row);
    const ops: WriteOp[] = [];
    buckets.forEach((bucket, n) => {
      bucket.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      const text = joinDesiredChunk(bucket.map((r) => r.text));
      const key = `${this.keys.desired}${n}`;
      if (this.texts.get(key) !== text) ops.push({ key, value: text });
    });
    for (const n of this.desiredChunks.keys()) if (n >= chunks) ops.push({ key: `${this.keys.desired}${n}` });
    const meta = encodeDesiredMeta({ chunks, apps: rows.length });
    const metaKey = `${this.keys.desired}meta`;
    if (ops.length > 0 || this.texts.get(metaKey) !== meta) ops.push({ key: metaKey, value: meta });
    return ops;
  }

  // --- reading etcd into the mirror ---

  private async rangeAll(prefix: string, doing: string): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const start = Buffer.from(prefix);
    const end = prefixEnd(start);
    const kvs: IKeyValue[] = [];
    let key = start;
    let revision: number | undefined;
    for (;;) {
      this.stats.ranges++;
      const res = await this.call(doing, (c) => c.kv.range({ key, range_end: end, limit: RANGE_PAGE, ...(revision === undefined ? {} : { revision }) }), false);
      revision ??= Number(res.header.revision);
      kvs.push(...res.kvs);
      if (!res.more || res.kvs.length === 0) break;
      key = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
    return { kvs, revision };
  }

  /** Reads every key under `prefix` and makes the mirror of that part match. */
  private async refreshRange(prefix: string, doing: string): Promise<number> {
    const { kvs, revision } = await this.rangeAll(prefix, doing);
    const out = newBatch(true);
    const seen = new Set<string>();
    for (const kv of kvs) {
      const key = kv.key.toString();
      seen.add(key);
      this.applyKv(key, kv.value.toString(), Number(kv.mod_revision), out, kv.lease);
    }
    for (const [key, rev] of [...this.revs]) {
      if (key.startsWith(prefix) && !seen.has(key) && rev < revision) this.applyKv(key, undefined, revision, out);
    }
    this.finishBatch(out);
    this.emit(out.changes);
    return revision;
  }

  /** Range everything, then watch from the revision of that range. */
  private async resync(): Promise<void> {
    if (this.resyncing) return;
    this.resyncing = true;
    try {
      const revision = await this.refreshRange(this.keys.root, 'reading the state');
      if (this.stopped || !this.etcd) return;
      this.watchRev = Math.max(this.watchRev, revision);
      this.pruneTombstones();
      this.openWatch(revision + 1);
      if (!this.everSynced && this.syncError !== null) this.logger?.info(`${this.where} answers: the state is read`);
      this.synced = true;
      this.everSynced = true;
      this.syncError = null;
      this.resyncBackoff = RESYNC_BACKOFF_MIN_MS;
    } finally {
      this.resyncing = false;
    }
  }

  private openWatch(fromRevision: number): void {
    const watcher = this.client.watch().prefix(this.keys.root).startRevision(String(fromRevision)).watcher();
    this.watcher = watcher;
    watcher.on('connected', () => {
      if (this.watcher !== watcher) return;
      this.breaksInARow = 0;
      this.watchError = null;
    });
    watcher.on('data', (res: IWatchResponse) => {
      if (this.watcher === watcher) this.onWatchData(res);
    });
    const broken = (err: Error, cancel: boolean) => {
      if (this.watcher !== watcher) return;
      this.watcher = undefined;
      this.synced = false;
      this.watchBreaks++;
      this.breaksInARow++;
      this.watchError = `the watch of ${this.where} broke: ${(err?.message ?? String(err)).split('\n')[0]}`;
      // One break is routine (etcd restarted, a connection replaced): the next read says whether etcd answers.
      if (this.breaksInARow >= WATCH_BREAKS_REPORTED)
        this.logger?.warn(
          { error: this.watchError, breaks: this.breaksInARow },
          `${this.watchError} (${this.breaksInARow} times in a row); reading the state again`,
        );
      else this.logger?.info({ error: this.watchError }, `${this.watchError}; reading the state again`);
      if (cancel) void watcher.cancel().catch(() => undefined);
      this.scheduleResync();
    };
    watcher.on('disconnected', (err: Error) => broken(err, true));
    // A watch etcd cancelled (its start revision was compacted, …) is already gone.
    watcher.on('error', (err: Error) => broken(err, false));
  }

  private scheduleResync(): void {
    if (this.stopped || this.resyncTimer) return;
    const delay = this.resyncBackoff;
    // Until the state was read once nothing works here: try again at least every second.
    this.resyncBackoff = Math.min(this.everSynced ? RESYNC_BACKOFF_MAX_MS : 1_000, this.resyncBackoff * 2);
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = undefined;
      if (this.stopped) return;
      this.resync().catch((err: unknown) => {
        const first = this.syncError === null;
        this.syncError = (err as Error).message;
        // Logged when it begins; it lasts until a read succeeds (health says so meanwhile).
        if (first) this.logger?.warn({ error: this.syncError }, this.syncError);
        this.scheduleResync();
      });
    }, delay);
    this.resyncTimer.unref?.();
  }

  private onWatchData(res: IWatchResponse): void {
    const out = newBatch();
    let highest = 0;
    for (const ev of res.events) {
      const rev = Number(ev.kv.mod_revision);
      highest = Math.max(highest, rev);
      const key = ev.kv.key.toString();
      // Most events are this store's own writes, already applied: skip them before reading the value.
      if (rev <= (this.revs.get(key) ?? this.tombs.get(key) ?? 0)) continue;
      this.applyKv(key, ev.type === 'Put' ? ev.kv.value.toString() : undefined, rev, out, ev.kv.lease);
    }
    // An answer without events is a progress notice: nothing is pending up to its revision.
    this.watchRev = Math.max(this.watchRev, res.events.length > 0 ? highest : Number(res.header.revision));
    if (this.tombs.size >= TOMBSTONE_PRUNE_AT) this.pruneTombstones();
    this.finishBatch(out);
    this.arm();
    this.emit(out.changes);
  }

  /** A tombstone is needed only until the watch has passed it. */
  private pruneTombstones(): void {
    for (const [key, rev] of this.tombs) if (rev <= this.watchRev) this.tombs.delete(key);
  }

  /** Applies a committed write at its revision (unless the watch already has) and emits. */
  private applyResult(res: ITxnResponse, ops: readonly WriteOp[]): void {
    const out = newBatch();
    this.applyResultInto(res, ops, out);
    this.arm();
    this.emit(out.changes);
  }

  private applyResultInto(res: ITxnResponse, ops: readonly WriteOp[], out: Batch): void {
    const rev = Number(res.header.revision);
    if (rev > this.watchRev) {
      for (const op of ops) this.applyKv(op.key, op.value, rev, out, op.lease, op.decoded);
    }
    this.finishBatch(out);
  }

  private finishBatch(out: Batch): void {
    if (out.agentsDirty.size > 0) {
      const agents = [...out.agentsDirty];
      out.agentsDirty.clear();
      for (const agent of agents) this.refreshMerged(agent, out.changes);
    }
    if (!out.desiredDirty) return;
    out.desiredDirty = false;
    const next = new Map<AppKey, DesiredApp>();
    const chunks = this.desiredMeta?.chunks ?? 0;
    for (let n = 0; n < chunks; n++) for (const app of this.desiredChunks.get(n) ?? []) next.set(appKey(app.guid, app.version), app);
    this.desired = next;
    out.changes.push({ kind: 'desired' });
  }

  /** One key's new state at `rev` (undefined: deleted), if newer than what the mirror holds. */
  private applyKv(key: string, text: string | undefined, rev: number, out: Batch, lease = '0', decoded?: AgentValue | AgentDelta): void {
    const k = this.keys;
    const kind = key.startsWith(k.agents)
      ? 'agent'
      : key.startsWith(k.desired)
        ? 'desired'
        : key.startsWith(k.crashes)
          ? 'crash'
          : key.startsWith(k.starts)
            ? 'start'
            : key.startsWith(k.stops)
              ? 'stop'
              : key.startsWith(k.fresh)
                ? 'fresh'
                : undefined;
    if (kind === undefined) return; // not a store key (e.g. a leader election under the prefix)
    const agentKey = kind === 'agent' ? this.parseAgentKey(key) : undefined;
    if (kind === 'agent' && agentKey === undefined) return;
    if (rev <= (this.revs.get(key) ?? this.tombs.get(key) ?? 0)) return;
    // One 'desired' event per desired transaction, one refresh of an agent per transaction (its
    // record and delta change together), each in its place among the other changes.
    if (
      !out.whole &&
      ((out.desiredDirty && (kind !== 'desired' || out.desiredRev !== rev)) || (out.agentsDirty.size > 0 && (kind !== 'agent' || out.agentsRev !== rev)))
    ) {
      this.finishBatch(out);
    }
    if (text === undefined) {
      this.revs.delete(key);
      this.tombs.set(key, rev);
      this.texts.delete(key);
    } else {
      this.revs.set(key, rev);
      this.tombs.delete(key);
      if (kind !== 'agent') this.texts.set(key, text);
    }
    try {
      switch (kind) {
        case 'agent':
          out.agentsDirty.add(agentKey!.agent);
          out.agentsRev = rev;
          if (agentKey!.delta) this.applyAgentDelta(agentKey!.agent, text, rev, decoded as AgentDelta | undefined);
          else this.applyAgentRecord(agentKey!.agent, text, rev, lease, decoded as AgentValue | undefined);
          break;
        case 'desired':
          this.applyDesired(key.slice(k.desired.length), text);
          out.desiredDirty = true;
          out.desiredRev = rev;
          break;
        case 'crash':
          this.applyCrash(key.slice(k.crashes.length), text, out.changes);
          break;
        case 'start':
          this.applyMessage('start', this.starts, key.slice(k.starts.length), text, out.changes);
          break;
        case 'stop':
          this.applyMessage('stop', this.stops, key.slice(k.stops.length), text, out.changes);
          break;
        case 'fresh':
          this.applyFresh(key.slice(k.fresh.length), text, out.changes);
          break;
      }
    } catch (err) {
      this.logger?.warn({ key, error: (err as Error).message }, `ignoring unreadable key ${key}: ${(err as Error).message}`);
    }
  }

  /** An agent's record or delta key, or undefined for any other key under agents/. */
  private parseAgentKey(key: string): { agent: string; delta: boolean } | undefined {
    const rest = key.slice(this.keys.agents.length);
    const delta = rest.endsWith(DELTA_SUFFIX);
    const segment = delta ? rest.slice(0, -DELTA_SUFFIX.length) : rest;
    if (segment === '' || segment.includes('/')) return undefined;
    return { agent: agentOfSegment(segment), delta };
  }

  /** (An unreadable record or delta counts as absent; the caller logs why.) */
  private applyAgentRecord(agent: string, text: string | undefined, rev: number, lease: string, decoded?: AgentValue): void {
    this.agentRecords.delete(agent);
    if (text !== undefined) this.agentRecords.set(agent, { value: decoded ?? decodeAgent(agent, text), rev, lease, bytes: text.length });
    else {
      this.ownDeadline.delete(agent);
      this.recordWrittenAt.delete(agent);
    }
  }

  private applyAgentDelta(agent: string, text: string | undefined, rev: number, decoded?: AgentDelta): void {
    this.agentDeltas.delete(agent);
    if (text !== undefined) this.agentDeltas.set(agent, { value: decoded ?? decodeAgentDelta(agent, text), rev });
  }

  /** The agent's record with its delta applied (a delta of another record revision is ignored), then the TTL rule. */
  private refreshMerged(agent: string, out: StoreChange[]): void {
    const record = this.agentRecords.get(agent);
    const delta = this.agentDeltas.get(agent);
    if (record === undefined) {
      this.agentsRaw.delete(agent);
      // A delta without its record (left by a write racing the record's delete): nobody reads it.
      if (delta !== undefined) this.deleteExpired([this.deltaKey(agent)]);
    } else {
      let { instances, vouchedUntil } = record.value;
      if (delta !== undefined && delta.value.base === record.rev) {
        try {
          instances = delta.value.merged ?? applyDelta(agent, instances, delta.value);
          vouchedUntil = Math.max(vouchedUntil, delta.value.vouchedUntil);
        } catch (err) {
          this.logger?.warn({ agent, error: (err as Error).message }, `ignoring the delta of agent ${agent}: ${(err as Error).message}`);
        }
      }
      this.agentsRaw.set(agent, { writer: record.value.writer, vouchedUntil, instances });
    }
    this.refreshAgent(agent, out);
  }

  private applyDesired(name: string, text: string | undefined): void {
    if (name === 'meta') {
      this.desiredMeta = text === undefined ? undefined : decodeDesiredMeta(text);
      return;
    }
    const n = Number(name);
    if (!Number.isInteger(n) || n < 0) return;
    if (text === undefined) this.desiredChunks.delete(n);
    else {
      this.desiredChunks.delete(n);
      this.desiredChunks.set(n, decodeDesiredChunk(name, text));
    }
  }

  private applyCrash(id: string, text: string | undefined, out: StoreChange[]): void {
    if (text === undefined) this.crashRaw.delete(id);
    else {
      try {
        this.crashRaw.set(id, decodeCrash(id, text));
      } catch (err) {
        this.crashRaw.delete(id);
        this.refreshCrash(id, out);
        throw err;
      }
    }
    this.refreshCrash(id, out);
  }

  private applyMessage<T extends PendingStart | PendingStop>(
    kind: 'start' | 'stop',
    view: CowMap<string, T>,
    id: string,
    text: string | undefined,
    out: StoreChange[],
  ): void {
    const old = view.get(id);
    if (text !== undefined) {
      try {
        const m = decodeMessage<T>(`pending ${kind} ${id}`, text);
        view.set(id, m);
        out.push({ kind, key: id, app: appKey(m.app, m.version) });
        return;
      } catch (err) {
        if (old && view.delete(id)) out.push({ kind, key: id, app: appKey(old.app, old.version) });
        throw err;
      }
    }
    if (old && view.delete(id)) out.push({ kind, key: id, app: appKey(old.app, old.version) });
  }

  private applyFresh(name: string, text: string | undefined, out: StoreChange[]): void {
    if (name !== 'actual' && name !== 'desired') return;
    if (text === undefined) this.freshRaw.delete(name);
    else {
      try {
        this.freshRaw.set(name, decodeFreshness(`${name} freshness`, text));
      } catch (err) {
        this.freshRaw.delete(name);
        this.refreshFresh(name, out);
        throw err;
      }
    }
    this.refreshFresh(name, out);
  }

  // --- the TTL rule: from the mirror to what is visible ---

  /** Until when an agent is present: this store's own deadline for its own writes, else the latest vouched. */
  private agentDeadline(agent: string, stored: AgentValue): number {
    const own = this.ownDeadline.get(agent);
    if (stored.writer === this.writerId) return own ?? stored.vouchedUntil;
    return own === undefined ? stored.vouchedUntil : Math.max(own, stored.vouchedUntil);
  }

  private refreshAgent(agent: string, out: StoreChange[]): void {
    const stored = this.agentsRaw.get(agent);
    const previous = this.agentStates.get(agent);
    const deadline = stored === undefined ? undefined : this.agentDeadline(agent, stored);
    if (stored !== undefined && deadline !== undefined && deadline > this.clock.now()) {
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
    if (stored !== undefined) this.deleteExpired([this.recordKey(agent), this.deltaKey(agent)]);
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

  private refreshCrash(id: string, out: StoreChange[]): void {
    const stored = this.crashRaw.get(id);
    const shown = this.visibleCrash.get(id);
    if (stored !== undefined && stored.expiresAt > this.clock.now()) {
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
    if (stored !== undefined) this.deleteExpired([this.keys.crashes + id]);
  }

  private setCrash(id: string, count: CrashCount): void {
    const app = appKey(count.app, count.version);
    this.crashes.set(id, count);
    let perKey = this.crashesByKeyPerApp.get(app);
    if (!perKey) this.crashesByKeyPerApp.set(app, (perKey = new Map()));
    perKey.set(id, count);
    this.crashesByApp.set(app, [...perKey.values()]);
  }

  private deleteCrash(id: string): void {
    const count = this.crashes.get(id);
    if (count === undefined) return;
    this.crashes.delete(id);
    const app = appKey(count.app, count.version);
    const perKey = this.crashesByKeyPerApp.get(app);
    perKey?.delete(id);
    if (!perKey || perKey.size === 0) {
      this.crashesByKeyPerApp.delete(app);
      this.crashesByApp.delete(app);
    } else {
      this.crashesByApp.set(app, [...perKey.values()]);
    }
  }

  private refreshFresh(which: FreshnessKind, out: StoreChange[]): void {
    const stored = this.freshRaw.get(which);
    const shown = this.freshness.get(which);
    if (stored !== undefined && stored.expiresAt > this.clock.now()) {
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
    if (stored !== undefined) this.deleteExpired([this.keys.fresh + which]);
  }

  /**
   * Deletes the keys of an expired record in the background — only if nobody wrote any of them
   * since (compare on their revisions; an absent key must still be absent). If it fails, the
   * keys' lease removes them later.
   */
  private deleteExpired(keys: readonly string[]): void {
    const revs = keys.map((key) => this.revs.get(key) ?? 0);
    const id = revs.join('/');
    if (revs.every((r) => r === 0) || this.expiredDeletes.get(keys[0]!) === id || !this.etcd || this.stopped) return;
    this.expiredDeletes.set(keys[0]!, id);
    const ops: WriteOp[] = keys.map((key) => ({ key }));
    const compare: ICompare[] = keys.map((key, i) => ({ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revs[i]! }));
    const p = this.call('deleting an expired key', (c) =>
      c.kv.txn({ compare, success: keys.map((key) => ({ request_delete_range: { key: Buffer.from(key) } })), failure: [] }),
    )
      .then((res) => {
        this.stats.txns++;
        this.stats.expiredDeletes++;
        this.stats.deletes += keys.length;
        if (res.succeeded && !this.stopped) this.applyResult(res, ops);
      })
      .catch((err: unknown) => this.logger?.debug({ keys, error: (err as Error).message }, 'deleting an expired key failed; its lease will'))
      .finally(() => {
        if (this.expiredDeletes.get(keys[0]!) === id) this.expiredDeletes.delete(keys[0]!);
        this.inflight.delete(p);
      });
    this.inflight.add(p);
  }

  /** Drop every record whose deadline has passed (alive iff now < deadline), then re-arm. */
  private settle(): void {
    const now = this.clock.now();
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
          if (this.options.onListenerError) this.options.onListenerError(err, change);
          else
            queueMicrotask(() => {
              throw err;
            });
        }
      }
    }
  }
}

/** Every key of the store's prefix as `key  value  (lease <id> ttl <n>s)` lines, for `hmgate dump --raw`. */
export function dumpRaw(store: EtcdStore): Promise<string[]> {
  return store.dumpRaw();
}

/** How often every agent record is written again (the periodic compaction of its delta), for an agent ttl of `ttlMs`. */
export function recordPeriodMs(ttlMs: number): number {
  return RECORD_PERIOD_TTLS * ttlMs;
}
