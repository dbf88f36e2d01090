/**
 * The `bulk-api` source: HM9000's desired-state fetcher (§2.6, §7). On the stage's clock it walks
 * the Cloud Controller's bulk API page by page, keeps the apps that should run, and only after the
 * final empty page replaces the desired state in the store and bumps desired freshness. Any failure
 * abandons the walk and touches nothing: the freshness marker simply expires, and the reason is
 * logged once and shown in /v1/status.
 */
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import tls from 'node:tls';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { Agent } from 'undici';
import { maskUrl } from '../../src/config/mask.js';
import { basicAuth, createHttpAgent, loadCaFile } from '../../src/http/client.js';
import { errorText } from '../../src/log.js';
import type { BusMessage } from '../../src/pipeline/bus.js';
import type { Timer } from '../../src/pipeline/clock.js';
import type { Stage, StageContext, StageHealth } from '../../src/pipeline/plugin.js';
import { appKey, type AppKey, type DesiredApp } from '../../src/pipeline/store.js';
import type { BulkApiOptions } from './options.js';
import { bulkAppsPath, describeTransportError, FIRST_TOKEN, parseBulkPage, parseCredentials, type TransportContext } from './page.js';

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

  constructor(
    private readonly opts: BulkApiOptions,
    private readonly ctx: StageContext,
    private readonly deps: BulkApiDeps = {},
  ) {
    this.url = maskUrl(opts.url);
    let parsed: URL;
    try {
      parsed = new URL(opts.url);
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
  }

  async start(): Promise<void> {
    if (!this.stopped) return;
    this.transport = this.deps.transport ?? (await this.buildTransport());
    this.stopped = false;
    // The first fetch runs at once, but start() does not wait for it.
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.ctx.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.current?.abort(new Abandoned('stopped'));
    await this.run;
    await this.inFlight;
    const agent = this.agent;
    this.agent = undefined;
    // Nothing is in flight any more: this only closes idle keep-alive connections.
    await agent?.destroy();
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  /** Resolves once the scheduled fetch in progress (if any) has finished and the next is set. */
  whenIdle(): Promise<void> {
    return this.run ?? Promise.resolve();
  }

  /**
   * One complete walk of the bulk API. Never rejects. Concurrent calls share the walk in progress,
   * so fetches never overlap.
   */
  fetchOnce(): Promise<FetchOutcome> {
    this.inFlight ??= this.walk().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
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
        // The end of the walk is a 200 whose results are empty, not a null token (§2.6).
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

  private succeeded(apps: number, pages: number, started: number): FetchOutcome {
    const ms = this.ctx.clock.now() - started;
    this.lastError = null;
    this.ctx.freshness.setReason('desired', null);
    this.metrics.fetches.inc({ result: 'ok' });
    this.metrics.duration.observe(ms / 1000);
    this.metrics.apps.set(apps);
    this.ctx.logger.info({ url: this.url, apps, pages, duration_ms: ms }, `desired state fetched: ${apps} apps (${pages} pages, ${ms}ms)`);
    return { result: 'ok', apps, pages };
  }

  private failed(reason: string, pages: number, started: number): FetchOutcome {
    const ms = this.ctx.clock.now() - started;
    this.lastError = reason;
    this.ctx.freshness.setReason('desired', reason);
    this.metrics.fetches.inc({ result: 'failed' });
    this.metrics.duration.observe(ms / 1000);
    this.ctx.logger.error({ url: this.url, reason, pages, duration_ms: ms }, `desired-state fetch failed: ${reason}`);
    return { result: 'failed', reason };
  }

  private unauthorized(): string {
    return this.opts.credentials === 'nats'
      ? `CC bulk API at ${this.url} answered 401: it refused the credentials received on ${this.opts.credentials_subject}`
      : `CC bulk API at ${this.url} answered 401: check sources.${this.ctx.id}.user / password`;
  }

  /** The Authorization header: static, or asked of the CC over NATS before each fetch (§2.7). */
  private async authorization(signal: AbortSignal): Promise<string> {
    if (this.opts.credentials !== 'nats') return basicAuth(this.opts.user ?? '', this.opts.password ?? '');
    const subject = this.opts.credentials_subject;
    let reply: BusMessage;
    try {
      reply = await untilAborted(this.ctx.bus.request(subject, '', this.opts.credentials_timeout), signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const code = (err as { code?: unknown }).code;
      const why =
        code === 'TIMEOUT' || /timeout/i.test(errorText(err))
          ? `no reply within ${this.opts.credentials_timeout}ms (sources.${this.ctx.id}.credentials_timeout)`
          : code === '503'
            ? 'no one answers that subject (is the Cloud Controller connected to NATS?)'
            : errorText(err);
      throw new FetchFailure(`Failed to request auth info on ${subject}: ${why}`);
    }
    const creds = parseCredentials(reply.data);
    if (!creds.ok) throw new FetchFailure(`Failed to parse authentication info from JSON on ${subject}: ${creds.reason}`);
    return basicAuth(creds.user, creds.password);
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
