/**
 * The mirror: what etcd holds under the store's prefix, key by key, at the revision it was
 * written, decoded. Filled by ranges and kept current by the watch (watch.ts) and by the answers
 * of this store's own transactions.
 *
 * A change is applied only if it is newer than what the mirror holds for its key (a deleted key
 * keeps its revision as a tombstone until the watch has passed it). So this store's own writes,
 * applied from the transaction's answer, are skipped when the watch echoes them — before their
 * value is even decoded — and an event fires once whichever arrives first. Own agent writes carry
 * what they decode to, so applying them parses nothing. Every applied change goes on to the
 * visible state (view.ts), which owns the TTL rule and the events.
 */
import {
  appKey,
  type AppKey,
  type Clock,
  type CowMap,
  type DesiredApp,
  type FreshnessKind,
  type FreshnessMarker,
  type PendingStart,
  type PendingStop,
  type StoreChange,
} from '../../src/sdk/index.js';
import type { ICompare, ITxnResponse, IWatchResponse } from 'etcd3';
import {
  applyDelta,
  decodeAgent,
  decodeAgentDelta,
  decodeCrash,
  decodeDesiredChunk,
  decodeDesiredMeta,
  decodeFreshness,
  decodeMessage,
  type AgentDelta,
  type AgentValue,
  type CrashValue,
  type DesiredMeta,
} from './codec.js';
import { deltaKey, parseAgentKey, type Keys } from './keys.js';
import type { EtcdRequests, StoreLogger, WriteOp } from './requests.js';
import { VisibleState } from './view.js';

/** Tombstones are pruned once there are this many (only those the watch has passed). */
const TOMBSTONE_PRUNE_AT = 1_000;

/** The changes of one application to the mirror, and what is left to refresh once its keys are in. */
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
export interface RecordEntry {
  value: AgentValue;
  rev: number;
  lease: string;
  bytes: number;
}

/** A transaction etcd committed, and the operations it carried. */
export interface Committed {
  res: ITxnResponse;
  ops: WriteOp[];
}

export interface MirrorOptions {
  keys: Keys;
  writerId: string;
  clock: Clock;
  requests: EtcdRequests;
  logger?: StoreLogger;
  onListenerError?: (err: unknown, change: StoreChange) => void;
}

export class Mirror {
  /** What reads see: this mirror under the TTL rule. */
  readonly view: VisibleState;

  /** Each key's revision, and the revision at which deleted keys were deleted. */
  private readonly revs = new Map<string, number>();
  private readonly tombs = new Map<string, number>();
  /** Texts of the small keys (all but agents), to skip writes that would change nothing. */
  readonly texts = new Map<string, string>();
  /** Every change up to this revision under the prefix has been applied. */
  private watchRev = 0;

  /** Each agent's record and delta as etcd holds them, and the two merged (what reads see). */
  readonly agentRecords = new Map<string, RecordEntry>();
  readonly agentDeltas = new Map<string, { value: AgentDelta; rev: number }>();
  readonly agentsRaw = new Map<string, AgentValue>();
  /** When (real ms) this store last wrote each agent's record, for the periodic rewrite. */
  readonly recordWrittenAt = new Map<string, number>();
  readonly desiredChunks = new Map<number, DesiredApp[]>();
  desiredMeta: DesiredMeta | undefined;
  private readonly crashRaw = new Map<string, CrashValue>();
  private readonly freshRaw = new Map<FreshnessKind, FreshnessMarker>();

  /** Compare-and-deletes of expired keys in flight, by first key → the revisions they delete. */
  private readonly expiredDeletes = new Map<string, string>();
  /** Requests begun in the background, which stop() waits for. */
  readonly inflight = new Set<Promise<unknown>>();

  private readonly keys: Keys;
  private readonly requests: EtcdRequests;
  private readonly logger: StoreLogger | undefined;

  constructor(opts: MirrorOptions) {
    this.keys = opts.keys;
    this.requests = opts.requests;
    this.logger = opts.logger;
    this.view = new VisibleState({
      clock: opts.clock,
      keys: opts.keys,
      writerId: opts.writerId,
      stored: { agents: this.agentsRaw, crashes: this.crashRaw, freshness: this.freshRaw },
      deleteExpired: (keys) => this.deleteExpired(keys),
      isStopped: () => this.requests.stopped,
      onListenerError: opts.onListenerError,
    });
  }

  /** The revision of a key the mirror holds; 0 if it holds none. */
  revision(key: string): number {
    return this.revs.get(key) ?? 0;
  }

  // --- from etcd into the mirror ---

  /** Reads every key under `prefix` and makes the mirror of that part match; returns the revision read. */
  async refreshRange(prefix: string, doing: string): Promise<number> {
    const { kvs, revision } = await this.requests.rangeAll(prefix, doing);
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
    this.view.emit(out.changes);
    return revision;
  }

  /** The whole prefix was read at `revision`: the watch goes on from there. */
  readUpTo(revision: number): void {
    this.watchRev = Math.max(this.watchRev, revision);
    this.pruneTombstones();
  }

  /** One answer of the watch. */
  applyWatch(res: IWatchResponse): void {
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
    this.view.arm();
    this.view.emit(out.changes);
  }

  /** A tombstone is needed only until the watch has passed it. */
  private pruneTombstones(): void {
    for (const [key, rev] of this.tombs) if (rev <= this.watchRev) this.tombs.delete(key);
  }

  /** Applies a committed write at its revision (unless the watch already has) and emits. */
  applyResult(res: ITxnResponse, ops: readonly WriteOp[]): void {
    const out = newBatch();
    this.applyResultInto(res, ops, out);
    this.view.arm();
    this.view.emit(out.changes);
  }

  /** Applies committed agent writes, then refreshes `agents` (whose deadlines changed), and emits. */
  applyAgentWrites(committed: readonly Committed[], agents: Iterable<string>): void {
    const out = newBatch();
    for (const r of committed) this.applyResultInto(r.res, r.ops, out);
    for (const agent of agents) this.view.refreshAgent(agent, out.changes);
    this.view.arm();
    this.view.emit(out.changes);
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
    this.view.desired = next;
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
    const agentKey = kind === 'agent' ? parseAgentKey(k, key) : undefined;
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
          this.applyMessage('start', this.view.starts, key.slice(k.starts.length), text, out.changes);
          break;
        case 'stop':
          this.applyMessage('stop', this.view.stops, key.slice(k.stops.length), text, out.changes);
          break;
        case 'fresh':
          this.applyFresh(key.slice(k.fresh.length), text, out.changes);
          break;
      }
    } catch (err) {
      this.logger?.warn({ key, error: (err as Error).message }, `ignoring unreadable key ${key}: ${(err as Error).message}`);
    }
  }

  /** (An unreadable record or delta counts as absent; the caller logs why.) */
  private applyAgentRecord(agent: string, text: string | undefined, rev: number, lease: string, decoded?: AgentValue): void {
    this.agentRecords.delete(agent);
    if (text !== undefined) this.agentRecords.set(agent, { value: decoded ?? decodeAgent(agent, text), rev, lease, bytes: text.length });
    else {
      this.view.ownDeadline.delete(agent);
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
      if (delta !== undefined) this.deleteExpired([deltaKey(this.keys, agent)]);
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
    this.view.refreshAgent(agent, out);
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
        this.view.refreshCrash(id, out);
        throw err;
      }
    }
    this.view.refreshCrash(id, out);
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
        this.view.refreshFresh(name, out);
        throw err;
      }
    }
    this.view.refreshFresh(name, out);
  }

  /**
   * Deletes the keys of an expired record in the background — only if nobody wrote any of them
   * since (compare on their revisions; an absent key must still be absent). If it fails, the
   * keys' lease removes them later.
   */
  deleteExpired(keys: readonly string[]): void {
    const revs = keys.map((key) => this.revs.get(key) ?? 0);
    const id = revs.join('/');
    if (revs.every((r) => r === 0) || this.expiredDeletes.get(keys[0]!) === id || !this.requests.etcd || this.requests.stopped) return;
    this.expiredDeletes.set(keys[0]!, id);
    const ops: WriteOp[] = keys.map((key) => ({ key }));
    const compare: ICompare[] = keys.map((key, i) => ({ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: revs[i]! }));
    const stats = this.requests.stats;
    const p = this.requests
      .call('deleting an expired key', (c) =>
        c.kv.txn({ compare, success: keys.map((key) => ({ request_delete_range: { key: Buffer.from(key) } })), failure: [] }),
      )
      .then((res) => {
        stats.txns++;
        stats.expiredDeletes++;
        stats.deletes += keys.length;
        if (res.succeeded && !this.requests.stopped) this.applyResult(res, ops);
      })
      .catch((err: unknown) => this.logger?.debug({ keys, error: (err as Error).message }, 'deleting an expired key failed; its lease will'))
      .finally(() => {
        if (this.expiredDeletes.get(keys[0]!) === id) this.expiredDeletes.delete(keys[0]!);
        this.inflight.delete(p);
      });
    this.inflight.add(p);
  }
}
