/**
 * A store plugin with HM9000's actual-state layout in etcd, for bench/scale's comparison: loaded
 * by path (`store: { plugin: /…/dist/bench/hm9000-layout-store.js }`), not a built-in.
 *
 * HM9000 (7c34303, store/actual_state.go) kept one key per instance and one presence key per
 * agent (DEA):
 *
 *   <prefix>-hm/v1/apps/actual/<app guid>,<version>/<instance guid>   "index,state,ts,dea" (no TTL)
 *   <prefix>-hm/v1/dea-presence/<dea>                                 put every heartbeat, TTL heartbeat_ttl
 *
 * and wrote them as its listener's SyncHeartbeats did: for every agent heartbeat its presence key;
 * for every instance whose state differs from the write-through cache (or that is new) its key;
 * for every instance the agent stopped reporting a delete. The cache is re-read from etcd (a range
 * of every instance and presence key) once per cache_refresh (HM9000's
 * store_heartbeat_cache_refresh_interval, 20 s) inside the save, as HM9000 did; that read also
 * deletes the keys of instances whose agent's presence has lapsed (GetInstanceHeartbeats).
 *
 * What it does not copy: HM9000's listener scanned its whole cache for every heartbeat to find
 * an agent's vanished instances (O(instances) per heartbeat); here an index per agent finds them,
 * unless `scan: true`. And HM9000's analyzer and sender each ranged the whole actual state every
 * cycle; here reads are served from memory, as hmgate's etcd store serves them from its watched
 * cache. So the comparison is of the layout — its writes, deletes and periodic re-read — not of
 * HM9000's code. Everything but actual state (desired, crash counts, pending messages, freshness,
 * the leader election, the decision audit) is hmgate's etcd store, unchanged, under <prefix>.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Etcd3 } from 'etcd3';
import { MemoryStore } from '../plugins/memory-store/memory-store.js';
import { EtcdStore } from '../plugins/etcd-store/etcd-store.js';
import { createEtcdClient, describeEndpoints } from '../plugins/etcd-store/client.js';
import { Duration } from '../src/config/schema.js';
import type { Clock } from '../src/sdk/clock.js';
import { definePlugin } from '../src/sdk/plugin.js';
import { type StageHealth } from '../src/sdk/stage.js';
import type {
  AgentHeartbeat,
  AgentRecord,
  CrashCount,
  DesiredApp,
  FreshnessKind,
  FreshnessMarker,
  PendingStart,
  PendingStop,
  StoreChange,
  StoreSnapshot,
} from '../src/sdk/state.js';
import type { AppKey } from '../src/sdk/app-key.js';
import type { SaveHeartbeatsResult, Store } from '../src/sdk/store.js';

export const Hm9000LayoutOptionsSchema = Type.Object(
  {
    endpoints: Type.Array(Type.String(), { minItems: 1, default: ['http://127.0.0.1:2379'] }),
    prefix: Type.String({ minLength: 1, default: '/hm9000layout' }),
    dial_timeout: Duration({ default: '5s', hb: false }),
    cache_refresh: Duration({ default: '20s', hb: false, description: "HM9000's store_heartbeat_cache_refresh_interval." }),
    scan: Type.Boolean({ default: false, description: "true: find an agent's vanished instances by scanning the whole cache, as HM9000's listener did." }),
    max_in_flight: Type.Integer({ minimum: 1, default: 8, description: 'Transactions in flight at once (HM9000: store_max_concurrent_requests 30).' }),
  },
  { additionalProperties: false },
);
export type Hm9000LayoutOptions = Static<typeof Hm9000LayoutOptionsSchema>;

/** etcd's default --max-txn-ops. */
const MAX_TXN_OPS = 128;
/** Keys per page when the cache is re-read. */
const RANGE_PAGE = 10_000;

interface Cached {
  app: string;
  version: string;
  state: string;
  agent: string;
}

type Op = { key: string; value?: string; lease?: string };

/** What this store sent to etcd, for the bench. */
export interface Hm9000LayoutStats {
  puts: number;
  deletes: number;
  txns: number;
  cacheReads: number;
  lastCacheReadMs: number;
}

export class Hm9000LayoutStore implements Store {
  readonly stats: Hm9000LayoutStats = { puts: 0, deletes: 0, txns: 0, cacheReads: 0, lastCacheReadMs: 0 };
  private readonly inner: EtcdStore;
  private readonly actual: MemoryStore;
  private etcd: Etcd3 | undefined;
  private readonly actualPrefix: string;
  private readonly presencePrefix: string;
  /** The write-through cache: instance guid → what was last written for it. */
  private cache = new Map<string, Cached>();
  /** Agent → the guids it reported last (the index that replaces HM9000's whole-cache scan). */
  private byAgent = new Map<string, Set<string>>();
  private cacheReadAt = -Infinity;
  private lastError: string | null = null;

  constructor(
    private readonly o: Hm9000LayoutOptions,
    private readonly clock: Clock,
  ) {
    const root = o.prefix.replace(/\/+$/, '');
    this.inner = new EtcdStore({ endpoints: o.endpoints, prefix: root, timeoutMs: o.dial_timeout }, clock);
    this.actual = new MemoryStore(clock);
    // A sibling of the inner store's prefix, so its watch does not carry every instance key.
    this.actualPrefix = `${root}-hm/v1/apps/actual/`;
    this.presencePrefix = `${root}-hm/v1/dea-presence/`;
  }

  async start(): Promise<void> {
    await this.inner.start();
    this.actual.start();
    this.etcd = createEtcdClient({ endpoints: this.o.endpoints, timeoutMs: this.o.dial_timeout });
  }

  async stop(): Promise<void> {
    this.actual.stop();
    await this.inner.stop();
    this.etcd?.close();
    this.etcd = undefined;
  }

  health(): StageHealth {
    const h = this.inner.health();
    return this.lastError ? { healthy: false, last_error: this.lastError } : h;
  }

  // --- actual state: HM9000's layout ---

  async saveHeartbeats(batch: readonly AgentHeartbeat[], ttlMs: number): Promise<SaveHeartbeatsResult> {
    try {
      await this.ensureCache();
      const latest = new Map<string, AgentHeartbeat>();
      for (const hb of batch) {
        latest.delete(hb.agent);
        latest.set(hb.agent, hb);
      }
      const ops: Op[] = [];
      // One lease per save for its presence keys (HM9000 set a TTL on each key, etcd v2).
      const lease = latest.size === 0 ? '' : String((await this.client().leaseClient.leaseGrant({ TTL: Math.max(1, Math.ceil(ttlMs / 1000)) })).ID);
      for (const hb of latest.values()) {
        ops.push({ key: this.presencePrefix + hb.agent, value: hb.agent, lease });
        const reported = new Set<string>();
        for (const inst of hb.instances) {
          reported.add(inst.instance);
          const cached = this.cache.get(inst.instance);
          if (cached !== undefined && cached.state === inst.state) continue;
          ops.push({
            key: this.instanceKey(inst.app, inst.version, inst.instance),
            value: `${inst.index},${inst.state},${inst.stateTimestamp.toFixed(1)},${hb.agent}`,
          });
          this.cache.set(inst.instance, { app: inst.app, version: inst.version, state: inst.state, agent: hb.agent });
        }
        const vanished: string[] = [];
        if (this.o.scan) {
          for (const [guid, c] of this.cache) if (c.agent === hb.agent && !reported.has(guid)) vanished.push(guid);
        } else {
          for (const guid of this.byAgent.get(hb.agent) ?? []) if (!reported.has(guid) && this.cache.get(guid)?.agent === hb.agent) vanished.push(guid);
        }
        for (const guid of vanished) {
          const c = this.cache.get(guid)!;
          ops.push({ key: this.instanceKey(c.app, c.version, guid) });
          this.cache.delete(guid);
        }
        this.byAgent.set(hb.agent, reported);
      }
      await this.commit(ops);
      this.lastError = null;
    } catch (err) {
      // What etcd holds is unknown now: read it again before the next save.
      this.cacheReadAt = -Infinity;
      this.lastError = `HM9000-layout store: ${(err as Error).message}`;
      throw err;
    }
    return this.actual.saveHeartbeats(batch, ttlMs);
  }

  async removeAgent(agent: string): Promise<void> {
    const ops: Op[] = [{ key: this.presencePrefix + agent }];
    for (const guid of this.byAgent.get(agent) ?? []) {
      const c = this.cache.get(guid);
      if (c?.agent !== agent) continue;
      ops.push({ key: this.instanceKey(c.app, c.version, guid) });
      this.cache.delete(guid);
    }
    this.byAgent.delete(agent);
    await this.commit(ops);
    await this.actual.removeAgent(agent);
  }

  getAgents(): Promise<ReadonlyMap<string, AgentRecord>> {
    return this.actual.getAgents();
  }

  private instanceKey(app: string, version: string, instance: string): string {
    return `${this.actualPrefix}${app},${version}/${instance}`;
  }

  private client(): Etcd3 {
    if (!this.etcd) throw new Error(`HM9000-layout store: not started (etcd at ${describeEndpoints(this.o.endpoints)})`);
    return this.etcd;
  }

  /** Puts and deletes in transactions of up to 128, a few in flight, as HM9000's SetMulti batches. */
  private async commit(ops: Op[]): Promise<void> {
    const client = this.client();
    const groups: Op[][] = [];
    for (let i = 0; i < ops.length; i += MAX_TXN_OPS) groups.push(ops.slice(i, i + MAX_TXN_OPS));
    let next = 0;
    const worker = async () => {
      while (next < groups.length) {
        const g = groups[next++]!;
        await client.kv.txn({
          compare: [],
          success: g.map((op) =>
            op.value === undefined
              ? { request_delete_range: { key: Buffer.from(op.key) } }
              : { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value), ...(op.lease ? { lease: op.lease } : {}) } },
          ),
          failure: [],
        });
        this.stats.txns++;
        for (const op of g) {
          if (op.value === undefined) this.stats.deletes++;
          else this.stats.puts++;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.o.max_in_flight, groups.length) }, worker));
  }

  /**
   * HM9000's ensureCacheIsReady: once per cache_refresh, every instance and presence key is read
   * back, the cache rebuilt from it, and the instances of agents without presence deleted.
   */
  private async ensureCache(): Promise<void> {
    const now = this.clock.now();
    if (now - this.cacheReadAt < this.o.cache_refresh) return;
    const t0 = Date.now();
    const present = new Set<string>();
    await this.range(this.presencePrefix, (key) => present.add(key.slice(this.presencePrefix.length)));
    const cache = new Map<string, Cached>();
    const byAgent = new Map<string, Set<string>>();
    const expired: Op[] = [];
    await this.range(this.actualPrefix, (key, value) => {
      const rest = key.slice(this.actualPrefix.length);
      const slash = rest.lastIndexOf('/');
      const comma = rest.indexOf(',');
      if (slash < 0 || comma < 0 || comma > slash) return;
      const fields = value.split(',');
      if (fields.length !== 4) return;
      const agent = fields[3]!;
      if (!present.has(agent)) {
        expired.push({ key });
        return;
      }
      const guid = rest.slice(slash + 1);
      cache.set(guid, { app: rest.slice(0, comma), version: rest.slice(comma + 1, slash), state: fields[1]!, agent });
      let set = byAgent.get(agent);
      if (!set) byAgent.set(agent, (set = new Set()));
      set.add(guid);
    });
    await this.commit(expired);
    this.cache = cache;
    this.byAgent = byAgent;
    this.cacheReadAt = now;
    this.stats.cacheReads++;
    this.stats.lastCacheReadMs = Date.now() - t0;
  }

  private async range(prefix: string, each: (key: string, value: string) => void): Promise<void> {
    const client = this.client();
    const end = Buffer.from(prefix);
    end[end.length - 1]!++;
    let from = Buffer.from(prefix);
    for (;;) {
      const res = await client.kv.range({ key: from, range_end: end, limit: RANGE_PAGE });
      for (const kv of res.kvs) each(kv.key.toString(), kv.value.toString());
      if (!res.more || res.kvs.length === 0) return;
      from = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
  }

  // --- everything else: hmgate's etcd store ---

  replaceDesired(apps: Iterable<DesiredApp>): Promise<void> {
    return this.inner.replaceDesired(apps);
  }
  getDesired(): Promise<ReadonlyMap<AppKey, DesiredApp>> {
    return this.inner.getDesired();
  }
  putCrashCounts(counts: readonly CrashCount[], ttlMs: number): Promise<void> {
    return this.inner.putCrashCounts(counts, ttlMs);
  }
  deleteCrashCounts(keys: readonly string[]): Promise<void> {
    return this.inner.deleteCrashCounts(keys);
  }
  getCrashCounts(): Promise<ReadonlyMap<string, CrashCount>> {
    return this.inner.getCrashCounts();
  }
  putPendingStarts(messages: readonly PendingStart[]): Promise<void> {
    return this.inner.putPendingStarts(messages);
  }
  deletePendingStarts(keys: readonly string[]): Promise<void> {
    return this.inner.deletePendingStarts(keys);
  }
  getPendingStarts(): Promise<ReadonlyMap<string, PendingStart>> {
    return this.inner.getPendingStarts();
  }
  putPendingStops(messages: readonly PendingStop[]): Promise<void> {
    return this.inner.putPendingStops(messages);
  }
  deletePendingStops(keys: readonly string[]): Promise<void> {
    return this.inner.deletePendingStops(keys);
  }
  getPendingStops(): Promise<ReadonlyMap<string, PendingStop>> {
    return this.inner.getPendingStops();
  }
  bumpFreshness(which: FreshnessKind, ttlMs: number): Promise<void> {
    return this.inner.bumpFreshness(which, ttlMs);
  }
  revokeFreshness(which: FreshnessKind): Promise<void> {
    return this.inner.revokeFreshness(which);
  }
  getFreshness(which: FreshnessKind): Promise<FreshnessMarker | undefined> {
    return this.inner.getFreshness(which);
  }

  async snapshot(): Promise<StoreSnapshot> {
    const [outer, actual] = await Promise.all([this.inner.snapshot(), this.actual.snapshot()]);
    return { ...outer, instances: actual.instances };
  }

  onChange(listener: (change: StoreChange) => void): () => void {
    const offInner = this.inner.onChange((c) => c.kind !== 'agent' && listener(c));
    const offActual = this.actual.onChange((c) => c.kind === 'agent' && listener(c));
    return () => {
      offInner();
      offActual();
    };
  }

  // The engine looks for these on a shared store: the same as hmgate's etcd store.
  leaderElection(opts: Parameters<EtcdStore['leaderElection']>[0]): ReturnType<EtcdStore['leaderElection']> {
    return this.inner.leaderElection(opts);
  }
  appendAudit(records: Parameters<EtcdStore['appendAudit']>[0]): Promise<void> {
    return this.inner.appendAudit(records);
  }
  readAudit(limit: number): Promise<unknown[]> {
    return this.inner.readAudit(limit);
  }
}

export default definePlugin({
  name: 'hm9000-layout',
  kind: 'store',
  description: "etcd with HM9000's actual-state layout (one key per instance, a presence key per agent heartbeat), for bench/scale.",
  optionsSchema: Hm9000LayoutOptionsSchema,
  create: (opts, ctx) => new Hm9000LayoutStore(opts, ctx.clock),
});
