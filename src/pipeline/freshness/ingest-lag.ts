/**
 * How far the stored actual state is behind the agents, measured on this daemon's own clock (an
 * agent's clock is never trusted). Three signs, the worst one counts:
 *
 * - sources report their own lag: heartbeats received but not yet saved, and how long a probe
 *   message takes to come back through the bus (it queues behind every heartbeat not yet read);
 * - arrivals slower than the agents send: each agent heartbeats every interval, so when the gaps
 *   between one agent's heartbeats average more than that, heartbeats are held back somewhere on
 *   the way (a publisher throttled by the bus for this daemon's sake, a socket that is not read).
 *   What that adds up to over one window is the lag it stands for.
 *
 * A state that far behind is not fresh: instances would look missing while they run.
 */
import type { IngestLag, LagProbe } from '../../sdk/freshness.js';

export interface IngestLagOptions {
  /** The agents' heartbeat interval. */
  intervalMs: number;
  /** Lag beyond this revokes actual freshness; 0 switches the check off. */
  maxLagMs: number;
  /** The span over which arrival gaps are averaged (and their excess summed). */
  windowMs: number;
  /** A gap longer than this is a silence, not a slow arrival (the collapse guard's business). */
  silentAfterMs: number;
}

/** Fewer gaps than this in a window say nothing about a rate. */
const MIN_GAPS = 20;
/** An instant lag below this may be the daemon's own pause, not ingest behind (see evaluate). */
export const MIN_INSTANT_LAG_MS = 1_000;

export class IngestLagMeter {
  private readonly probes = new Map<string, LagProbe>();
  /** Arrival gaps summed per window: the current one and the one before. */
  private buckets = [
    { start: 0, sum: 0, n: 0 },
    { start: 0, sum: 0, n: 0 },
  ];

  constructor(private readonly opts: IngestLagOptions) {}

  get maxLagMs(): number {
    return this.opts.maxLagMs;
  }

  /** A source registers how to read its lag; returns what removes it. */
  register(name: string, probe: LagProbe): () => void {
    this.probes.set(name, probe);
    return () => {
      if (this.probes.get(name) === probe) this.probes.delete(name);
    };
  }

  /** One agent heard at `now`, `before` being when it was heard last (undefined: first time). */
  arrival(now: number, before: number | undefined): void {
    if (before === undefined) return;
    const gap = now - before;
    if (gap <= 0 || gap > this.opts.silentAfterMs) return;
    const current = this.roll(now);
    current.sum += gap;
    current.n++;
  }

  /**
   * The worst lag past its bound now, or null. A source's lag (unsaved heartbeats, the bus probe)
   * is an instant reading that the daemon's own pauses (a garbage collection, a busy moment) also
   * move, so it counts only beyond MIN_INSTANT_LAG_MS too; slow arrivals are an average and count
   * beyond maxLagMs alone.
   */
  evaluate(now: number): IngestLag | null {
    if (this.opts.maxLagMs <= 0) return null;
    return this.worst(now, Math.max(this.opts.maxLagMs, MIN_INSTANT_LAG_MS), this.opts.maxLagMs);
  }

  /** The worst lag seen now, whatever its size (null: no sign of any). */
  measure(now: number): IngestLag | null {
    return this.worst(now, -Infinity, -Infinity);
  }

  /** The largest of the sources' lags above `instantAbove` and the arrival lag above `rateAbove`. */
  private worst(now: number, instantAbove: number, rateAbove: number): IngestLag | null {
    let worst: IngestLag | null = null;
    for (const probe of this.probes.values()) {
      const lag = probe();
      if (lag && lag.lagMs > instantAbove && (worst === null || lag.lagMs > worst.lagMs)) worst = lag;
    }
    const rate = this.arrivalLag(now);
    if (rate && rate.lagMs > rateAbove && (worst === null || rate.lagMs > worst.lagMs)) worst = rate;
    return worst;
  }

  /** The lag that slow arrivals add up to over one window, from the last two windows' gaps. */
  private arrivalLag(now: number): IngestLag | null {
    this.roll(now);
    const [a, b] = this.buckets;
    const n = a!.n + b!.n;
    if (n < MIN_GAPS) return null;
    const { intervalMs, windowMs } = this.opts;
    const mean = (a!.sum + b!.sum) / n;
    const excess = mean - intervalMs;
    if (excess <= 0) return null;
    const lagMs = Math.round((excess * windowMs) / intervalMs);
    return {
      lagMs,
      cause: `heartbeats arrive every ${(mean / 1000).toFixed(1)}s on average per agent, not every ${(intervalMs / 1000).toFixed(1)}s: they are held back on the way in`,
    };
  }

  private roll(now: number): { start: number; sum: number; n: number } {
    const { windowMs } = this.opts;
    const current = this.buckets[0]!;
    if (now - current.start < windowMs) return current;
    const fresh = { start: now, sum: 0, n: 0 };
    // The window before is kept only if it ended just now; an older one says nothing of today.
    this.buckets = [fresh, now - current.start < 2 * windowMs ? current : { start: 0, sum: 0, n: 0 }];
    return fresh;
  }
}
