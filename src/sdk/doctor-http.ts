/**
 * For a plugin's `doctor` hook: one GET through hmgate's one HTTP client set-up (src/http/client.ts),
 * and a failed request in the words of the problem catalogue: refused, unresolvable, untrusted
 * certificate, no answer in time.
 */
import { Agent } from 'undici';
import { DNS_CODES, errorCode, TLS_TRUST_CODES, UNREACHABLE_CODES } from '../http/client.js';
import { errorText } from '../log.js';
import { makeProblem, type CcWhere, type Problem } from './problems.js';

export interface Answer {
  status: number;
  body: string;
}

/** A GET with a deadline; rejects with the transport error (`timedOut` set when the deadline hit). */
export async function httpGet(agent: Agent, url: URL, path: string, headers: Record<string, string>, timeoutMs: number): Promise<Answer> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await agent.request({ origin: url.origin, path, method: 'GET', headers, signal });
    const body = await res.body.text();
    return { status: res.statusCode, body: body.slice(0, 64 * 1024) };
  } catch (err) {
    if (signal.aborted) throw Object.assign(new Error(`no answer within ${timeoutMs}ms`), { timedOut: true });
    throw err;
  }
}

/** A request that got no HTTP answer, as a catalogued CC problem. */
export function transportProblem(err: unknown, where: CcWhere, host: string, timeoutMs: number, timeoutKey: string): Problem {
  const code = errorCode(err);
  const message = maskedMessage(err);
  if ((err as { timedOut?: boolean }).timedOut || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return makeProblem('CC_TIMEOUT', { ...where, error: `no answer within ${timeoutMs}ms`, timeoutKey });
  }
  if (code === 'UND_ERR_CONNECT_TIMEOUT')
    return makeProblem('CC_TIMEOUT', { ...where, error: `timed out connecting to ${host} after ${timeoutMs}ms`, timeoutKey });
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return makeProblem('CC_TLS_NAME_MISMATCH', { ...where, error: `${code}: ${host}` });
  if (code !== undefined && TLS_TRUST_CODES.has(code)) return makeProblem('CC_TLS_UNTRUSTED', { ...where, error: code });
  if (code === 'ECONNREFUSED') return makeProblem('CC_UNREACHABLE', { ...where, error: `connection refused by ${host} (ECONNREFUSED)` });
  if (code !== undefined && DNS_CODES.has(code))
    return makeProblem('CC_UNREACHABLE', { ...where, error: `cannot resolve ${host.replace(/:\d+$/, '')} (DNS ${code})` });
  if (code !== undefined && UNREACHABLE_CODES.has(code)) return makeProblem('CC_UNREACHABLE', { ...where, error: `cannot reach ${host} (${code})` });
  if (code === 'EPROTO' || code?.startsWith('ERR_SSL_')) {
    return makeProblem('CC_UNREACHABLE', { ...where, error: `TLS handshake with ${host} failed (${code}): is it https:// where the CC does not speak TLS?` });
  }
  return makeProblem('CC_UNREACHABLE', { ...where, error: `the request failed (${code ? `${code}: ` : ''}${message})` });
}

function maskedMessage(err: unknown): string {
  return errorText(err).replace(/\/\/([^:/@]*):[^@/]*@/g, '//$1:***@');
}

/** CC's error body (`{"error_code":…,"description":…}`) in a few words, or ''. */
export function ccErrorDetail(body: string): string {
  try {
    const doc = JSON.parse(body) as { error_code?: unknown; description?: unknown };
    const parts = [doc.error_code, doc.description].filter((v): v is string => typeof v === 'string' && v !== '');
    if (parts.length > 0) return ` (${parts.join(': ').slice(0, 200)})`;
  } catch {
    /* not CC's error JSON */
  }
  return '';
}
