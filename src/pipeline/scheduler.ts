/**
 * Runs a task every `intervalMs` on the injected clock: first run at once, never two at a time.
 * Each period is measured from the start of a run (HM9000's daemon loop); a run that takes longer
 * than the period is followed at once by the next and logged with its duration.
 *
 * A run's duration (stats, the warning, `onRun` and so hmgate_cycle_duration_seconds) is measured
 * on a monotonic clock, performance.now() unless another is injected: the engine's clock may move
 * in steps (time_resolution: 1s under the hm9000 preset), on which a cycle of a few milliseconds
 * would last 0 (or a whole step). Tests on a virtual clock inject its now().
 */
import type { Logger } from 'pino';
import { errorText } from '../log.js';
import type { Clock, Timer } from '../sdk/clock.js';

export interface SchedulerStats {
  runs: number;
  failures: number;
  overruns: number;
  lastStartedAt: number | null;
  lastDurationMs: number | null;
  lastError: string | null;
}

export class CycleScheduler {
  private timer: Timer | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  readonly stats: SchedulerStats = { runs: 0, failures: 0, overruns: 0, lastStartedAt: null, lastDurationMs: null, lastError: null };

  constructor(
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly task: () => Promise<void>,
    private readonly logger: Logger,
    private readonly onRun?: (durationMs: number, ok: boolean) => void,
    /** Milliseconds on a monotonic clock, for durations only; the periods stay on `clock`. */
    private readonly monotonicNow: () => number = () => performance.now(),
  ) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.running = this.runOnce().finally(() => (this.running = undefined));
    }, delay);
  }

  private async runOnce(): Promise<void> {
    const started = this.clock.now();
    const startedMonotonic = this.monotonicNow();
    this.stats.lastStartedAt = started;
    let ok = true;
    try {
      await this.task();
      this.stats.lastError = null;
    } catch (err) {
      ok = false;
      this.stats.failures++;
      this.stats.lastError = errorText(err);
      this.logger.error({ error: this.stats.lastError }, 'cycle failed; continuing');
    }
    const duration = this.monotonicNow() - startedMonotonic;
    this.stats.runs++;
    this.stats.lastDurationMs = duration;
    if (duration > this.intervalMs) {
      this.stats.overruns++;
      this.logger.warn(
        { duration_ms: duration, interval_ms: this.intervalMs },
        `cycle took ${Math.round(duration)}ms, longer than its ${this.intervalMs}ms interval`,
      );
    }
    this.onRun?.(duration, ok);
    this.schedule(Math.max(0, started + this.intervalMs - this.clock.now()));
  }

  /** Stops scheduling and waits for a run in progress to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
