/**
 * Leadership follows the ability to act. Holding the etcd lease proves only that a daemon reaches
 * etcd; the leader also has to hear heartbeats and send starts and stops (NATS) and save what it
 * hears. A daemon that cannot do that itself must not keep the lease from one that can.
 *
 * LeaderFitness evaluates a few checks now and then and tells the Leadership whether this daemon
 * may lead (setEligible):
 * - a standby campaigns only while every check passes (a daemon that never reached NATS never
 *   campaigns);
 * - a leader resigns once a check has failed for longer than `resignAfterMs` (brief blips are
 *   ridden out), and campaigns again once the check passes.
 *
 * Some work only the leader does (saving heartbeats): a standby cannot tell whether it would fail.
 * Such a check (`whileLeading`) counts only while leading; a daemon that resigned for it stays out
 * of the election for a hold-off (resignAfterMs, doubling with each such resignation, reset once
 * the work succeeds) and then tries again. When every daemon fails the same way, leadership then
 * moves slowly rather than flapping.
 *
 * Only what is this daemon's own belongs here: a dependency every daemon shares (the CC) is no
 * reason to hand over, since the next leader would fare no better.
 */
import type { LeaderLogger, Leadership } from '../../sdk/leadership.js';

export interface FitnessCheck {
  /** Why this daemon cannot do this part of the leader's work now; null while it can. */
  problem(): string | null;
  /** Work only a leader does: counted only while leading (see above). */
  whileLeading?: boolean;
}

export interface LeaderFitnessOptions {
  leadership: Leadership;
  checks: readonly FitnessCheck[];
  /** How long a leader may fail a check before it resigns (leader.resign_after). */
  resignAfterMs: number;
  logger: LeaderLogger;
  /** How often the checks run; default resignAfterMs / 4, within 100 ms .. 1 s. */
  intervalMs?: number;
  /** The longest hold-off after resigning for a whileLeading check; default 16 × resignAfterMs. */
  maxHoldOffMs?: number;
  /** Real time (leadership is about real time even under a manual clock). */
  now?: () => number;
}

function seconds(ms: number): string {
  return `${Math.round(ms / 100) / 10}s`;
}

export class LeaderFitness {
  private readonly failingSince = new Map<FitnessCheck, number>();
  private readonly now: () => number;
  private readonly intervalMs: number;
  private readonly maxHoldOffMs: number;
  private holdOffMs: number;
  private holdUntil = 0;
  private holdWhy = '';
  private timer: ReturnType<typeof setTimeout> | undefined;
  private readonly startedAt: number;
  private everEligible = false;
  /** Whether the current stretch out of the election has been logged. */
  private saidUnfit = false;

  constructor(private readonly opts: LeaderFitnessOptions) {
    if (!(opts.resignAfterMs > 0)) throw new RangeError(`leader fitness: resignAfterMs must be > 0, got ${opts.resignAfterMs}`);
    this.now = opts.now ?? Date.now;
    this.intervalMs = opts.intervalMs ?? Math.max(100, Math.min(1000, opts.resignAfterMs / 4));
    this.maxHoldOffMs = opts.maxHoldOffMs ?? 16 * opts.resignAfterMs;
    this.holdOffMs = opts.resignAfterMs;
    this.startedAt = this.now();
  }

  /** Evaluates now, then every intervalMs until stop(). */
  start(): void {
    if (this.timer) return;
    const loop = (): void => {
      this.evaluate();
      this.timer = setTimeout(loop, this.intervalMs);
      this.timer.unref?.();
    };
    loop();
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Runs the checks once and tells the leadership what follows. */
  evaluate(): void {
    const { leadership, resignAfterMs, logger } = this.opts;
    const now = this.now();
    const leading = leadership.isLeader;
    let resign: string | undefined;
    let unfit: string | undefined;
    for (const check of this.opts.checks) {
      if (check.whileLeading && !leading) {
        // Whatever it last saw as leader is stale: a new term starts with a clean slate.
        this.failingSince.delete(check);
        continue;
      }
      const problem = this.ask(check);
      if (problem === null) {
        this.failingSince.delete(check);
        if (check.whileLeading) this.holdOffMs = resignAfterMs;
        continue;
      }
      const since = this.failingSince.get(check) ?? now;
      this.failingSince.set(check, since);
      unfit ??= problem;
      if (leading && resign === undefined && now - since >= resignAfterMs) {
        resign = `${problem} for ${seconds(now - since)}, longer than leader.resign_after (${seconds(resignAfterMs)})`;
        if (check.whileLeading) {
          this.holdUntil = now + this.holdOffMs;
          this.holdWhy = `${problem}; a standby cannot tell whether it would succeed, so it campaigns again in ${seconds(this.holdOffMs)}`;
          this.holdOffMs = Math.min(this.maxHoldOffMs, this.holdOffMs * 2);
        }
      }
    }
    if (resign !== undefined) {
      // The engine logs the loss of leadership with this reason: that is the one line.
      this.saidUnfit = true;
      leadership.setEligible(false, resign);
      return;
    }
    // A leader failing a check for less than resign_after stays.
    if (leading) return;
    if (unfit === undefined && now < this.holdUntil) unfit = this.holdWhy;
    if (unfit !== undefined) {
      // At start-up NATS is not connected yet: that is worth a line only once it lasts.
      if (!this.saidUnfit && (this.everEligible || now - this.startedAt >= resignAfterMs)) {
        this.saidUnfit = true;
        logger.warn({ reason: unfit }, `not a candidate for leadership: ${unfit}`);
      }
      leadership.setEligible(false, unfit);
      return;
    }
    if (this.saidUnfit) logger.info({}, 'fit to lead again: campaigning for leadership');
    this.saidUnfit = false;
    this.everEligible = true;
    leadership.setEligible(true);
  }

  private ask(check: FitnessCheck): string | null {
    try {
      return check.problem();
    } catch (err) {
      return `fitness check failed: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
}
