/**
 * What the source makes known of its fetches, whichever walk made them: health's last error and
 * the desired freshness reason (shown in /v1/status), whether desired state is available, the
 * fetch metrics and the log line of each outcome; and the walk events raised for the policies.
 */
import { counted, type PolicyEvent, type StageContext } from '../../src/sdk/index.js';
import { desiredFetchMetrics, type FetchMetrics } from './metrics.js';

export type FetchOutcome =
  | { result: 'ok'; apps: number; pages: number }
  | { result: 'failed'; reason: string }
  /** Abandoned because the stage stopped: not a failure. */
  | { result: 'stopped' };

/** Raises a walk's event for the event policies, if one handles its kind. */
export function raise(ctx: StageContext, event: PolicyEvent): void {
  const events = ctx.events;
  if (events.wants(event.kind)) events.emit(event);
}

export class Outcomes {
  readonly metrics: FetchMetrics;
  private failure: string | null = null;
  private answered = false;
  private anyComplete = false;

  constructor(
    private readonly ctx: StageContext,
    /** The masked base URL, for log lines. */
    private readonly url: string,
  ) {
    this.metrics = desiredFetchMetrics(ctx.metrics);
  }

  /** The reason of the last failure, until a fetch succeeds. */
  get lastError(): string | null {
    return this.failure;
  }

  /** HM9000 walk: the last fetch succeeded. walk: ruby: the last bulk API answer was a 200. */
  get available(): boolean {
    return this.answered;
  }

  /** Whether a fetch has completed (progress is logged at info until then). */
  get completed(): boolean {
    return this.anyComplete;
  }

  setAvailable(available: boolean): void {
    this.answered = available;
    this.metrics.available.set(available ? 1 : 0);
  }

  /** A complete fetch: the failure reason cleared, counted and logged. */
  succeeded(apps: number, pages: number, started: number, message?: string): FetchOutcome {
    const ms = this.ctx.clock.now() - started;
    this.anyComplete = true;
    this.failure = null;
    this.ctx.freshness.setReason('desired', null);
    this.metrics.fetches.inc({ result: 'ok' });
    this.metrics.duration.observe(ms / 1000);
    this.metrics.apps.set(apps);
    this.ctx.logger.info(
      { url: this.url, apps, pages, duration_ms: ms },
      message ?? `desired state fetched: ${counted(apps, 'app')} (${counted(pages, 'page')}, ${ms}ms)`,
    );
    return { result: 'ok', apps, pages };
  }

  failed(reason: string, pages: number, started: number): FetchOutcome {
    const ms = this.ctx.clock.now() - started;
    this.report(reason);
    this.metrics.fetches.inc({ result: 'failed' });
    this.metrics.duration.observe(ms / 1000);
    this.ctx.logger.error({ url: this.url, reason, pages, duration_ms: ms }, `desired-state fetch failed: ${reason}`);
    return { result: 'failed', reason };
  }

  /** A walk that ended without a failure of its own (no credentials): counted, already reported. */
  ended(reason: string, started: number): FetchOutcome {
    this.metrics.fetches.inc({ result: 'failed' });
    this.metrics.duration.observe((this.ctx.clock.now() - started) / 1000);
    return { result: 'failed', reason: reason };
  }

  /** A failure's reason, for health, the freshness board and /v1/status. */
  report(reason: string): void {
    this.failure = reason;
    this.ctx.freshness.setReason('desired', reason);
  }
}
