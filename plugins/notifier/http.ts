/**
 * HM9000 HEAD's transport to the Cloud Controller (docs/hm9000.md#start-and-stop-over-http; HM9000 HEAD
 * `sender/sender.go`): one POST per order to
 * `<cc_url>/internal/dea/hm9000/{start,stop}/<app guid>` with the wire JSON body, basic auth and
 * `Content-Type: application/json`. Anything but a 200, or no answer at all, is a failed send,
 * described in one sentence that says what to check. URLs in sentences are masked.
 */
import type { Agent } from 'undici';
import { basicAuth, createHttpAgent, DNS_CODES, errorCode, errorText, maskUrl, TLS_TRUST_CODES } from '../../src/sdk/index.js';

export type Action = 'start' | 'stop';

export interface CcClientOptions {
  /** The stage id, for `sinks.<id>.…` in messages. */
  id: string;
  ccUrl: string;
  user: string;
  password: string;
  timeoutMs: number;
  skipCertVerify: boolean;
  /** PEM of extra trusted CAs (the contents of ca_file). */
  ca?: string;
}

/** The CC's error body (`{"code":…,"description":…,"error_code":"CF-…"}`) or its first line, short. */
function answerDetail(body: string): string {
  const text = body.trim();
  if (text === '' || text === '{}') return '';
  try {
    const doc = JSON.parse(text) as { error_code?: unknown; description?: unknown };
    const parts = [doc.error_code, doc.description].filter((v): v is string => typeof v === 'string' && v !== '');
    if (parts.length > 0) return ` (${parts.join(': ').slice(0, 200)})`;
  } catch {
    /* not JSON: quote the start of it */
  }
  const line = text.split('\n')[0]!;
  return ` (${line.length > 120 ? `${line.slice(0, 117)}…` : line})`;
}

export class CcClient {
  private readonly agent: Agent;
  private readonly origin: string;
  private readonly basePath: string;
  /** The base URL as shown in messages: masked, no trailing slash. */
  private readonly shownBase: string;
  private readonly host: string;
  private readonly auth: string;
  private closed = false;

  constructor(private readonly o: CcClientOptions) {
    const url = new URL(o.ccUrl);
    this.origin = url.origin;
    this.host = url.host;
    this.basePath = url.pathname.replace(/\/+$/, '');
    this.shownBase = maskUrl(o.ccUrl.replace(/\/+$/, ''));
    this.auth = basicAuth(o.user, o.password);
    this.agent = createHttpAgent({ timeoutMs: o.timeoutMs, skipCertVerify: o.skipCertVerify, ca: o.ca });
  }

  private static path(action: Action, guid: string): string {
    return `/internal/dea/hm9000/${action}/${encodeURIComponent(guid)}`;
  }

  /** The URL an order for `guid` goes to, masked, for logs and messages. */
  urlFor(action: Action, guid: string): string {
    return this.shownBase + CcClient.path(action, guid);
  }

  /** POSTs one wire message; resolves on a 200, throws an Error that says what happened otherwise. */
  async post(action: Action, guid: string, body: string): Promise<void> {
    if (this.closed) throw new Error(`sink ${this.o.id} is stopped; not sending ${action} for ${guid}`);
    const shown = this.urlFor(action, guid);
    const signal = AbortSignal.timeout(this.o.timeoutMs);
    let res: Awaited<ReturnType<Agent['request']>>;
    try {
      res = await this.agent.request({
        origin: this.origin,
        path: this.basePath + CcClient.path(action, guid),
        method: 'POST',
        headers: { authorization: this.auth, 'content-type': 'application/json' },
        body,
        signal,
      });
    } catch (err) {
      throw new Error(this.describeTransportError(err, shown, signal.aborted), { cause: err });
    }
    if (res.statusCode === 200) {
      // HM9000 looked at the status only; the body ({} from the CC) is read and dropped.
      await res.body.dump().catch(() => undefined);
      return;
    }
    const text = await res.body.text().catch(() => '');
    throw new Error(this.describeStatus(res.statusCode, shown, text));
  }

  private describeStatus(status: number, shown: string, body: string): string {
    const head = `CC answered ${status} for POST ${shown}`;
    const detail = answerDetail(body);
    switch (status) {
      case 404:
        return `${head}: is the Cloud Controller configured to use this health manager? (it also answers 404 for an app it does not know)${detail}`;
      case 401:
      case 403:
        return `${head}: the Cloud Controller refused sinks.${this.o.id}.user / password${detail}`;
      default:
        return `${head}${detail}`;
    }
  }

  private describeTransportError(err: unknown, shown: string, timedOut: boolean): string {
    const id = this.o.id;
    const head = `POST ${shown} failed`;
    const code = errorCode(err);
    const checkUrl = `check sinks.${id}.cc_url (the Cloud Controller's internal URL)`;
    if (timedOut || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
      return `${head}: no answer within ${this.o.timeoutMs}ms (sinks.${id}.timeout)`;
    }
    if (code === 'UND_ERR_CONNECT_TIMEOUT') return `${head}: timed out connecting to ${this.host} after ${this.o.timeoutMs}ms: ${checkUrl}`;
    if (code === 'ECONNREFUSED') return `${head}: connection refused by ${this.host}: ${checkUrl}`;
    if (code !== undefined && DNS_CODES.has(code)) return `${head}: cannot resolve ${this.host} (${code}): ${checkUrl}`;
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
      return `${head}: the CC certificate is not valid for ${this.host} (${code}): use a name the certificate carries in sinks.${id}.cc_url, or sinks.${id}.skip_cert_verify: true`;
    }
    if (code !== undefined && TLS_TRUST_CODES.has(code)) {
      return `${head}: the CC certificate for ${this.host} is not trusted (${code}): set sinks.${id}.ca_file, or sinks.${id}.skip_cert_verify: true`;
    }
    if (code === 'EPROTO' || code?.startsWith('ERR_SSL_')) {
      return `${head}: TLS handshake with ${this.host} failed (${code}): is sinks.${id}.cc_url https:// only where the CC speaks TLS?`;
    }
    return `${head}: ${code ? `${code}: ` : ''}${maskUrl(errorText(err))}`;
  }

  /** Closes the agent; waits for a request in flight (bounded by the timeout). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.agent.close();
  }
}
