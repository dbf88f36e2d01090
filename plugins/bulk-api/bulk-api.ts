/**
 * The `bulk-api` source: HM9000's desired-state fetcher (docs/hm9000.md#desired-state). On the stage's clock it walks
 * the Cloud Controller's bulk API page by page, keeps the apps that should run, and only after the
 * final empty page replaces the desired state in the store and bumps desired freshness. Any failure
 * abandons the walk and touches nothing: the freshness marker simply expires, and the reason is
 * logged once and shown in /v1/status.
 *
 * With `walk: ruby` it is the Ruby Health Manager's desired state instead: every app of a page is
 * handed to the event policies as the page arrives (their records are the memory, so an app missing
 * from a walk is not forgotten there), `desiredAvailable()` follows the last answer of the bulk
 * API, transport errors are retried at once, credentials are cached, and an update (user counts
 * beside the walk) starts at start, every poll_interval and on refreshDesired(), overlapping a walk
 * still under way as the original's did. The store still gets, after each complete walk, the apps
 * that should run, so that dump, status and the freshness gate read what they read with HM9000.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { Agent } from 'undici';
import {
  appKey,
  type AppKey,
  basicAuth,
  type BusMessage,
  createHttpAgent,
  type DesiredApp,
  DropReporter,
  errorText,
  loadCaFile,
  maskUrl,
  type PolicyEvent,
  type Stage,
  type StageContext,
  type StageHealth,
  type Timer,
} from '../../src/sdk/index.js';
import type { BulkApiOptions } from './options.js';
import {
  bulkAppsPath,
  bulkBaseUrl,
  describeTransportError,
  FIRST_TOKEN,
  parseBulkPage,
  parseCredentials,
  parseRubyPage,
  parseUserCount,
  rubyAppsPath,
  userCountsPath,
  type TransportContext,
} from './page.js';

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

const zeroTotals = (): DesiredTotals => ({ apps: 0, started_apps: 0, instances: 0, started_instances: 0, memory: 0, started_memory: 0 });

/** Apps that should run, as HM9000's walk keeps them (and as the store's desired set holds them). */
function shouldRun(app: DesiredApp): boolean {
  return app.state === 'STARTED' && (app.packageState === 'STAGED' || app.packageState === 'PENDING');
}

export interface HttpAnswer {
  status: number;
  body: string;
}

/**
 * One GET of a request target on the CC. Rejects on transport errors (with the Node / undici error)
 * and when `signal` aborts. The default sends through the stage's undici Agent; tests may inject
 * their own.
 */
export type Transport = (path: string, headers: Record<string, string>, signal: AbortSignal) => Promise<HttpAnswer>;

export type FetchOutcome =
  | { result: 'ok'; apps: number; pages: number }
  | { result: 'failed'; reason: string }
  /** Abandoned because the stage stopped: not a failure. */
  | { result: 'stopped' };

/** The answer arrived but its body could not be read (HM9000: "Failed to read HTTP response body"). */
class BodyReadError extends Error {
  constructor(readonly original: unknown) {
    super(errorText(original));
  }
}

/** A failure whose message is the reason, in words. */
class FetchFailure extends Error {}

/** Why a fetch or a request was cut short by us. */
class Abandoned extends Error {
  constructor(readonly why: 'stopped' | 'timeout') {
    super(why);
  }
}

interface FetchMetrics {
  fetches: Counter<'result'>;
  duration: Histogram;
  apps: Gauge;
  available: Gauge;
  users: Gauge;
}

const metricsByRegistry = new WeakMap<Registry, FetchMetrics>();

/** Get-or-create per registry: several stages (or engines in one process) share the series. */
export function desiredFetchMetrics(registry: Registry): FetchMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    m = {
      fetches:
        (registry.getSingleMetric('hmgate_desired_fetches_total') as Counter<'result'> | undefined) ??
        new Counter({
          name: 'hmgate_desired_fetches_total',
          help: 'Desired-state fetches from the CC bulk API, by result (ok, failed)',
          labelNames: ['result'],
          registers: [registry],
        }),
      duration:
        (registry.getSingleMetric('hmgate_desired_fetch_duration_seconds') as Histogram | undefined) ??
        new Histogram({
          name: 'hmgate_desired_fetch_duration_seconds',
          help: 'Duration of desired-state fetches (every page), ok or failed',
          buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
          registers: [registry],
        }),
      apps:
        (registry.getSingleMetric('hmgate_desired_apps') as Gauge | undefined) ??
        new Gauge({
          name: 'hmgate_desired_apps',
          help: 'Desired apps (STARTED, package STAGED or PENDING) kept by the last complete fetch',
          registers: [registry],
        }),
      available:
        (registry.getSingleMetric('hmgate_desired_available') as Gauge | undefined) ??
        new Gauge({
          name: 'hmgate_desired_available',
          help: 'Whether the last exchange with the CC bulk API succeeded (1) or not (0): event policies analyse only while it is 1',
          registers: [registry],
        }),
      users:
        (registry.getSingleMetric('hmgate_cc_users') as Gauge | undefined) ??
        new Gauge({
          name: 'hmgate_cc_users',
          help: 'Users of the Cloud Controller, from the last good /bulk/counts?model=user (user_counts: true)',
          registers: [registry],
        }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}

/** Rejects with the signal's reason once it aborts; never leaves `p`'s rejection unhandled. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolveP, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolveP(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/** CC's error body (`{"code":…,"description":…,"error_code":"CF-…"}`) in a few words, if it is one. */
function ccErrorText(body: string): string {
  try {
    const doc = JSON.parse(body) as unknown;
    if (typeof doc === 'object' && doc !== null && !Array.isArray(doc)) {
      const { description, error_code: code } = doc as { description?: unknown; error_code?: unknown };
      const parts = [typeof code === 'string' ? code : '', typeof description === 'string' ? description : ''].filter(Boolean);
      if (parts.length > 0) return ` (${parts.join(': ').slice(0, 200)})`;
    }
  } catch {
    /* not CC's error JSON */
  }
  return '';
}

export interface BulkApiDeps {
  /** Replaces the undici Agent (tests that fuzz the walk in-process). */
  transport?: Transport;
}

export class BulkApiSource implements Stage {
  private readonly origin: string;
  private readonly basePath: string;
  /** The configured URL with any password masked: the only form that reaches logs and reasons. */
  readonly url: string;
  private readonly transportContext: TransportContext;
  private readonly metrics: FetchMetrics;
  private agent: Agent | undefined;
  private transport: Transport | undefined;
  private timer: Timer | undefined;
  /** The scheduled run in progress (fetch and rescheduling). */
  private run: Promise<void> | undefined;
  private inFlight: Promise<FetchOutcome> | undefined;
  /** Whether a fetch has completed since start (progress is logged at info until then). */
  private completed = false;
  private current: AbortController | undefined;
  private stopped = true;
  private lastError: string | null = null;
  /** HM9000 walk: the last fetch succeeded. walk: ruby: the last bulk API answer was a 200. */
  private available = false;
  // --- walk: ruby ---
  /** Updates under way (they may overlap). */
  private readonly updates = new Set<Promise<FetchOutcome>>();
  /** Every walk and counts request under way, to abort them on stop. */
  private readonly controllers = new Set<AbortController>();
  /** The cached Authorization header from NATS credentials; dropped after the failures that call for it. */
  private cachedAuthorization: string | undefined;
  /** Consecutive transport errors of /bulk/apps, across walks; any answer resets it. */
  private consecutiveErrors = 0;
  private readonly skipped: DropReporter;
  private totals = zeroTotals();
  private totalsResetAt = 0;
  private stats: DesiredStats = { totalUsers: null, total: null, bulkUpdateLoopDurationS: null };

  constructor(
    private readonly opts: BulkApiOptions & { credentials_subject: string },
    private readonly ctx: StageContext,
    private readonly deps: BulkApiDeps = {},
  ) {
    const full = bulkBaseUrl(opts.url);
    this.url = maskUrl(full);
    if (opts.forget_unseen && opts.walk !== 'ruby')
      throw new Error(`sources.${ctx.id}.forget_unseen needs walk: ruby (the HM9000 walk replaces the desired state whole anyway)`);
    const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(opts.url);
    if (scheme && !/^https?$/i.test(scheme[1]!)) throw new Error(`sources.${ctx.id}.url ${maskUrl(opts.url)} must start with http:// or https://`);
    let parsed: URL;
    try {
      parsed = new URL(full);
    } catch {
      throw new Error(`sources.${ctx.id}.url ${this.url} is not a URL: give the Cloud Controller's base URL, e.g. https://api.example.com`);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
      throw new Error(`sources.${ctx.id}.url ${this.url} must start with http:// or https://`);
    }
    if (parsed.search || parsed.hash) {
      throw new Error(`sources.${ctx.id}.url ${this.url} must be a base URL without ?query or #fragment (/bulk/apps is appended)`);
    }
    this.origin = parsed.origin;
    // HM9000 appends "/bulk/apps" to cc_base_url as written; a trailing slash is dropped here so
    // that "https://api.example.com/" does not ask for //bulk/apps.
    this.basePath = parsed.pathname.replace(/\/+$/, '');
    this.transportContext = { id: ctx.id, url: this.url, host: parsed.host, networkTimeoutMs: opts.network_timeout };
    this.metrics = desiredFetchMetrics(ctx.metrics);
    this.skipped = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.transport = this.deps.transport ?? (await this.buildTransport());
    this.stopped = false;
    // The first fetch runs at once, but start() does not wait for it.
    if (this.opts.walk === 'ruby') this.scheduleUpdates(0);
    else this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.ctx.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.current?.abort(new Abandoned('stopped'));
    for (const c of this.controllers) c.abort(new Abandoned('stopped'));
    await this.run;
    await this.inFlight;
    await this.whenIdle();
    const agent = this.agent;
    this.agent = undefined;
    // Nothing is in flight any more: this only closes idle keep-alive connections.
    await agent?.destroy();
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  /** Resolves once the scheduled fetch in progress (if any) has finished and the next is set; walk: ruby, once no update is under way. */
  async whenIdle(): Promise<void> {
    if (this.opts.walk !== 'ruby') return this.run ?? Promise.resolve();
    while (this.updates.size > 0) await Promise.all(this.updates);
  }

  /**
   * One complete walk of the bulk API. Never rejects. Concurrent calls share the walk in progress,
   * so fetches never overlap. walk: ruby: one more update (counts and walk), whatever is under way.
   */
  fetchOnce(): Promise<FetchOutcome> {
    if (this.opts.walk === 'ruby') return this.update();
    this.inFlight ??= this.walk().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
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
    return this.available;
  }

  /** The Ruby HM's desired-state statistics, for its /varz. */
  desiredStats(): DesiredStats {
    return { ...this.stats, total: this.stats.total && { ...this.stats.total } };
  }

  private emit(event: PolicyEvent): void {
    const events = this.ctx.events;
    if (events.wants(event.kind)) events.emit(event);
  }

  private setAvailable(available: boolean): void {
    this.available = available;
    this.metrics.available.set(available ? 1 : 0);
  }

  private async buildTransport(): Promise<Transport> {
    const ca = this.opts.ca_file !== undefined ? await loadCaFile(this.opts.ca_file, this.ctx.configDir, `sources.${this.ctx.id}.ca_file`) : undefined;
    // One Agent per stage: its connections are reused page after page and fetch after fetch. Its
    // timeouts back up the per-request deadline kept on the stage's clock.
    const agent = createHttpAgent({ timeoutMs: this.opts.network_timeout, skipCertVerify: this.opts.skip_cert_verify, ca });
    this.agent = agent;
    const origin = this.origin;
    return async (path, headers, signal) => {
      // `path` goes into the request line as given; see bulkAppsPath for why the raw token survives.
      const res = await agent.request({ origin, path, method: 'GET', headers, signal });
      try {
        return { status: res.statusCode, body: await res.body.text() };
      } catch (err) {
        if (signal.aborted) throw err;
        throw new BodyReadError(err);
      }
    };
  }

  /** The poll loop: every poll_interval measured from the start of a fetch, never overlapping. */
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

  private async walk(): Promise<FetchOutcome> {
    const { clock, logger, store, freshness } = this.ctx;
    const controller = new AbortController();
    this.current = controller;
    const started = clock.now();
    const deadline = clock.setTimeout(() => controller.abort(new Abandoned('timeout')), this.opts.timeout);
    let pages = 0;
    this.emit({ kind: 'walk', phase: 'start' });
    try {
      logger.debug({ url: this.url }, 'fetching desired state');
      const authorization = await this.authorization(controller.signal);
      const apps = new Map<AppKey, DesiredApp>();
      let token = FIRST_TOKEN;
      for (;;) {
        pages++;
        const answer = await this.get(bulkAppsPath(this.basePath, this.opts.batch_size, token), authorization, controller.signal);
        if (answer.status === 401) throw new FetchFailure(this.unauthorized());
        if (answer.status !== 200) {
          throw new FetchFailure(`CC bulk API at ${this.url} answered ${answer.status} on page ${pages}${ccErrorText(answer.body)}`);
        }
        const page = parseBulkPage(answer.body);
        if (!page.ok) throw new FetchFailure(`CC bulk API at ${this.url} sent ${page.reason} (page ${pages})`);
        for (const app of page.kept) apps.set(appKey(app.guid, app.version), app);
        // Until the first complete fetch, progress is shown at info: on a large foundation the first
        // walk takes a while, and nothing is decided before it ends.
        logger[this.completed ? 'debug' : 'info'](
          { page: pages, results: page.results, kept: page.kept.length, desired_so_far: apps.size },
          `desired state page ${pages}: ${page.results} apps, ${page.kept.length} kept, ${apps.size} desired so far`,
        );
        // The end of the walk is a 200 whose results are empty, not a null token (docs/hm9000.md#desired-state).
        if (page.done) break;
        if (page.nextToken === token) {
          throw new FetchFailure(`CC bulk API at ${this.url} sent bulk_token ${token} again on page ${pages}: the walk would never end`);
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
      this.completed = true;
      // Event policies get the fetch once it is complete: the HM9000 walk is all or nothing.
      if (this.ctx.events.wants('desired')) for (const app of apps.values()) this.ctx.events.emit({ kind: 'desired', app });
      this.emit({ kind: 'walk', phase: 'done' });
      return this.succeeded(apps.size, pages, started);
    } catch (err) {
      if (err instanceof Abandoned && err.why === 'stopped') {
        logger.debug({ pages }, 'desired-state fetch abandoned: stopping');
        return { result: 'stopped' };
      }
      let reason: string;
      if (err instanceof Abandoned) {
        reason = `timed out: the desired-state fetch from ${this.url} took longer than ${this.opts.timeout}ms (sources.${this.ctx.id}.timeout) and was abandoned on page ${pages}`;
      } else if (err instanceof FetchFailure) {
        reason = err.message;
      } else {
        reason = `desired-state fetch from ${this.url} failed: ${errorText(err)}`;
      }
      return this.failed(reason, pages, started);
    } finally {
      clock.clearTimeout(deadline);
      if (this.current === controller) this.current = undefined;
    }
  }

  private succeeded(apps: number, pages: number, started: number, message?: string): FetchOutcome {
    const ms = this.ctx.clock.now() - started;
    if (this.opts.walk !== 'ruby') this.setAvailable(true);
    this.lastError = null;
    this.ctx.freshness.setReason('desired', null);
    this.metrics.fetches.inc({ result: 'ok' });
    this.metrics.duration.observe(ms / 1000);
    this.metrics.apps.set(apps);
    this.ctx.logger.info({ url: this.url, apps, pages, duration_ms: ms }, message ?? `desired state fetched: ${apps} apps (${pages} pages, ${ms}ms)`);
    return { result: 'ok', apps, pages };
  }

  private failed(reason: string, pages: number, started: number): FetchOutcome {
    const ms = this.ctx.clock.now() - started;
    if (this.opts.walk !== 'ruby') this.setAvailable(false);
    this.report(reason);
    this.metrics.fetches.inc({ result: 'failed' });
    this.metrics.duration.observe(ms / 1000);
    this.ctx.logger.error({ url: this.url, reason, pages, duration_ms: ms }, `desired-state fetch failed: ${reason}`);
    return { result: 'failed', reason };
  }

  /** A failure's reason, for health, the freshness board and /v1/status. */
  private report(reason: string): void {
    this.lastError = reason;
    this.ctx.freshness.setReason('desired', reason);
  }

  private unauthorized(): string {
    return this.opts.credentials === 'nats'
      ? `CC bulk API at ${this.url} answered 401: it refused the credentials received on ${this.opts.credentials_subject}`
      : `CC bulk API at ${this.url} answered 401: check sources.${this.ctx.id}.user / password`;
  }

  /**
   * The Authorization header: static, or asked of the CC over NATS before each fetch
   * (docs/hm9000.md#bulk-credentials-over-nats).
   */
  private async authorization(signal: AbortSignal): Promise<string> {
    if (this.opts.credentials !== 'nats') return basicAuth(this.opts.user ?? '', this.opts.password ?? '');
    const subject = this.opts.credentials_subject;
    let reply: BusMessage;
    try {
      reply = await untilAborted(this.ctx.bus.request(subject, '', this.opts.credentials_timeout), signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new FetchFailure(`Failed to request auth info on ${subject}: ${this.credentialsError(err)}`);
    }
    const creds = parseCredentials(reply.data);
    if (!creds.ok) throw new FetchFailure(`Failed to parse authentication info from JSON on ${subject}: ${creds.reason}`);
    return basicAuth(creds.user, creds.password);
  }

  /** Why a credentials request got no reply, in words. */
  private credentialsError(err: unknown): string {
    const code = (err as { code?: unknown }).code;
    return code === 'TIMEOUT' || /timeout/i.test(errorText(err))
      ? `no reply within ${this.opts.credentials_timeout}ms (sources.${this.ctx.id}.credentials_timeout)`
      : code === '503'
        ? 'no one answers that subject (is the Cloud Controller connected to NATS?)'
        : errorText(err);
  }

  // --- walk: ruby ---

  /** An update at once, then one every poll_interval: a fixed period, whatever the updates take. */
  private scheduleUpdates(delayMs: number): void {
    if (this.stopped) return;
    this.timer = this.ctx.clock.setTimeout(() => {
      this.timer = undefined;
      this.scheduleUpdates(this.opts.poll_interval);
      // Only the leader asks the Cloud Controller.
      if (this.ctx.isLeader()) void this.update();
    }, delayMs);
  }

  /**
   * Resolves once the fetches in flight have ended (a manual clock waits for them before moving on,
   * as the Ruby HM's black-box mode made its bulk requests synchronous).
   */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.updates, ...(this.inFlight ? [this.inFlight] : [])]);
  }

  /** One update: user counts (user_counts) beside a whole walk. Never rejects. */
  private update(): Promise<FetchOutcome> {
    const run = this.runUpdate()
      .catch((err: unknown): FetchOutcome => {
        this.ctx.logger.error({ error: errorText(err) }, `desired-state update crashed: ${errorText(err)}`);
        return { result: 'failed', reason: errorText(err) };
      })
      .finally(() => this.updates.delete(run));
    this.updates.add(run);
    return run;
  }

  private async runUpdate(): Promise<FetchOutcome> {
    // Both start now and run side by side; the counts request goes out first.
    const counts = this.opts.user_counts ? this.userCounts() : undefined;
    this.totals = zeroTotals();
    this.totalsResetAt = this.ctx.clock.now();
    const walk = this.rubyWalk();
    await counts;
    return walk;
  }

  private track(): AbortController {
    const c = new AbortController();
    this.controllers.add(c);
    if (this.stopped) c.abort(new Abandoned('stopped'));
    return c;
  }

  private dropCredentials(): void {
    this.cachedAuthorization = undefined;
  }

  /**
   * The Authorization header for one request: static, the cached NATS credentials, or new ones
   * asked for on credentials_subject. null when none came: the request is not made, and the
   * update it belongs to ends there until the next one (the Ruby HM ignored it).
   */
  private async rubyAuthorization(signal: AbortSignal): Promise<string | null> {
    if (this.opts.credentials !== 'nats') return basicAuth(this.opts.user ?? '', this.opts.password ?? '');
    if (this.cachedAuthorization !== undefined) return this.cachedAuthorization;
    const subject = this.opts.credentials_subject;
    this.ctx.logger.info({ subject }, `requesting the bulk API credentials on ${subject}`);
    let reply: BusMessage;
    try {
      reply = await untilAborted(this.ctx.bus.request(subject, '', this.opts.credentials_timeout), signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const reason = `Failed to request auth info on ${subject}: ${this.credentialsError(err)}; request ignored until the next desired-state update`;
      this.report(reason);
      this.ctx.logger.error({ subject, reason }, reason);
      return null;
    }
    const creds = parseCredentials(reply.data);
    if (!creds.ok) {
      const reason = `Failed to parse authentication info from JSON on ${subject}: ${creds.reason}; request ignored until the next desired-state update`;
      this.report(reason);
      this.ctx.logger.error({ subject, reason }, reason);
      return null;
    }
    this.ctx.logger.info({ subject }, `bulk API credentials received on ${subject}`);
    this.cachedAuthorization = basicAuth(creds.user, creds.password);
    return this.cachedAuthorization;
  }

  /** GET /bulk/counts?model=user: its answer sets availability; any failure also drops the credentials. Not retried. */
  private async userCounts(): Promise<void> {
    const controller = this.track();
    const path = userCountsPath(this.basePath);
    try {
      const authorization = await this.rubyAuthorization(controller.signal);
      if (authorization === null) return;
      let answer: HttpAnswer;
      try {
        answer = await this.get(path, authorization, controller.signal);
      } catch (err) {
        if (err instanceof Abandoned) return;
        this.setAvailable(false);
        this.dropCredentials();
        const reason = `${err instanceof FetchFailure ? err.message : errorText(err)} (on /bulk/counts; credentials dropped)`;
        this.report(reason);
        this.ctx.logger.error({ url: this.url, path, reason }, `user counts failed: ${reason}`);
        return;
      }
      if (answer.status !== 200) {
        this.setAvailable(false);
        this.dropCredentials();
        const reason =
          answer.status === 401
            ? `${this.unauthorized()} (on /bulk/counts; credentials dropped)`
            : `CC bulk API at ${this.url} answered ${answer.status} to /bulk/counts${ccErrorText(answer.body)}; credentials dropped`;
        this.report(reason);
        this.ctx.logger.error({ url: this.url, path, status: answer.status, reason }, `user counts failed: ${reason}`);
        return;
      }
      this.setAvailable(true);
      const users = parseUserCount(answer.body);
      if (users === null) {
        this.ctx.logger.warn(
          { url: this.url, path },
          `CC bulk API at ${this.url} answered /bulk/counts with a body that is not {"counts":{"user":N}}; the user count is unchanged`,
        );
        return;
      }
      this.stats.totalUsers = users;
      this.metrics.users.set(users);
      this.ctx.logger.debug({ users }, `user counts received: ${users} users`);
    } finally {
      this.controllers.delete(controller);
    }
  }

  /** A whole walk as the Ruby HM's: every app reported as its page arrives. Never rejects. */
  private async rubyWalk(): Promise<FetchOutcome> {
    const { clock, logger } = this.ctx;
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
    this.emit({ kind: 'walk', phase: 'start' });
    try {
      for (;;) {
        const authorization = await this.rubyAuthorization(signal);
        if (authorization === null) return this.walkEnded(this.lastError ?? 'no bulk API credentials', pages, started);
        let answer: HttpAnswer;
        try {
          answer = await this.get(rubyAppsPath(this.basePath, this.opts.batch_size, token), authorization, signal);
        } catch (err) {
          if (err instanceof Abandoned) throw err;
          const why = err instanceof FetchFailure ? err.message : errorText(err);
          this.consecutiveErrors++;
          if (this.consecutiveErrors < MAX_CONSECUTIVE_ERRORS) {
            logger.warn(
              { url: this.url, bulk_token: token, error_count: this.consecutiveErrors, error: why },
              `bulk API request failed (${this.consecutiveErrors} in a row): ${why}; asking again for bulk_token ${token}`,
            );
            continue;
          }
          this.setAvailable(false);
          this.dropCredentials();
          return this.failed(
            `too many consecutive bulk API errors (${this.consecutiveErrors}): desired state is unavailable and the credentials dropped; the last: ${why}`,
            pages,
            started,
          );
        }
        this.consecutiveErrors = 0;
        pages++;
        if (answer.status !== 200) {
          this.setAvailable(false);
          const reason =
            answer.status === 401 ? this.unauthorized() : `CC bulk API at ${this.url} answered ${answer.status} on page ${pages}${ccErrorText(answer.body)}`;
          return this.failed(reason, pages, started);
        }
        this.setAvailable(true);
        const page = parseRubyPage(answer.body);
        if (!page.ok) return this.failed(`CC bulk API at ${this.url} sent ${page.reason} (page ${pages})`, pages, started);
        if (page.done) return await this.walkComplete(seen, kept, pages, started, signal);
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
        logger[this.completed ? 'debug' : 'info'](
          { page: pages, results: page.results, skipped: page.skipped.length, seen_so_far: seen.size },
          `desired state page ${pages}: ${page.results} apps${page.skipped.length ? `, ${page.skipped.length} skipped` : ''}, ${seen.size} so far`,
        );
        if (page.nextToken === null) {
          return this.failed(`CC bulk API at ${this.url} sent apps without a bulk_token on page ${pages}: the walk cannot go on`, pages, started);
        }
        if (page.nextToken === token) {
          return this.failed(`CC bulk API at ${this.url} sent bulk_token ${token} again on page ${pages}: the walk would never end`, pages, started);
        }
        token = page.nextToken;
      }
    } catch (err) {
      if (err instanceof Abandoned) {
        logger.debug({ pages }, 'desired-state walk abandoned: stopping');
        return { result: 'stopped' };
      }
      return this.failed(`desired-state walk of ${this.url} failed: ${errorText(err)}`, pages, started);
    } finally {
      this.controllers.delete(controller);
    }
  }

  /** A walk that ended without a failure of its own (no credentials): counted, already reported. */
  private walkEnded(reason: string, pages: number, started: number): FetchOutcome {
    this.metrics.fetches.inc({ result: 'failed' });
    this.metrics.duration.observe((this.ctx.clock.now() - started) / 1000);
    return { result: 'failed', reason: reason };
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
  private async walkComplete(seen: Set<string>, kept: Map<AppKey, DesiredApp>, pages: number, started: number, signal: AbortSignal): Promise<FetchOutcome> {
    if (signal.aborted) throw signal.reason;
    const now = this.ctx.clock.now();
    this.stats.total = { ...this.totals };
    this.stats.bulkUpdateLoopDurationS = (now - this.totalsResetAt) / 1000;
    // Raised at once, like the rest of the walk's events; the store write below may take a while.
    const users = this.stats.totalUsers !== null ? { users: this.stats.totalUsers } : {};
    this.emit(this.opts.forget_unseen ? { kind: 'walk', phase: 'done', seen: [...seen], ...users } : { kind: 'walk', phase: 'done', ...users });
    try {
      await this.ctx.store.replaceDesired(kept.values());
      await this.ctx.store.bumpFreshness('desired', this.ctx.freshness.desiredTtlMs);
    } catch (err) {
      return this.failed(`Failed to sync desired state to the store: ${errorText(err)}`, pages, started);
    }
    this.completed = true;
    const ms = now - started;
    return this.succeeded(kept.size, pages, started, `desired state walked: ${seen.size} apps reported, ${kept.size} should run (${pages} pages, ${ms}ms)`);
  }

  /** One page, with the per-request deadline (network_timeout) on the stage's clock. */
  private async get(path: string, authorization: string, fetchSignal: AbortSignal): Promise<HttpAnswer> {
    if (fetchSignal.aborted) throw fetchSignal.reason;
    const transport = this.transport ?? this.deps.transport;
    if (!transport) throw new FetchFailure(`the bulk-api source "${this.ctx.id}" is not started`);
    const request = new AbortController();
    const relay = () => request.abort(fetchSignal.reason);
    fetchSignal.addEventListener('abort', relay, { once: true });
    let late = false;
    const deadline = this.ctx.clock.setTimeout(() => {
      late = true;
      request.abort(new Error('network timeout'));
    }, this.opts.network_timeout);
    try {
      return await untilAborted(transport(path, { authorization }, request.signal), request.signal);
    } catch (err) {
      if (fetchSignal.aborted) throw fetchSignal.reason;
      if (late) {
        throw new FetchFailure(
          `timed out: the CC bulk API at ${this.url} did not answer within ${this.opts.network_timeout}ms (sources.${this.ctx.id}.network_timeout)`,
        );
      }
      if (err instanceof BodyReadError) throw new FetchFailure(`Failed to read HTTP response body from the CC bulk API at ${this.url}: ${err.message}`);
      throw new FetchFailure(describeTransportError(err, this.transportContext));
    } finally {
      this.ctx.clock.clearTimeout(deadline);
      fetchSignal.removeEventListener('abort', relay);
    }
  }
}
