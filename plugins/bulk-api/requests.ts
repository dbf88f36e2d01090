/**
 * Every request to the CC bulk API: the base URL checked and split, one undici Agent per stage
 * (its connections reused page after page and fetch after fetch), and one GET with its own
 * deadline on the stage's clock, its failures in words. Both walks and the user counts go
 * through here.
 */
import { Agent } from 'undici';
import { createHttpAgent, errorText, loadCaFile, maskUrl, type StageContext } from '../../src/sdk/index.js';
import type { BulkApiOptions } from './options.js';
import { bulkBaseUrl, describeTransportError, type TransportContext } from './page.js';

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

/** The answer arrived but its body could not be read (HM9000: "Failed to read HTTP response body"). */
class BodyReadError extends Error {
  constructor(readonly original: unknown) {
    super(errorText(original));
  }
}

/** A failure whose message is the reason, in words. */
export class FetchFailure extends Error {}

/** Why a fetch or a request was cut short by us. */
export class Abandoned extends Error {
  constructor(readonly why: 'stopped' | 'timeout') {
    super(why);
  }
}

/** Rejects with the signal's reason once it aborts; never leaves `p`'s rejection unhandled. */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
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
export function ccErrorText(body: string): string {
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

export type RequestOptions = Pick<BulkApiOptions, 'url' | 'network_timeout' | 'skip_cert_verify' | 'ca_file'>;

export class CcRequests {
  /** The configured URL with any password masked: the only form that reaches logs and reasons. */
  readonly url: string;
  /** The path the bulk API paths are appended to, without a trailing slash. */
  readonly basePath: string;
  private readonly origin: string;
  private readonly transportContext: TransportContext;
  private agent: Agent | undefined;
  private transport: Transport | undefined;

  /** Throws when the URL is not an http(s) base URL, naming the option. */
  constructor(
    private readonly opts: RequestOptions,
    private readonly ctx: StageContext,
    /** Replaces the undici Agent (tests that fuzz the walk in-process). */
    private readonly injected?: Transport,
  ) {
    const full = bulkBaseUrl(opts.url);
    this.url = maskUrl(full);
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
  }

  /** Makes the transport: the injected one, else an Agent with the configured TLS trust. */
  async open(): Promise<void> {
    this.transport = this.injected ?? (await this.buildTransport());
  }

  /** Closes the Agent's idle keep-alive connections; call once nothing is in flight. */
  async close(): Promise<void> {
    const agent = this.agent;
    this.agent = undefined;
    await agent?.destroy();
  }

  private async buildTransport(): Promise<Transport> {
    const ca = this.opts.ca_file !== undefined ? await loadCaFile(this.opts.ca_file, this.ctx.configDir, `sources.${this.ctx.id}.ca_file`) : undefined;
    // The Agent's timeouts back up the per-request deadline kept on the stage's clock.
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

  /**
   * One GET, with the per-request deadline (network_timeout) on the stage's clock. Rejects with
   * the fetch signal's reason when it aborts, else with a FetchFailure.
   */
  async get(path: string, authorization: string, fetchSignal: AbortSignal): Promise<HttpAnswer> {
    if (fetchSignal.aborted) throw fetchSignal.reason;
    const transport = this.transport ?? this.injected;
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
