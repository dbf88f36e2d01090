/**
 * The `bulk-api` source: desired state from the Cloud Controller's bulk API. This class is the
 * stage: it checks the options, wires its parts, schedules the fetches on the stage's clock (only
 * the leader asks the CC) and answers for health and the desired-state capabilities.
 *
 * By default each fetch is HM9000's (hm9000-walk.ts): all or nothing, never overlapping, every
 * poll_interval from the start of the last. With `walk: ruby` it is the Ruby Health Manager's
 * (ruby-walk.ts): an update at start, every poll_interval and on refreshDesired(), overlapping one
 * still under way as the original's did. A failure is logged once and shown in /v1/status.
 *
 * Its parts: requests.ts (every request to the CC), credentials.ts (static or over NATS),
 * outcomes.ts (health, availability and the log of each fetch), metrics.ts, page.ts (the pure
 * reading of answers) and options.ts.
 */
import { DropReporter, errorText, type Stage, type StageContext, type StageHealth, type Timer } from '../../src/sdk/index.js';
import { BulkCredentials } from './credentials.js';
import { Hm9000Walk } from './hm9000-walk.js';
import type { BulkApiOptions } from './options.js';
import { type FetchOutcome, Outcomes } from './outcomes.js';
import { CcRequests, type Transport } from './requests.js';
import { type DesiredStats, noDesiredStats, RubyWalk } from './ruby-walk.js';

export { desiredFetchMetrics } from './metrics.js';
export type { FetchOutcome } from './outcomes.js';
export type { HttpAnswer, Transport } from './requests.js';
export { BULK_APPS_LABEL, MAX_CONSECUTIVE_ERRORS, type DesiredStats, type DesiredTotals } from './ruby-walk.js';

export interface BulkApiDeps {
  /** Replaces the undici Agent (tests that fuzz the walk in-process). */
  transport?: Transport;
}

export class BulkApiSource implements Stage {
  /** The configured URL with any password masked: the only form that reaches logs and reasons. */
  readonly url: string;
  private readonly requests: CcRequests;
  private readonly outcomes: Outcomes;
  /** The walk of this stage's mode; the other is undefined. */
  private readonly hm9000: Hm9000Walk | undefined;
  private readonly ruby: RubyWalk | undefined;
  private timer: Timer | undefined;
  /** The scheduled HM9000 run in progress (fetch and rescheduling). */
  private run: Promise<void> | undefined;
  private stopped = true;

  constructor(
    private readonly opts: BulkApiOptions & { credentials_subject: string },
    private readonly ctx: StageContext,
    deps: BulkApiDeps = {},
  ) {
    if (opts.forget_unseen && opts.walk !== 'ruby')
      throw new Error(`sources.${ctx.id}.forget_unseen needs walk: ruby (the HM9000 walk replaces the desired state whole anyway)`);
    this.requests = new CcRequests(opts, ctx, deps.transport);
    this.url = this.requests.url;
    this.outcomes = new Outcomes(ctx, this.url);
    // Made in either mode: it registers the dropped-messages counter that /metrics shows.
    const skipped = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    const credentials = new BulkCredentials(opts, ctx, this.url, this.outcomes);
    if (opts.walk === 'ruby') this.ruby = new RubyWalk(opts, ctx, this.requests, credentials, this.outcomes, skipped, () => this.stopped);
    else this.hm9000 = new Hm9000Walk(opts, ctx, this.requests, credentials, this.outcomes);
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    await this.requests.open();
    this.stopped = false;
    // The first fetch runs at once, but start() does not wait for it.
    if (this.ruby) this.scheduleUpdates(0);
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.ctx.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.hm9000?.abort();
    this.ruby?.abort();
    await this.run;
    await this.hm9000?.pending();
    await this.whenIdle();
    // Nothing is in flight any more: this only closes idle keep-alive connections.
    await this.requests.close();
  }

  health(): StageHealth {
    return { healthy: this.outcomes.lastError === null, last_error: this.outcomes.lastError };
  }

  /** Resolves once the scheduled fetch in progress (if any) has finished and the next is set; walk: ruby, once no update is under way. */
  async whenIdle(): Promise<void> {
    if (this.ruby) return this.ruby.idle();
    return this.run ?? Promise.resolve();
  }

  /**
   * Resolves once the fetches in flight have ended (a manual clock waits for them before moving on,
   * as the Ruby HM's black-box mode made its bulk requests synchronous).
   */
  async settled(): Promise<void> {
    const inFlight = this.hm9000?.pending();
    await Promise.allSettled([...(this.ruby?.pending() ?? []), ...(inFlight ? [inFlight] : [])]);
  }

  /**
   * One complete walk of the bulk API. Never rejects. Concurrent calls share the walk in progress,
   * so fetches never overlap. walk: ruby: one more update (counts and walk), whatever is under way.
   */
  fetchOnce(): Promise<FetchOutcome> {
    return this.ruby ? this.ruby.update() : this.hm9000!.fetch();
  }

  /**
   * Fetch everything again now (an app changed in the CC). walk: ruby starts a full update at
   * once even while another walks, as the Ruby HM did on droplet.updated: each walk has its own
   * token and its own list of apps seen, so overlapping walks do not disturb each other, and the
   * sequence of requests the CC sees stays the original's. The HM9000 walk joins the fetch under
   * way instead.
   */
  async refreshDesired(): Promise<void> {
    if (this.stopped || !this.ctx.isLeader()) return;
    await this.fetchOnce();
  }

  /** The Ruby HM's `desired_state.available?`: the last exchange with the bulk API succeeded. */
  desiredAvailable(): boolean {
    return this.outcomes.available;
  }

  /** The Ruby HM's desired-state statistics, for its /varz (all null with the HM9000 walk). */
  desiredStats(): DesiredStats {
    return this.ruby ? this.ruby.desiredStats() : noDesiredStats();
  }

  /** The HM9000 poll loop: every poll_interval measured from the start of a fetch, never overlapping. */
  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = this.ctx.clock.setTimeout(() => {
      this.timer = undefined;
      const started = this.ctx.clock.now();
      // Only the leader asks the Cloud Controller; standbys read the desired state from the store.
      this.run = (this.ctx.isLeader() ? this.fetchOnce() : Promise.resolve())
        .then(
          () => undefined,
          (err: unknown) => this.ctx.logger.error({ error: errorText(err) }, `desired-state fetch crashed: ${errorText(err)}`),
        )
        .finally(() => {
          this.run = undefined;
          this.schedule(Math.max(0, started + this.opts.poll_interval - this.ctx.clock.now()));
        });
    }, delayMs);
  }

  /** walk: ruby: an update at once, then one every poll_interval: a fixed period, whatever the updates take. */
  private scheduleUpdates(delayMs: number): void {
    if (this.stopped) return;
    this.timer = this.ctx.clock.setTimeout(() => {
      this.timer = undefined;
      this.scheduleUpdates(this.opts.poll_interval);
      // Only the leader asks the Cloud Controller.
      if (this.ctx.isLeader()) void this.ruby!.update();
    }, delayMs);
  }
}
