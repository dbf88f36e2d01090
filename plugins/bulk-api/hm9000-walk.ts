/**
 * HM9000's desired-state fetch (docs/hm9000.md#desired-state): the bulk API walked page by page
 * with a raw JSON token, the apps that should run kept, and only after the final empty page the
 * desired state replaced in the store and desired freshness bumped. Any failure, or the whole
 * fetch taking longer than `timeout`, abandons the walk and touches nothing: the freshness marker
 * simply expires. Fetches never overlap: a second caller joins the one under way.
 */
import { appKey, type AppKey, counted, type DesiredApp, errorText, type StageContext } from '../../src/sdk/index.js';
import type { BulkCredentials } from './credentials.js';
import type { BulkApiOptions } from './options.js';
import { type FetchOutcome, type Outcomes, raise } from './outcomes.js';
import { bulkAppsPath, FIRST_TOKEN, parseBulkPage } from './page.js';
import { Abandoned, type CcRequests, ccErrorText, FetchFailure } from './requests.js';

export class Hm9000Walk {
  private inFlight: Promise<FetchOutcome> | undefined;
  /** The controller of the fetch under way, to abandon it on stop. */
  private current: AbortController | undefined;

  constructor(
    private readonly opts: Pick<BulkApiOptions, 'batch_size' | 'timeout'>,
    private readonly ctx: StageContext,
    private readonly requests: CcRequests,
    private readonly credentials: BulkCredentials,
    private readonly outcomes: Outcomes,
  ) {}

  /** One complete walk; concurrent calls share the one in progress. Never rejects. */
  fetch(): Promise<FetchOutcome> {
    this.inFlight ??= this.walk().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  /** The fetch under way, if any. */
  pending(): Promise<FetchOutcome> | undefined {
    return this.inFlight;
  }

  /** Abandons the fetch under way (it ends as `stopped`), unless it is already writing the store. */
  abort(): void {
    this.current?.abort(new Abandoned('stopped'));
  }

  private async walk(): Promise<FetchOutcome> {
    const { clock, logger, store, freshness } = this.ctx;
    const url = this.requests.url;
    const controller = new AbortController();
    this.current = controller;
    const started = clock.now();
    const deadline = clock.setTimeout(() => controller.abort(new Abandoned('timeout')), this.opts.timeout);
    let pages = 0;
    raise(this.ctx, { kind: 'walk', phase: 'start' });
    try {
      logger.debug({ url }, 'fetching desired state');
      const authorization = await this.credentials.forFetch(controller.signal);
      const apps = new Map<AppKey, DesiredApp>();
      let token = FIRST_TOKEN;
      for (;;) {
        pages++;
        const answer = await this.requests.get(bulkAppsPath(this.requests.basePath, this.opts.batch_size, token), authorization, controller.signal);
        if (answer.status === 401) throw new FetchFailure(this.credentials.unauthorized());
        if (answer.status !== 200) {
          throw new FetchFailure(`CC bulk API at ${url} answered ${answer.status} on page ${pages}${ccErrorText(answer.body)}`);
        }
        const page = parseBulkPage(answer.body);
        if (!page.ok) throw new FetchFailure(`CC bulk API at ${url} sent ${page.reason} (page ${pages})`);
        for (const app of page.kept) apps.set(appKey(app.guid, app.version), app);
        // Until the first complete fetch, progress is shown at info: on a large foundation the first
        // walk takes a while, and nothing is decided before it ends.
        logger[this.outcomes.completed ? 'debug' : 'info'](
          { page: pages, results: page.results, kept: page.kept.length, desired_so_far: apps.size },
          `desired state page ${pages}: ${counted(page.results, 'app')}, ${page.kept.length} kept, ${apps.size} desired so far`,
        );
        // The end of the walk is a 200 whose results are empty, not a null token (docs/hm9000.md#desired-state).
        if (page.done) break;
        if (page.nextToken === token) {
          throw new FetchFailure(`CC bulk API at ${url} sent bulk_token ${token} again on page ${pages}: the walk would never end`);
        }
        token = page.nextToken!;
      }
      // From here on the store is written: a timeout or stop no longer interrupts.
      if (controller.signal.aborted) throw controller.signal.reason;
      try {
        await store.replaceDesired(apps.values());
        await store.bumpFreshness('desired', freshness.desiredTtlMs);
      } catch (err) {
        throw new FetchFailure(`Failed to sync desired state to the store: ${errorText(err)}`);
      }
      // Event policies get the fetch once it is complete: the HM9000 walk is all or nothing.
      if (this.ctx.events.wants('desired')) for (const app of apps.values()) this.ctx.events.emit({ kind: 'desired', app });
      raise(this.ctx, { kind: 'walk', phase: 'done' });
      this.outcomes.setAvailable(true);
      return this.outcomes.succeeded(apps.size, pages, started);
    } catch (err) {
      if (err instanceof Abandoned && err.why === 'stopped') {
        logger.debug({ pages }, 'desired-state fetch abandoned: stopping');
        return { result: 'stopped' };
      }
      let reason: string;
      if (err instanceof Abandoned) {
        reason = `timed out: the desired-state fetch from ${url} took longer than ${this.opts.timeout}ms (sources.${this.ctx.id}.timeout) and was abandoned on page ${pages}`;
      } else if (err instanceof FetchFailure) {
        reason = err.message;
      } else {
        reason = `desired-state fetch from ${url} failed: ${errorText(err)}`;
      }
      this.outcomes.setAvailable(false);
      return this.outcomes.failed(reason, pages, started);
    } finally {
      clock.clearTimeout(deadline);
      if (this.current === controller) this.current = undefined;
    }
  }
}
