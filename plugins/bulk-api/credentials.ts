/**
 * The Authorization header of bulk API requests: static user / password, or asked of the CC over
 * NATS (docs/hm9000.md#bulk-credentials-over-nats). The HM9000 walk asks before each fetch and a
 * failure fails the fetch; walk: ruby caches what it got until a failure calls for new ones, and a
 * failure only skips the request. Also says what a 401 means for the credentials in use.
 */
import { basicAuth, type BusMessage, errorText, type StageContext } from '../../src/sdk/index.js';
import type { BulkApiOptions } from './options.js';
import type { Outcomes } from './outcomes.js';
import { parseCredentials } from './page.js';
import { FetchFailure, untilAborted } from './requests.js';

export type CredentialOptions = Pick<BulkApiOptions, 'credentials' | 'user' | 'password' | 'credentials_timeout'> & { credentials_subject: string };

export class BulkCredentials {
  /** walk: ruby's cached header from NATS credentials; dropped after the failures that call for it. */
  private cached: string | undefined;

  constructor(
    private readonly opts: CredentialOptions,
    private readonly ctx: StageContext,
    /** The masked base URL, for messages. */
    private readonly url: string,
    private readonly outcomes: Outcomes,
  ) {}

  /** The HM9000 walk's header: static, or new NATS credentials; rejects with a FetchFailure when none came. */
  async forFetch(signal: AbortSignal): Promise<string> {
    if (this.opts.credentials !== 'nats') return basicAuth(this.opts.user ?? '', this.opts.password ?? '');
    const subject = this.opts.credentials_subject;
    let reply: BusMessage;
    try {
      reply = await untilAborted(this.ctx.bus.request(subject, '', this.opts.credentials_timeout), signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new FetchFailure(`Failed to request auth info on ${subject}: ${this.requestError(err)}`);
    }
    const creds = parseCredentials(reply.data);
    if (!creds.ok) throw new FetchFailure(`Failed to parse authentication info from JSON on ${subject}: ${creds.reason}`);
    return basicAuth(creds.user, creds.password);
  }

  /**
   * walk: ruby's header for one request: static, the cached NATS credentials, or new ones asked
   * for on credentials_subject. null when none came: the failure is reported, the request is not
   * made, and the update it belongs to ends there until the next one (the Ruby HM ignored it).
   */
  async forRequest(signal: AbortSignal): Promise<string | null> {
    if (this.opts.credentials !== 'nats') return basicAuth(this.opts.user ?? '', this.opts.password ?? '');
    if (this.cached !== undefined) return this.cached;
    const subject = this.opts.credentials_subject;
    this.ctx.logger.info({ subject }, `requesting the bulk API credentials on ${subject}`);
    let reply: BusMessage;
    try {
      reply = await untilAborted(this.ctx.bus.request(subject, '', this.opts.credentials_timeout), signal);
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const reason = `Failed to request auth info on ${subject}: ${this.requestError(err)}; request ignored until the next desired-state update`;
      this.outcomes.report(reason);
      this.ctx.logger.error({ subject, reason }, reason);
      return null;
    }
    const creds = parseCredentials(reply.data);
    if (!creds.ok) {
      const reason = `Failed to parse authentication info from JSON on ${subject}: ${creds.reason}; request ignored until the next desired-state update`;
      this.outcomes.report(reason);
      this.ctx.logger.error({ subject, reason }, reason);
      return null;
    }
    this.ctx.logger.info({ subject }, `bulk API credentials received on ${subject}`);
    this.cached = basicAuth(creds.user, creds.password);
    return this.cached;
  }

  /** Forgets walk: ruby's cached credentials: the next request asks again. */
  drop(): void {
    this.cached = undefined;
  }

  /** A 401 in words: which credentials the CC refused. */
  unauthorized(): string {
    return this.opts.credentials === 'nats'
      ? `CC bulk API at ${this.url} answered 401: it refused the credentials received on ${this.opts.credentials_subject}`
      : `CC bulk API at ${this.url} answered 401: check sources.${this.ctx.id}.user / password`;
  }

  /** Why a credentials request got no reply, in words. */
  private requestError(err: unknown): string {
    const code = (err as { code?: unknown }).code;
    return code === 'TIMEOUT' || /timeout/i.test(errorText(err))
      ? `no reply within ${this.opts.credentials_timeout}ms (sources.${this.ctx.id}.credentials_timeout)`
      : code === '503'
        ? 'no one answers that subject (is the Cloud Controller connected to NATS?)'
        : errorText(err);
  }
}
