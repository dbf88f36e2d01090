/**
 * The pure part of the CC bulk API walk (docs/hm9000.md#desired-state): the request path, one page's body turned
 * into kept apps and the next token, the NATS credentials reply, and transport errors in words.
 * Nothing here does I/O or throws on bad input, so it can be fuzzed in-process.
 */
import { type DesiredApp, DNS_CODES, epochSeconds, errorCode, TLS_TRUST_CODES, UNREACHABLE_CODES } from '../../src/sdk/index.js';

/** HM9000 starts every walk with the literal token `{}`. */
export const FIRST_TOKEN = '{}';

/**
 * The request target of one page. HM9000 builds it with fmt.Sprintf, so the token goes on the
 * wire as raw JSON: `bulk_token={"id":5}`, not `bulk_token=%7B%22id%22%3A5%7D`. It is handed to
 * undici as a `path` (Dispatcher.request({ origin, path })), which writes it into the request line
 * byte for byte: undici only rejects bytes outside 0x21–0xFF there, and `{`, `"`, `:`, `}` are
 * inside. A WHATWG URL (fetch(), request(url)) would percent-encode the `"` as %22.
 */
export function bulkAppsPath(basePath: string, batchSize: number, token: string): string {
  return `${basePath}/bulk/apps?batch_size=${batchSize}&bulk_token=${token}`;
}

export type PageResult =
  | {
      ok: true;
      /** true on the final page: a 200 whose `results` is empty. */
      done: boolean;
      /** Number of entries in `results`. */
      results: number;
      /** STARTED apps whose package is STAGED or PENDING, in page order. */
      kept: DesiredApp[];
      /** The token for the next page (`{"id":N}`), null on the final page. */
      nextToken: string | null;
    }
  | { ok: false; reason: string };

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** What a JSON value is, for reasons: "a string", "null", "an array", … */
export function describeJson(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  switch (typeof v) {
    case 'string':
      return `a string`;
    case 'number':
      return `the number ${String(v).slice(0, 30)}`;
    case 'boolean':
      return `${v}`;
    case 'object':
      return 'an object';
    default:
      return typeof v;
  }
}

/** A result key, quoted and cut short, safe to put in a log line. */
function keyText(key: string): string {
  const quoted = JSON.stringify(key);
  return quoted.length > 60 ? `${quoted.slice(0, 57)}…"` : quoted;
}

function fail(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

const KEPT_PACKAGE_STATES = new Set(['STAGED', 'PENDING']);

/**
 * One page's body. HM9000 unmarshals it into `{results: map[string]DesiredAppState, bulk_token:
 * {id int}}`, so a field of the wrong JSON type fails the whole page, as here. Two cases where
 * HM9000 would go on are failures here, because going on is harmful: a body without a `results`
 * object (Go reads it as an empty page, ending the walk with whatever was gathered, possibly
 * nothing), and a non-empty page without an integer `bulk_token.id` (Go sends `{"id":0}` next and
 * walks from the start again until its timeout).
 */
export function parseBulkPage(body: string): PageResult {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0]!.slice(0, 120) : 'unparseable';
    return fail(`a body that is not JSON (${detail})`);
  }
  if (!isObject(doc)) return fail(`a page of the wrong shape: the body must be an object with results and bulk_token, not ${describeJson(doc)}`);

  const results = doc.results;
  if (!isObject(results)) return fail(`a page of the wrong shape: results must be an object of apps keyed by guid, not ${describeJson(results)}`);

  const token = doc.bulk_token;
  let id: number | null = null;
  if (token !== undefined && token !== null) {
    if (!isObject(token)) return fail(`a page of the wrong shape: bulk_token must be an object like {"id":5}, not ${describeJson(token)}`);
    if (token.id !== undefined && token.id !== null) {
      if (typeof token.id !== 'number' || !Number.isSafeInteger(token.id)) {
        return fail(`a page of the wrong shape: bulk_token.id must be an integer, not ${describeJson(token.id)}`);
      }
      id = token.id;
    }
  }

  const entries = Object.entries(results);
  if (entries.length === 0) return { ok: true, done: true, results: 0, kept: [], nextToken: null };
  if (id === null) return fail('a page of the wrong shape: a page with results must carry bulk_token {"id": <integer>} for the next page');

  const kept: DesiredApp[] = [];
  for (const [key, entry] of entries) {
    const where = `results[${keyText(key)}]`;
    if (!isObject(entry)) return fail(`a page of the wrong shape: ${where} must be an app object, not ${describeJson(entry)}`);
    // As Go's decoder: a field present with the wrong type fails; absent or null is its zero value.
    for (const field of ['id', 'version', 'state', 'package_state'] as const) {
      const v = entry[field];
      if (v !== undefined && v !== null && typeof v !== 'string') {
        return fail(`a page of the wrong shape: ${where}.${field} must be a string, not ${describeJson(v)}`);
      }
    }
    const instances = entry.instances;
    if (instances !== undefined && instances !== null && (typeof instances !== 'number' || !Number.isSafeInteger(instances) || instances < 0)) {
      return fail(`a page of the wrong shape: ${where}.instances must be a whole number, not ${describeJson(instances)}`);
    }
    const state = (entry.state as string | null | undefined) ?? '';
    const packageState = (entry.package_state as string | null | undefined) ?? '';
    if (state !== 'STARTED' || !KEPT_PACKAGE_STATES.has(packageState)) continue;
    // An app that is desired must say which app, which version and how many instances.
    const guid = entry.id as string | null | undefined;
    const version = entry.version as string | null | undefined;
    if (typeof guid !== 'string' || guid === '') return fail(`a page of the wrong shape: ${where}.id (the app guid) is missing`);
    if (typeof version !== 'string' || version === '') return fail(`a page of the wrong shape: ${where}.version is missing`);
    if (typeof instances !== 'number') return fail(`a page of the wrong shape: ${where}.instances is missing`);
    const app: DesiredApp = { guid, version, instances, state, packageState };
    if (typeof entry.updated_at === 'string') app.updatedAt = entry.updated_at;
    kept.push(app);
  }
  // HM9000 re-serialises the token it parsed, a struct holding only the integer id.
  return { ok: true, done: false, results: entries.length, kept, nextToken: JSON.stringify({ id }) };
}

export type CredentialsResult = { ok: true; user: string; password: string } | { ok: false; reason: string };

/**
 * The CC's reply on the credentials subject: `{"user":"..","password":".."}`. The reason never
 * quotes the reply, which may hold the password.
 */
export function parseCredentials(data: Uint8Array): CredentialsResult {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder().decode(data));
  } catch {
    return { ok: false, reason: 'the reply is not JSON' };
  }
  if (!isObject(doc)) return { ok: false, reason: `the reply must be an object {"user","password"}, not ${describeJson(doc)}` };
  if (typeof doc.user !== 'string') return { ok: false, reason: `the reply's user must be a string, not ${describeJson(doc.user)}` };
  if (typeof doc.password !== 'string')
    return { ok: false, reason: `the reply's password must be a string, not ${doc.password === undefined ? 'missing' : 'of another type'}` };
  return { ok: true, user: doc.user, password: doc.password };
}

export interface TransportContext {
  /** The stage id, for `sources.<id>.…` in the advice. */
  id: string;
  /** The base URL, already masked. */
  url: string;
  /** host[:port] of the URL. */
  host: string;
  networkTimeoutMs: number;
}

/** A transport error (no HTTP answer) in words, with what to change. */
export function describeTransportError(err: unknown, t: TransportContext): string {
  const code = errorCode(err);
  const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
  const checkUrl = `check sources.${t.id}.url — it must be the Cloud Controller's domain or IP`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') {
    return `the CC certificate is not valid for ${t.host} (${code}): put a name the certificate carries in sources.${t.id}.url, or sources.${t.id}.skip_cert_verify: true`;
  }
  if (code !== undefined && TLS_TRUST_CODES.has(code)) {
    return `the CC certificate for ${t.host} is not trusted (${code}): set sources.${t.id}.ca_file, or sources.${t.id}.skip_cert_verify: true`;
  }
  if (code === 'ECONNREFUSED') return `connection refused by ${t.url} (${code}): ${checkUrl}`;
  if (code !== undefined && DNS_CODES.has(code)) return `cannot resolve the host of ${t.url} (DNS ${code}): ${checkUrl}`;
  if (code !== undefined && UNREACHABLE_CODES.has(code)) return `cannot reach ${t.url} (${code}): ${checkUrl}`;
  if (code === 'UND_ERR_CONNECT_TIMEOUT') {
    return `timed out connecting to ${t.url} after ${t.networkTimeoutMs}ms (sources.${t.id}.network_timeout): ${checkUrl}`;
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return `timed out: the CC bulk API at ${t.url} did not answer within ${t.networkTimeoutMs}ms (sources.${t.id}.network_timeout)`;
  }
  if (code === 'EPROTO' || code?.startsWith('ERR_SSL_')) {
    return `TLS handshake with ${t.host} failed (${code}: ${message}): check that sources.${t.id}.url is https:// only where the CC speaks TLS`;
  }
  return `HTTP request to the CC bulk API at ${t.url} failed (${code ? `${code}: ` : ''}${message})`;
}

// --- the Ruby HM's walk (walk: ruby) ---

/** The Cloud Controller's base URL: a bare host[:port][/path] gets http:// in front (bulk_api.host). */
export function bulkBaseUrl(url: string): string {
  return /^https?:\/\//i.test(url) ? url : `http://${url}`;
}

const UNRESERVED = /[A-Za-z0-9_.-]/;

/**
 * A query value as the Ruby HM's HTTP client wrote it: every UTF-8 byte outside A–Z a–z 0–9 _ . -
 * as %XX in upper case (so `{}` is `%7B%7D`, a space `%20`).
 */
export function percentEncode(value: string): string {
  let out = '';
  for (const ch of value) {
    if (UNRESERVED.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of Buffer.from(ch, 'utf8')) out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** One page of the Ruby walk: the token is the JSON of whatever the CC sent, percent-encoded. */
export function rubyAppsPath(basePath: string, batchSize: number, token: string): string {
  return `${basePath}/bulk/apps?batch_size=${percentEncode(String(batchSize))}&bulk_token=${percentEncode(token)}`;
}

export function userCountsPath(basePath: string): string {
  return `${basePath}/bulk/counts?model=user`;
}

/** An app the Ruby walk could not take, with why (the Ruby HM stopped on these; we skip the app). */
export interface SkippedApp {
  app: string;
  reason: string;
}

export type RubyPageResult =
  | {
      ok: true;
      /** true when `results` is missing, null or empty: the walk is complete. */
      done: boolean;
      /** Number of entries in `results`. */
      results: number;
      /** Every app of the page, whatever its state, in page order. */
      apps: DesiredApp[];
      skipped: SkippedApp[];
      /** The JSON of the page's bulk_token; null when the page carries none. */
      nextToken: string | null;
    }
  | { ok: false; reason: string };

function isEmptyResults(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v) || typeof v === 'string') return v.length === 0;
  return isObject(v) && Object.keys(v).length === 0;
}

/** Why an entry cannot be an app's desired state, or null if it can. */
function rubyEntryProblem(entry: unknown): string | null {
  if (!isObject(entry)) return `the entry must be an app object, not ${describeJson(entry)}`;
  for (const field of ['state', 'version', 'package_state'] as const) {
    if (typeof entry[field] !== 'string') return `${field} must be a string, not ${describeJson(entry[field])}`;
  }
  const instances = entry.instances;
  if (typeof instances !== 'number' || !Number.isSafeInteger(instances) || instances < 0)
    return `instances must be a whole number, not ${describeJson(instances)}`;
  if (typeof entry.memory !== 'number' || !Number.isFinite(entry.memory)) return `memory must be a number, not ${describeJson(entry.memory)}`;
  if (typeof entry.updated_at !== 'string') return `updated_at must be a time, not ${describeJson(entry.updated_at)}`;
  if (epochSeconds(entry.updated_at) === null) return `updated_at ${keyText(entry.updated_at)} is not a time`;
  return null;
}

/**
 * One page's body as the Ruby HM read it: `results` keyed by app guid, any app state kept, a
 * missing or empty `results` ending the walk, and `bulk_token` opaque (sent back as it came). An
 * app missing state, instances, version, package_state, updated_at or memory is skipped with a
 * reason, the rest of the page is kept (the Ruby HM's walk died there).
 */
export function parseRubyPage(body: string): RubyPageResult {
  let doc: unknown;
  try {
    doc = JSON.parse(body);
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0]!.slice(0, 120) : 'unparseable';
    return fail(`a body that is not JSON (${detail})`);
  }
  if (!isObject(doc)) return fail(`a page of the wrong shape: the body must be an object with results and bulk_token, not ${describeJson(doc)}`);
  const results = doc.results;
  const token = doc.bulk_token;
  const nextToken = token === undefined || token === null ? null : JSON.stringify(token);
  if (isEmptyResults(results)) return { ok: true, done: true, results: 0, apps: [], skipped: [], nextToken };
  if (!isObject(results)) return fail(`a page of the wrong shape: results must be an object of apps keyed by guid, not ${describeJson(results)}`);
  const apps: DesiredApp[] = [];
  const skipped: SkippedApp[] = [];
  const entries = Object.entries(results);
  for (const [guid, entry] of entries) {
    const problem = guid === '' ? 'the app guid (its key in results) is empty' : rubyEntryProblem(entry);
    if (problem !== null) {
      skipped.push({ app: guid, reason: problem });
      continue;
    }
    const e = entry as Json;
    apps.push({
      guid,
      version: e.version as string,
      instances: e.instances as number,
      state: e.state as string,
      packageState: e.package_state as string,
      updatedAt: e.updated_at as string,
      memory: e.memory as number,
    });
  }
  return { ok: true, done: false, results: entries.length, apps, skipped, nextToken };
}

/** `counts.user` of a /bulk/counts answer (0 when absent, as the Ruby HM read it); null if unreadable. */
export function parseUserCount(body: string): number | null {
  try {
    const doc = JSON.parse(body) as unknown;
    if (!isObject(doc)) return null;
    const counts = doc.counts ?? {};
    if (!isObject(counts)) return null;
    const user = counts.user ?? 0;
    if (typeof user === 'number' && Number.isFinite(user)) return Math.trunc(user);
    if (typeof user === 'string' && /^\s*[+-]?\d/.test(user)) return Number.parseInt(user, 10);
    return null;
  } catch {
    return null;
  }
}
