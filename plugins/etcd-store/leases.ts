/**
 * Shared etcd leases, one per (lifetime class, time bucket), so 10 000 agents saved within the
 * same few seconds share one lease instead of holding 10 000.
 *
 * A key that must live at least `life` (whole seconds, rounded up, at least 1) goes on the current
 * lease of that class. A lease of class `life` is granted with TTL `life + bucket`, where
 * `bucket = ceil(life / 8)`, and is handed out only during the first `bucket` seconds after it was
 * requested: every key put on it therefore lives at least `life` more seconds, and at most
 * `life + bucket`. Leases are never kept alive — a key lives on by being put again on a newer
 * lease — so a class has about 9 leases alive at a time, whatever the number of keys, and one
 * LeaseGrant per bucket (an agent class of 90 s: one grant per 12 s).
 *
 * Real time (Date.now) is used here on purpose: etcd runs leases on its own clock, whatever clock
 * the store computes record deadlines with.
 *
 * Below the pool: how long an agent's keys live and vouch for it, in multiples of its ttl (README.md
 * explains the numbers).
 */
import { chunkOf } from './keys.js';

export interface PooledLease {
  /** The lease id, as etcd3 returns it (a decimal string). */
  id: string;
  ttlSeconds: number;
  /** Real time (ms) before which etcd does not expire it: the grant was asked for no earlier than ttl before. */
  until: number;
}

interface Slot {
  lease: PooledLease;
  /** Real time up to which keys needing this class's life may go on it. */
  usableUntil: number;
}

export class LeasePool {
  private readonly slots = new Map<number, Slot>();
  private readonly pending = new Map<number, Promise<PooledLease>>();
  /** Leases granted so far (for tests and metrics). */
  granted = 0;

  constructor(
    private readonly grant: (ttlSeconds: number) => Promise<string>,
    private readonly now: () => number = Date.now,
  ) {}

  /** Whole seconds a key needing `lifeMs` must be able to live. */
  static lifeSeconds(lifeMs: number): number {
    return Math.max(1, Math.ceil(lifeMs / 1000));
  }

  static bucketSeconds(lifeSeconds: number): number {
    return Math.max(1, Math.ceil(lifeSeconds / 8));
  }

  /** A lease on which a key put now lives at least `lifeMs`. */
  async leaseFor(lifeMs: number): Promise<PooledLease> {
    const life = LeasePool.lifeSeconds(lifeMs);
    for (let attempt = 0; ; attempt++) {
      const slot = this.slots.get(life);
      if (slot && this.now() <= slot.usableUntil) return slot.lease;
      let p = this.pending.get(life);
      if (!p) {
        p = this.grantFor(life).finally(() => this.pending.delete(life));
        this.pending.set(life, p);
      }
      const lease = await p;
      // A grant slower than the bucket leaves too little life for keys put now: ask again.
      if (attempt >= 2 || this.now() <= (this.slots.get(life)?.usableUntil ?? 0)) return lease;
    }
  }

  /** Forget a lease etcd no longer knows (revoked or expired early), so the next put gets a new one. */
  forget(id: string): void {
    for (const [life, slot] of this.slots) if (slot.lease.id === id) this.slots.delete(life);
  }

  forgetAll(): void {
    this.slots.clear();
  }

  /** Runs `write` with a lease on which a key lives at least `lifeMs`; a lease etcd has lost is replaced once. */
  async withLease<T>(lifeMs: number, write: (lease: string) => Promise<T>): Promise<{ value: T; lease: string }> {
    for (let attempt = 1; ; attempt++) {
      const { id } = await this.leaseFor(lifeMs);
      try {
        return { value: await write(id), lease: id };
      } catch (err) {
        if (attempt >= 2 || !isLeaseLost(err)) throw err;
        this.forget(id);
      }
    }
  }

  private async grantFor(life: number): Promise<PooledLease> {
    const bucket = LeasePool.bucketSeconds(life);
    const ttlSeconds = life + bucket;
    // Taken before the request: etcd starts the TTL no earlier than this.
    const requestedAt = this.now();
    const id = await this.grant(ttlSeconds);
    this.granted++;
    const lease = { id, ttlSeconds, until: requestedAt + ttlSeconds * 1000 };
    this.slots.set(life, { lease, usableUntil: requestedAt + bucket * 1000 });
    return lease;
  }
}

/** Whether a request failed because etcd no longer knows a lease it names (revoked, or expired early). */
export function isLeaseLost(err: unknown): boolean {
  return /lease not found/i.test((err as Error).message);
}

// --- how long an agent's keys live ---

/** An agent write vouches for its presence this many ttls beyond the saved deadline. */
export const VOUCH_EXTRA_TTLS = 2;
/** A record is written again once per this many ttls (its deltas folded in), each agent at its own phase. */
const RECORD_PERIOD_TTLS = 8;
/** A record's lease: its period, the 3 ttls its last delta vouches ahead, and one ttl to spare. */
export const RECORD_LEASE_TTLS = RECORD_PERIOD_TTLS + 1 + VOUCH_EXTRA_TTLS + 1;

/** How often every agent record is written again (the periodic compaction of its delta), for an agent ttl of `ttlMs`. */
export function recordPeriodMs(ttlMs: number): number {
  return RECORD_PERIOD_TTLS * ttlMs;
}

/**
 * Whether a record written at `writtenAt` (real ms) is due again: once per period, when real time
 * crosses the agent's phase in it. Phases are spread by a hash of the agent, so records written in
 * the same save (all of them, at start) are rewritten evenly over the period, not all at once.
 */
export function recordDue(agent: string, writtenAt: number, realNow: number, ttlMs: number): boolean {
  const period = recordPeriodMs(ttlMs);
  const phase = (chunkOf(agent, 4096) / 4096) * period;
  return Math.floor((realNow + phase) / period) > Math.floor((writtenAt + phase) / period);
}
