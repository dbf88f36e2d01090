/**
 * The Ruby Health Manager's desired state (walk: ruby). An update is user counts (user_counts)
 * beside one whole walk; updates may overlap, each walk with its own token and its own apps seen.
 * Every app of a page is handed to the event policies as the page arrives (their records are the
 * memory, so an app missing from a walk is not forgotten there), any answer of the bulk API sets
 * whether desired state is available, and transport errors are retried at once up to
 * MAX_CONSECUTIVE_ERRORS in a row. The store still gets, after each complete walk, the apps that
 * should run, so that dump, status and the freshness gate read what they read with HM9000. The
 * walk's totals are the Ruby HM's varz statistics.
 */
import { appKey, type AppKey, counted, type DesiredApp, DropReporter, errorText, type StageContext } from '../../src/sdk/index.js';
import type { BulkCredentials } from './credentials.js';
import type { BulkApiOptions } from './options.js';
import { type FetchOutcome, type Outcomes, raise } from './outcomes.js';
import { FIRST_TOKEN, parseRubyPage, parseUserCount, rubyAppsPath, userCountsPath } from './page.js';
import { Abandoned, type CcRequests, ccErrorText, FetchFailure, type HttpAnswer } from './requests.js';

/** Consecutive transport errors of /bulk/apps after which desired state is unavailable (the Ruby HM's 10). */
export const MAX_CONSECUTIVE_ERRORS = 10;

/** The drop-counter label of apps a walk: ruby page reported but could not be taken. */
export const BULK_APPS_LABEL = 'cc:/bulk/apps';

/** The Ruby HM's desired-state statistics (its varz `total`), summed over a walk's apps. */
export interface DesiredTotals {
  apps: number;
  started_apps: number;
  instances: number;
  started_instances: number;
  /** Σ memory × instances, in CC's unit (MB). */
  memory: number;
  started_memory: number;
}

export interface DesiredStats {
  /** `counts.user` of the last good /bulk/counts answer; null before one. */
  totalUsers: number | null;
  /** The totals as of the last complete walk (null before one). */
  total: DesiredTotals | null;
  /** Seconds from the start of the last update to the end of its complete walk. */
  bulkUpdateLoopDurationS: number | null;
}

export const noDesiredStats = (): DesiredStats => ({ totalUsers: null, total: null, bulkUpdateLoopDurationS: null });

const zeroTotals = (): DesiredTotals => ({ apps: 0, started_apps: 0, instances: 0, started_instances: 0, memory: 0, started_memory: 0 });

/** Apps that should run, as HM9000's walk keeps them (and as the store's desired set holds them). */
function shouldRun(app: DesiredApp): boolean {
  return app.state === 'STARTED' && (app.packageState === 'STAGED' || app.packageState === 'PENDING');
}

export class RubyWalk {
  /** Updates under way (they may overlap). */
  private readonly updates = new Set<Promise<FetchOutcome>>();
  /** Every walk and counts request under way, to abort them on stop. */
  private readonly controllers = new Set<AbortController>();
  /** Consecutive transport errors of /bulk/apps, across walks; any answer resets it. */
  private consecutiveErrors = 0;
  private totals = zeroTotals();
  private totalsResetAt = 0;
  private stats = noDesiredStats();

  constructor(
    private readonly opts: Pick<BulkApiOptions, 'batch_size' | 'user_counts' | 'forget_unseen'>,
    private readonly ctx: StageContext,
    private readonly requests: CcRequests,
    private readonly credentials: BulkCredentials,
    private readonly outcomes: Outcomes,
    /** Counts and logs the apps a page reported but could not be taken. */
    private readonly skipped: DropReporter,
    /** Whether the source is stopped: requests started then are abandoned at once. */
    private readonly stopped: () => boolean,
  ) {}

  /** One update: user counts (user_counts) beside a whole walk. Never rejects. */
  update(): Promise<FetchOutcome> {
    const run = this.runUpdate()
      .catch((err: unknown): FetchOutcome => {
        this.ctx.logger.error({ error: errorText(err) }, `desired-state update crashed: ${errorText(err)}`);
        return { result: 'failed', reason: errorText(err) };
      })
      .finally(() => this.updates.delete(run));
    this.updates.add(run);
    return run;
  }

  /** The updates under way. */
  pending(): Promise<FetchOutcome>[] {
    return [...this.updates];
  }

  /** Resolves once no update is under way, including those started meanwhile. */
  async idle(): Promise<void> {
    while (this.updates.size > 0) await Promise.all(this.updates);
  }

  /** Abandons every walk and counts request under way (they end as `stopped`). */
  abort(): void {
    for (const c of this.controllers) c.abort(new Abandoned('stopped'));
  }

  desiredStats(): DesiredStats {
    return { ...this.stats, total: this.stats.total && { ...this.stats.total } };
  }

  private async runUpdate(): Promise<FetchOutcome> {
    // Both start now and run side by side; the counts request goes out first.
    const counts = this.opts.user_counts ? this.userCounts() : undefined;
    this.totals = zeroTotals();
    this.totalsResetAt = this.ctx.clock.now();
    const walk = this.walk();
    await counts;
    return walk;
  }

  private track(): AbortController {
    const c = new AbortController();
    this.controllers.add(c);
    if (this.stopped()) c.abort(new Abandoned('stopped'));
    return c;
  }

  /** GET /bulk/counts?model=user: its answer sets availability; any failure also drops the credentials. Not retried. */
  private async userCounts(): Promise<void> {
    const { logger } = this.ctx;
    const url = this.requests.url;
    const controller = this.track();
    const path = userCountsPath(this.requests.basePath);
    try {
      const authorization = await this.credentials.forRequest(controller.signal);
      if (authorization === null) return;
      let answer: HttpAnswer;
      try {
        answer = await this.requests.get(path, authorization, controller.signal);
      } catch (err) {
        if (err instanceof Abandoned) return;
        this.outcomes.setAvailable(false);
        this.credentials.drop();
        const reason = `${err instanceof FetchFailure ? err.message : errorText(err)} (on /bulk/counts; credentials dropped)`;
        this.outcomes.report(reason);
        logger.error({ url, path, reason }, `user counts failed: ${reason}`);
        return;
      }
      if (answer.status !== 200) {
        this.outcomes.setAvailable(false);
        this.credentials.drop();
        const reason =
          answer.status === 401
            ? `${this.credentials.unauthorized()} (on /bulk/counts; credentials dropped)`
            : `CC bulk API at ${url} answered ${answer.status} to /bulk/counts${ccErrorText(answer.body)}; credentials dropped`;
        this.outcomes.report(reason);
        logger.error({ url, path, status: answer.status, reason }, `user counts failed: ${reason}`);
        return;
      }
      this.outcomes.setAvailable(true);
      const users = parseUserCount(answer.body);
      if (users === null) {
        logger.warn({ url, path }, `CC bulk API at ${url} answered /bulk/counts with a body that is not {"counts":{"user":N}}; the user count is unchanged`);
        return;
      }
      this.stats.totalUsers = users;
      this.outcomes.metrics.users.set(users);
      logger.debug({ users }, `user counts received: ${counted(users, 'user')}`);
    } finally {
      this.controllers.delete(controller);
    }
  }

  /** A whole walk: every app reported as its page arrives. Never rejects. */
  private async walk(): Promise<FetchOutcome> {
    const { clock, logger } = this.ctx;
    const { url, basePath } = this.requests;
    const outcomes = this.outcomes;
    const controller = this.track();
    const { signal } = controller;
    const started = clock.now();
    // Every app guid this walk reported (skipped ones too: their records must not be forgotten).
    const seen = new Set<string>();
    // What the store gets: the apps that should run, as the HM9000 walk keeps them.
    const kept = new Map<AppKey, DesiredApp>();
    const wantsDesired = this.ctx.events.wants('desired');
    let token = FIRST_TOKEN;
    let pages = 0;
    raise(this.ctx, { kind: 'walk', phase: 'start' });
    try {
      for (;;) {
        const authorization = await this.credentials.forRequest(signal);
        if (authorization === null) return outcomes.ended(outcomes.lastError ?? 'no bulk API credentials', started);
        let answer: HttpAnswer;
        try {
          answer = await this.requests.get(rubyAppsPath(basePath, this.opts.batch_size, token), authorization, signal);
        } catch (err) {
          if (err instanceof Abandoned) throw err;
          const why = err instanceof FetchFailure ? err.message : errorText(err);
          this.consecutiveErrors++;
          if (this.consecutiveErrors < MAX_CONSECUTIVE_ERRORS) {
            logger.warn(
              { url, bulk_token: token, error_count: this.consecutiveErrors, error: why },
              `bulk API request failed (${this.consecutiveErrors} in a row): ${why}; asking again for bulk_token ${token}`,
            );
            continue;
          }
          outcomes.setAvailable(false);
          this.credentials.drop();
          return outcomes.failed(
            `too many consecutive bulk API errors (${this.consecutiveErrors}): desired state is unavailable and the credentials dropped; the last: ${why}`,
            pages,
            started,
          );
        }
        this.consecutiveErrors = 0;
        pages++;
        if (answer.status !== 200) {
          outcomes.setAvailable(false);
          const reason =
            answer.status === 401
              ? this.credentials.unauthorized()
              : `CC bulk API at ${url} answered ${answer.status} on page ${pages}${ccErrorText(answer.body)}`;
          return outcomes.failed(reason, pages, started);
        }
        outcomes.setAvailable(true);
        const page = parseRubyPage(answer.body);
        if (!page.ok) return outcomes.failed(`CC bulk API at ${url} sent ${page.reason} (page ${pages})`, pages, started);
        if (page.done) return await this.complete(seen, kept, pages, started, signal);
        for (const app of page.apps) {
          seen.add(app.guid);
          this.count(app);
          if (shouldRun(app)) kept.set(appKey(app.guid, app.version), app);
          if (wantsDesired) this.ctx.events.emit({ kind: 'desired', app });
        }
        for (const s of page.skipped) {
          seen.add(s.app);
          this.skipped.drop(
            BULK_APPS_LABEL,
            'invalid_app',
            `app ${JSON.stringify(s.app).slice(0, 60)} on page ${pages}: ${s.reason}; the app keeps what it had, the rest of the page is taken`,
            { app: s.app },
          );
        }
        logger[outcomes.completed ? 'debug' : 'info'](
          { page: pages, results: page.results, skipped: page.skipped.length, seen_so_far: seen.size },
          `desired state page ${pages}: ${counted(page.results, 'app')}${page.skipped.length ? `, ${page.skipped.length} skipped` : ''}, ${seen.size} so far`,
        );
        if (page.nextToken === null) {
          return outcomes.failed(`CC bulk API at ${url} sent apps without a bulk_token on page ${pages}: the walk cannot go on`, pages, started);
        }
        if (page.nextToken === token) {
          return outcomes.failed(`CC bulk API at ${url} sent bulk_token ${token} again on page ${pages}: the walk would never end`, pages, started);
        }
        token = page.nextToken;
      }
    } catch (err) {
      if (err instanceof Abandoned) {
        logger.debug({ pages }, 'desired-state walk abandoned: stopping');
        return { result: 'stopped' };
      }
      return outcomes.failed(`desired-state walk of ${url} failed: ${errorText(err)}`, pages, started);
    } finally {
      this.controllers.delete(controller);
    }
  }

  private count(app: DesiredApp): void {
    const t = this.totals;
    const memory = (app.memory ?? 0) * app.instances;
    t.apps++;
    t.instances += app.instances;
    t.memory += memory;
    if (app.state === 'STARTED') {
      t.started_apps++;
      t.started_instances += app.instances;
      t.started_memory += memory;
    }
  }

  /** The final page: statistics published, `walk done` raised, then the store and freshness. */
  private async complete(seen: Set<string>, kept: Map<AppKey, DesiredApp>, pages: number, started: number, signal: AbortSignal): Promise<FetchOutcome> {
    if (signal.aborted) throw signal.reason;
    const now = this.ctx.clock.now();
    this.stats.total = { ...this.totals };
    this.stats.bulkUpdateLoopDurationS = (now - this.totalsResetAt) / 1000;
    // Raised at once, like the rest of the walk's events; the store write below may take a while.
    const users = this.stats.totalUsers !== null ? { users: this.stats.totalUsers } : {};
    raise(this.ctx, this.opts.forget_unseen ? { kind: 'walk', phase: 'done', seen: [...seen], ...users } : { kind: 'walk', phase: 'done', ...users });
    try {
      await this.ctx.store.replaceDesired(kept.values());
      await this.ctx.store.bumpFreshness('desired', this.ctx.freshness.desiredTtlMs);
    } catch (err) {
      return this.outcomes.failed(`Failed to sync desired state to the store: ${errorText(err)}`, pages, started);
    }
    const ms = now - started;
    return this.outcomes.succeeded(
      kept.size,
      pages,
      started,
      `desired state walked: ${counted(seen.size, 'app')} reported, ${kept.size} should run (${counted(pages, 'page')}, ${ms}ms)`,
    );
  }
}
