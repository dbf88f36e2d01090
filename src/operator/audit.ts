/**
 * The decision audit: every start and stop the engine decided (enqueued), sent, or held back (not
 * fresh, dropped by verification, over the message limit, shadow mode, failed send), with its
 * reason and the facts behind it, kept in a bounded ring in memory so an operator can ask "why was
 * this app started?" (/v1/apps/:guid, /v1/decisions) after the fact.
 */

export type DecisionOutcome = 'enqueued' | 'sent' | 'suppressed';
export type SuppressedWhy = 'not_fresh' | 'verification' | 'message_limit' | 'shadow' | 'send_failed' | 'expired';

export interface DecisionInput {
  at: number;
  action: 'start' | 'stop';
  outcome: DecisionOutcome;
  /** Why it was held back (outcome suppressed). */
  why?: SuppressedWhy;
  /** The rule's reason: MISSING, CRASHED, EXTRA, DUPLICATE, EVACUATING, … */
  reason: string;
  /** A sentence: what the rule saw, or why it was held back. */
  detail?: string;
  app: string;
  version: string;
  index?: number;
  instance?: string;
  message_id: string;
  facts: Record<string, unknown>;
}

export interface DecisionRecord extends DecisionInput {
  /** Increases by one per record, so a reader can tell what it has seen. */
  seq: number;
  time: string;
}

export interface DecisionQuery {
  /** Only records at or after this clock time (ms). */
  since?: number;
  /** At most this many; with `since` the oldest after it, without it the newest. */
  limit?: number;
  app?: string;
}

export const DEFAULT_AUDIT_CAPACITY = 10_000;

export class DecisionAudit {
  private readonly ring: (DecisionRecord | undefined)[];
  /** Index of the oldest record. */
  private head = 0;
  private count = 0;
  private seq = 0;
  /** Enqueue records still in the ring, by message id. */
  private readonly byMessage = new Map<string, DecisionRecord>();

  constructor(readonly capacity = DEFAULT_AUDIT_CAPACITY) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`DecisionAudit: capacity must be a positive integer, got ${capacity}`);
    this.ring = new Array<DecisionRecord | undefined>(capacity);
  }

  get size(): number {
    return this.count;
  }

  record(d: DecisionInput): DecisionRecord {
    const r: DecisionRecord = { seq: ++this.seq, time: new Date(d.at).toISOString(), ...d };
    if (this.count < this.capacity) {
      this.ring[(this.head + this.count) % this.capacity] = r;
      this.count++;
    } else {
      const evicted = this.ring[this.head]!;
      if (this.byMessage.get(evicted.message_id) === evicted) this.byMessage.delete(evicted.message_id);
      this.ring[this.head] = r;
      this.head = (this.head + 1) % this.capacity;
    }
    if (r.outcome === 'enqueued' && r.message_id !== '') this.byMessage.set(r.message_id, r);
    return r;
  }

  /** Oldest first. */
  private *all(): Generator<DecisionRecord> {
    for (let i = 0; i < this.count; i++) yield this.ring[(this.head + i) % this.capacity]!;
  }

  /** Matching records, oldest first (see DecisionQuery for which ones `limit` keeps). */
  list(q: DecisionQuery = {}): DecisionRecord[] {
    const limit = q.limit ?? this.capacity;
    const out: DecisionRecord[] = [];
    if (q.since !== undefined) {
      for (const r of this.all()) {
        if (r.at < q.since || (q.app !== undefined && r.app !== q.app)) continue;
        out.push(r);
        if (out.length >= limit) break;
      }
      return out;
    }
    for (let i = this.count - 1; i >= 0 && out.length < limit; i--) {
      const r = this.ring[(this.head + i) % this.capacity]!;
      if (q.app === undefined || r.app === q.app) out.push(r);
    }
    return out.reverse();
  }

  /** Records newer than `seq` (this daemon's own numbering), oldest first: what to persist next. */
  after(seq: number): DecisionRecord[] {
    const out: DecisionRecord[] = [];
    for (const r of this.all()) if (r.seq > seq) out.push(r);
    return out;
  }

  /** The latest seq given out. */
  get lastSeq(): number {
    return this.seq;
  }

  /**
   * Takes in records another daemon persisted (a new leader reading its predecessor's), older than
   * any of its own: they are renumbered here and keep their time, facts and message ids.
   */
  adopt(records: readonly DecisionInput[]): number {
    const mine = [...this.all()];
    const known = new Set(mine.map((r) => `${r.message_id}|${r.outcome}|${r.at}`));
    const theirs = records.filter((r) => !known.has(`${r.message_id}|${r.outcome}|${r.at}`));
    if (theirs.length === 0) return 0;
    this.head = 0;
    this.count = 0;
    this.byMessage.clear();
    for (const r of [...theirs, ...mine].sort((a, b) => a.at - b.at)) {
      const { seq: _s, time: _t, ...input } = r as DecisionRecord;
      this.record(input);
    }
    return theirs.length;
  }

  /** The enqueue record of a message, if still in the ring (for the facts of its later send). */
  enqueued(messageId: string): DecisionRecord | undefined {
    return this.byMessage.get(messageId);
  }
}
