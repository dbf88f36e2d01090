/**
 * Writes: what to put for each save (an agent's record or its delta, the desired chunks, small
 * keys that changed), grouped into transactions etcd accepts, committed, and applied to the mirror
 * at the revision etcd gives them. A write that would change nothing etcd holds is not sent (the
 * change is still reported). An agent whose record is larger than one etcd request may carry is
 * refused before anything is sent: the other agents of the save are written, and the save then
 * fails naming it. How records, deltas and leases play together is in README.md.
 */
import {
  appKey,
  type AgentHeartbeat,
  type AppKey,
  type Clock,
  counted,
  type CrashCount,
  crashKey,
  type DesiredApp,
  type FreshnessKind,
  type InstanceHeartbeat,
  keptInstances,
  type PendingStart,
  type PendingStop,
  type SaveHeartbeatsResult,
} from '../../src/sdk/index.js';
import type { ICompare } from 'etcd3';
import { EtcdStoreError } from './client.js';
import {
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
} from './codec.js';
import { chunkOf, deltaKey, recordKey, type Keys } from './keys.js';
import { isLeaseLost, RECORD_LEASE_TTLS, recordDue, VOUCH_EXTRA_TTLS, type LeasePool } from './leases.js';
import type { Committed, Mirror } from './mirror.js';
import type { EtcdRequests, StoreLogger, WriteOp } from './requests.js';
import type { VisibleState } from './view.js';

/** A delta larger than this share of its record is folded into a new record. */
const DELTA_MAX_SHARE = 1 / 8;
/** etcd's default --max-txn-ops. */
const MAX_TXN_OPS = 128;
/** Keep each transaction well under etcd's default --max-request-bytes (1.5 MiB). */
const MAX_TXN_BYTES = 1_000_000;
/** Desired chunks aim at this size; their number is a power of two, changed only when far off. */
const DESIRED_CHUNK_BYTES = 64 * 1024;
const MAX_DESIRED_CHUNKS = 64;
/** Room left in a request for what surrounds the keys and values put (transaction, lease ids, compares). */
export const REQUEST_OVERHEAD_BYTES = 4_096;

function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
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

export interface StoreWriterOptions {
  keys: Keys;
  writerId: string;
  clock: Clock;
  /** Real time (ms), on which etcd runs leases. */
  realNow: () => number;
  requests: EtcdRequests;
  mirror: Mirror;
  leases: LeasePool;
  /** The largest request etcd accepts. */
  maxRequestBytes: number;
  logger?: StoreLogger;
}

export class StoreWriter {
  /** The most one put (key and value) may carry: what etcd accepts in a request, less some room. */
  private readonly maxPutBytes: number;
  /** Leases this store was granted for records, by id → real time (ms) before which they do not expire. */
  private readonly ownLeases = new Map<string, number>();
  /** Agents refused as too large, logged once until one of their writes succeeds. */
  private readonly refusedLogged = new Set<string>();
  private readonly keys: Keys;
  private readonly requests: EtcdRequests;
  private readonly mirror: Mirror;
  private readonly view: VisibleState;

  constructor(private readonly opts: StoreWriterOptions) {
    this.keys = opts.keys;
    this.requests = opts.requests;
    this.mirror = opts.mirror;
    this.view = opts.mirror.view;
    this.maxPutBytes = opts.maxRequestBytes - REQUEST_OVERHEAD_BYTES;
  }

  // --- agents ---

  /** Saves the latest heartbeat of each agent (checked, the store settled). */
  async saveAgents(latest: ReadonlyMap<string, AgentHeartbeat>, ttlMs: number): Promise<SaveHeartbeatsResult> {
    const now = this.opts.clock.now();
    const realNow = this.opts.realNow();
    const deadline = now + ttlMs;
    const vouchedUntil = deadline + VOUCH_EXTRA_TTLS * ttlMs;
    for (const [lease, until] of this.ownLeases) if (until <= realNow) this.ownLeases.delete(lease);
    const changed: string[] = [];
    const writes: AgentWrite[] = [];
    for (const hb of latest.values()) {
      const visible = this.view.agent(hb.agent);
      const stored = this.mirror.agentsRaw.get(hb.agent);
      const isChanged = visible === undefined || !sameInstanceSet(visible.instances, hb.instances);
      if (isChanged) changed.push(hb.agent);
      // Unchanged and still vouched for by what etcd holds: nothing to write.
      if (!isChanged && stored !== undefined && stored.vouchedUntil >= deadline) continue;
      const instances = isChanged ? keptInstances(hb.instances) : visible.instances;
      writes.push(this.planAgentWrite(hb.agent, instances, vouchedUntil, vouchedUntil - now, realNow, ttlMs));
    }

    const failed = new Set<string>();
    let firstError: unknown;
    const results: Committed[][] = [];
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
      this.view.ownDeadline.set(agent, deadline);
      this.refusedLogged.delete(agent);
    }
    this.mirror.applyAgentWrites(results.flat(), latest.keys());
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
    const record: RecordWrite = { kind: 'record', agent, instances, vouchedUntil, clearDelta: this.mirror.agentDeltas.has(agent) };
    const entry = this.mirror.agentRecords.get(agent);
    // (An agent that lapsed is written anew: its keys may be being deleted.)
    if (entry === undefined || entry.value.writer !== this.opts.writerId || this.view.agent(agent) === undefined) return record;
    const writtenAt = this.mirror.recordWrittenAt.get(agent);
    if (writtenAt === undefined || recordDue(agent, writtenAt, realNow, ttlMs)) return record;
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

  private recordText(w: RecordWrite): string {
    return (w.text ??= encodeAgent(w.agent, { writer: this.opts.writerId, vouchedUntil: w.vouchedUntil, instances: w.instances }));
  }

  private putBytes(w: AgentWrite): number {
    const key = w.kind === 'record' ? recordKey(this.keys, w.agent) : deltaKey(this.keys, w.agent);
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
      this.requests.stats.refusedRecords++;
      if (!this.refusedLogged.has(w.agent)) {
        this.refusedLogged.add(w.agent);
        this.opts.logger?.warn(
          { agent: w.agent, bytes, instances: w.kind === 'record' ? w.instances.length : w.record.instances.length, max_put_bytes: this.maxPutBytes },
          `${this.tooLarge(w.agent, bytes)}; not sent`,
        );
      }
    }
    return ok;
  }

  private tooLarge(agent: string, bytes: number): string {
    return `agent ${JSON.stringify(agent)} is too large for ${this.requests.where}: its record is ${bytes} bytes, more than one etcd request may carry (${this.maxPutBytes + REQUEST_OVERHEAD_BYTES} bytes, max_request_bytes / etcd's --max-request-bytes)`;
  }

  private oversizedError(refused: readonly AgentWrite[]): EtcdStoreError {
    const first = refused[0]!;
    const more = refused.length > 1 ? ` (and ${counted(refused.length - 1, 'more agent')})` : '';
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
  private async commitAgentWrites(writes: readonly AgentWrite[], recordLifeMs: number, retry = true): Promise<Committed[]> {
    const pooled = writes.some((w) => w.kind === 'record') ? await this.opts.leases.leaseFor(recordLifeMs) : undefined;
    if (pooled) this.ownLeases.set(pooled.id, pooled.until);
    const ops: WriteOp[] = [];
    for (const w of writes) {
      if (w.kind === 'delta') {
        ops.push({ key: deltaKey(this.keys, w.agent), value: w.text, lease: w.lease, decoded: w.delta });
        continue;
      }
      const decoded: AgentValue = { writer: this.opts.writerId, vouchedUntil: w.vouchedUntil, instances: w.instances };
      ops.push({ key: recordKey(this.keys, w.agent), value: this.recordText(w), lease: pooled!.id, decoded });
      if (w.clearDelta) ops.push({ key: deltaKey(this.keys, w.agent) });
    }
    try {
      const res = await this.requests.commit(ops, 'saving heartbeats');
      const at = this.opts.realNow();
      for (const w of writes) {
        if (w.kind === 'record') this.mirror.recordWrittenAt.set(w.agent, at);
        this.requests.stats[w.kind === 'delta' ? 'deltaPuts' : 'recordPuts']++;
      }
      return [{ res, ops }];
    } catch (err) {
      if (!retry || !isLeaseLost(err)) throw err;
      if (pooled) {
        this.opts.leases.forget(pooled.id);
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

  async removeAgent(agent: string): Promise<void> {
    const ops: WriteOp[] = [{ key: recordKey(this.keys, agent) }, { key: deltaKey(this.keys, agent) }];
    const res = await this.requests.commit(ops, `removing agent ${agent}`);
    this.view.ownDeadline.delete(agent);
    this.mirror.applyResult(res, ops);
  }

  // --- desired ---

  /** Makes etcd hold `next` as the desired state, in one transaction; replanned if another daemon replaced it meanwhile. */
  async replaceDesired(next: ReadonlyMap<AppKey, DesiredApp>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const ops = this.planDesired(next);
      if (ops.length === 0) {
        // Already what etcd holds: nothing to write, but the replace still happened.
        this.view.emit([{ kind: 'desired' }]);
        return;
      }
      const metaKey = `${this.keys.desired}meta`;
      const compare: ICompare = { key: Buffer.from(metaKey), target: 'Mod', result: 'Equal', mod_revision: this.mirror.revision(metaKey) };
      const res = await this.requests.commit(ops, 'replacing the desired state', [compare]);
      if (res.succeeded) {
        this.mirror.applyResult(res, ops);
        return;
      }
      // Another daemon replaced it since this mirror last heard: read it, then plan again.
      if (attempt >= 3) throw new EtcdStoreError(`${this.requests.where}: the desired state kept changing under this replace (3 attempts)`, 'rejected');
      await this.mirror.refreshRange(this.keys.desired, 'reading the desired state');
    }
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
    const current = this.mirror.desiredMeta?.chunks ?? 0;
    let chunks = 0;
    if (rows.length > 0) {
      const ideal = Math.min(MAX_DESIRED_CHUNKS, nextPowerOfTwo(Math.ceil(total / DESIRED_CHUNK_BYTES)));
      // Re-chunking rewrites every chunk, so the count only moves when far from the ideal.
      chunks = current > 0 && current * 4 >= ideal && current <= ideal * 4 ? current : ideal;
    }
    const buckets: { key: AppKey; text: string }[][] = Array.from({ length: chunks }, () => []);
    for (const row of rows) buckets[chunkOf(row.key, chunks)]!.push(row);
    const ops: WriteOp[] = [];
    const texts = this.mirror.texts;
    buckets.forEach((bucket, n) => {
      bucket.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      const text = joinDesiredChunk(bucket.map((r) => r.text));
      const key = `${this.keys.desired}${n}`;
      if (texts.get(key) !== text) ops.push({ key, value: text });
    });
    for (const n of this.mirror.desiredChunks.keys()) if (n >= chunks) ops.push({ key: `${this.keys.desired}${n}` });
    const meta = encodeDesiredMeta({ chunks, apps: rows.length });
    const metaKey = `${this.keys.desired}meta`;
    if (ops.length > 0 || texts.get(metaKey) !== meta) ops.push({ key: metaKey, value: meta });
    return ops;
  }

  // --- small keys: crash counts, pending messages, freshness ---

  async putCrashCounts(counts: readonly CrashCount[], ttlMs: number): Promise<void> {
    const expiresAt = this.opts.clock.now() + ttlMs;
    const items = counts.map((c) => ({
      key: this.keys.crashes + crashKey(c),
      value: encodeCrash(c, expiresAt),
      app: appKey(c.app, c.version),
      id: crashKey(c),
    }));
    // The last put of a key in one call wins, as with consecutive puts.
    const last = new Map(items.map((i) => [i.key, i]));
    const toWrite = [...last.values()].filter((i) => !(this.view.visibleCrash.has(i.id) && this.mirror.texts.get(i.key) === i.value));
    await this.writeInChunks(toWrite, 'saving crash counts', ttlMs);
    const written = new Set(toWrite);
    // A put that changed nothing in etcd is still a put: it is reported, as the memory store does.
    this.view.emit(items.filter((i) => !written.has(i)).map((i) => ({ kind: 'crash', key: i.id, app: i.app })));
  }

  async putMessages(kind: 'start' | 'stop', items: { id: string; message: PendingStart | PendingStop }[], under: string, doing: string): Promise<void> {
    const view = kind === 'start' ? this.view.starts : this.view.stops;
    const encoded = items.map(({ id, message }) => ({ id, key: under + id, value: encodeMessage(message), app: appKey(message.app, message.version) }));
    // The last put of a key in one call wins, as with consecutive puts.
    const last = new Map(encoded.map((e) => [e.key, e]));
    const toWrite = [...last.values()].filter((e) => !(view.has(e.id) && this.mirror.texts.get(e.key) === e.value));
    await this.writeInChunks(toWrite, doing);
    const written = new Set(toWrite);
    // A put that changed nothing in etcd is still a put: it is reported, as the memory store does.
    this.view.emit(encoded.filter((e) => !written.has(e)).map((e) => ({ kind, key: e.id, app: e.app })));
  }

  async bumpFreshness(which: FreshnessKind, ttlMs: number): Promise<void> {
    const now = this.opts.clock.now();
    const current = this.view.freshness.get(which);
    const key = this.keys.fresh + which;
    const value = encodeFreshness({ timestamp: current?.timestamp ?? now, expiresAt: now + ttlMs });
    if (current !== undefined && this.mirror.texts.get(key) === value) {
      this.view.emit([{ kind: 'freshness', which }]);
      return;
    }
    await this.writeInChunks([{ key, value }], `bumping ${which} freshness`, ttlMs);
  }

  /** Puts keys (on a shared lease when `ttlMs` is given), in transactions of at most 128. */
  async writeInChunks(items: readonly { key: string; value: string }[], doing: string, ttlMs?: number): Promise<void> {
    for (let i = 0; i < items.length; i += MAX_TXN_OPS) {
      const slice = items.slice(i, i + MAX_TXN_OPS);
      const ops = (lease?: string): WriteOp[] => slice.map((it) => ({ key: it.key, value: it.value, lease }));
      if (ttlMs === undefined) {
        const res = await this.requests.commit(ops(), doing);
        this.mirror.applyResult(res, ops());
      } else {
        const { value: res, lease } = await this.opts.leases.withLease(ttlMs, (l) => this.requests.commit(ops(l), doing));
        this.mirror.applyResult(res, ops(lease));
      }
    }
  }

  async deleteInChunks(keys: readonly string[], doing: string): Promise<void> {
    const unique = [...new Set(keys)];
    for (let i = 0; i < unique.length; i += MAX_TXN_OPS) {
      const ops = unique.slice(i, i + MAX_TXN_OPS).map((key) => ({ key }));
      const res = await this.requests.commit(ops, doing);
      this.mirror.applyResult(res, ops);
    }
  }
}
