/**
 * HM9000's App JSON (docs/hm9000.md#app-json, B format) and the app-state answers built from it, rendered byte for
 * byte as HM9000's Go encoding/json wrote them. The one place that renders it: the HTTP
 * `/bulk_app_state` route and the NATS `app.state` / `app.state.bulk` replies both come through here.
 *
 * What "byte for byte" takes, beyond key order:
 * - strings escaped as Go escapes them: `<`, `>`, `&`, U+2028 and U+2029 as \u003c, \u003e, \u0026,
 *   \u2028, \u2029; control characters other than \n, \r, \t as \u00XX (lower-case hex); a lone
 *   surrogate (which Go could not have held) as \ufffd;
 * - `state_timestamp` (a float64 in Go) formatted as the Go of HM9000's time did (see FloatFormat);
 * - integers without exponent; crash counts' `created_at` in Unix seconds;
 * - the bulk object's keys sorted by their UTF-8 bytes (Go sorts map keys); no trailing newline.
 *
 * Parsing the requests follows Go's json.Unmarshal into `[]struct{droplet, version string}`: `null`
 * is an empty request, a null element or field is left empty, field names match case-insensitively,
 * unknown fields are ignored, and a value of the wrong type fails the whole request.
 */
import type { AppView } from '../sdk/app-view.js';
import { appKey, type AppKey } from '../sdk/app-key.js';
import { type CrashCount, type StoreSnapshot } from '../sdk/state.js';

/** Every failure answers this (HTTP 200 and NATS alike). */
export const EMPTY_APP_STATE = '{}';

export interface AppStateRequest {
  droplet: string;
  version: string;
}

/**
 * How a float64 is written:
 * - `g`: Go before 1.8, which built HM9000 B (2016) and H (2017): strconv's shortest `%g`, so
 *   exponent form from 1e+06 up and below 1e-04 — an agent's Unix-seconds state timestamp
 *   1452700000.5 is written `1.4527000005e+09`;
 * - `es6`: Go 1.8 and later, identical to JavaScript's number formatting (`1452700000.5`).
 * Both agree on every value in [1e-4, 1e6), e.g. 1123.2, 0, 12. The default is `es6`: HM9000 as
 * it is built today (Go 1.19, shared/peers) writes `1700000000.1`, checked side by side.
 */
export type FloatFormat = 'g' | 'es6';
export const DEFAULT_FLOAT_FORMAT: FloatFormat = 'es6';

export interface RenderOptions {
  floatFormat?: FloatFormat;
}

/** Thrown for a value Go's encoder refuses (NaN, ±Inf); callers answer `{}`. */
export class UnsupportedValueError extends Error {
  constructor(value: number) {
    super(`json: unsupported value: ${value}`);
    this.name = 'UnsupportedValueError';
  }
}

const HEX = '0123456789abcdef';

/** A JSON string literal exactly as Go's encoding/json writes it (HTML-safe escaping on). */
export function goJsonString(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | undefined;
    if (c < 0x20) {
      esc = c === 0x0a ? '\\n' : c === 0x0d ? '\\r' : c === 0x09 ? '\\t' : `\\u00${HEX[c >> 4]}${HEX[c & 0xf]}`;
    } else if (c === 0x22) {
      esc = '\\"';
    } else if (c === 0x5c) {
      esc = '\\\\';
    } else if (c === 0x3c || c === 0x3e || c === 0x26) {
      esc = `\\u00${HEX[c >> 4]}${HEX[c & 0xf]}`;
    } else if (c === 0x2028 || c === 0x2029) {
      esc = `\\u${c.toString(16)}`;
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const next = s.charCodeAt(i + 1);
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++; // a valid pair: written as is
        continue;
      }
      esc = '\\ufffd';
    }
    if (esc !== undefined) {
      out += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}

/** A float64 as Go's encoding/json writes it (see FloatFormat). */
export function goFloat(x: number, format: FloatFormat = DEFAULT_FLOAT_FORMAT): string {
  if (!Number.isFinite(x)) throw new UnsupportedValueError(x);
  if (x === 0) return Object.is(x, -0) ? '-0' : '0';
  if (format === 'es6') return String(x);
  // strconv.FormatFloat(x, 'g', -1, 64): the shortest digits (the same digits JavaScript picks), in
  // exponent form when the decimal exponent is < -4 or >= 6, with at least two exponent digits.
  const [mantissa, e] = x.toExponential().split('e') as [string, string];
  const exp = Number(e);
  if (exp < -4 || exp >= 6) return `${mantissa}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  return String(x);
}

/** A Go int: never an exponent, never a fraction. */
export function goInt(x: number): string {
  if (!Number.isFinite(x)) throw new UnsupportedValueError(x);
  return BigInt(Math.trunc(x)).toString();
}

/** HM9000's GetApp: an app exists if it is desired or has a live instance; crash counts alone do not count. */
export function appExists(app: AppView): boolean {
  // HM9000 also refused to build an app whose guid or version is empty.
  return app.guid !== '' && app.version !== '' && (app.desired !== undefined || app.instances.length > 0);
}

function crashCountJson(c: CrashCount): string {
  return (
    `{"droplet":${goJsonString(c.app)},"version":${goJsonString(c.version)},"instance_index":${goInt(c.index)},` +
    `"crash_count":${goInt(c.count)},"created_at":${goInt(Math.floor(c.createdAt / 1000))}}`
  );
}

/**
 * One app as HM9000's App.ToJSON wrote it. `desired` is the zero object when the app is not desired;
 * instances are in store order; crash counts (a Go map, so in no fixed order there) by index.
 * Throws UnsupportedValueError for a non-finite number.
 */
export function appJson(app: AppView, opts: RenderOptions = {}): string {
  const fmt = opts.floatFormat ?? DEFAULT_FLOAT_FORMAT;
  const d = app.desired;
  const desired = d
    ? `{"id":${goJsonString(d.guid)},"version":${goJsonString(d.version)},"instances":${goInt(d.instances)},"state":${goJsonString(d.state)},"package_state":${goJsonString(d.packageState)}}`
    : '{"id":"","version":"","instances":0,"state":"","package_state":""}';
  const instances = app.instances.map(
    (i) =>
      `{"droplet":${goJsonString(i.app)},"version":${goJsonString(i.version)},"instance":${goJsonString(i.instance)},"index":${goInt(i.index)},` +
      `"state":${goJsonString(i.state)},"state_timestamp":${goFloat(i.stateTimestamp, fmt)},"dea_guid":${goJsonString(i.agent)}}`,
  );
  const crashes = [...app.crashCounts.entries()].sort(([a], [b]) => a - b).map(([, c]) => crashCountJson(c));
  return (
    `{"droplet":${goJsonString(app.guid)},"version":${goJsonString(app.version)},"desired":${desired},` +
    `"instance_heartbeats":[${instances.join(',')}],"crash_counts":[${crashes.join(',')}]}`
  );
}

/** Where the answers look apps up: a Map from buildAppViews, or appViewLookup(snapshot). */
export interface AppLookup {
  get(key: AppKey): AppView | undefined;
}

/**
 * The AppView of one (guid, version), built only when asked — as buildAppViews would build it, so
 * an answer costs the apps it names rather than the whole foundation.
 */
export function appViewLookup(snapshot: StoreSnapshot): AppLookup {
  const built = new Map<AppKey, AppView | undefined>();
  return {
    get(key: AppKey): AppView | undefined {
      if (built.has(key)) return built.get(key);
      let view: AppView | undefined;
      const desired = snapshot.desired.get(key);
      const instances = snapshot.instances.get(key) ?? [];
      if (desired || instances.length > 0) {
        const first = instances[0];
        const crashCounts = new Map<number, CrashCount>();
        for (const c of snapshot.crashCounts.get(key) ?? []) crashCounts.set(c.index, c);
        view = {
          key,
          guid: desired ? desired.guid : first!.app,
          version: desired ? desired.version : first!.version,
          desired,
          instances,
          crashCounts,
        };
      }
      built.set(key, view);
      return view;
    },
  };
}

const utf8Compare = (a: string, b: string): number => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

/**
 * The `/bulk_app_state` and `app.state.bulk` answer: an object keyed by app guid holding the App
 * JSON of each requested (guid, version) that exists; unknown apps are left out; two versions of one
 * guid collapse, the later request winning; `{}` when nothing was found or anything fails.
 */
export function bulkAppStateBody(apps: AppLookup, requests: readonly AppStateRequest[], opts: RenderOptions = {}): string {
  try {
    const found = new Map<string, AppView>();
    for (const r of requests) {
      const app = apps.get(appKey(r.droplet, r.version));
      if (app && appExists(app)) found.set(app.guid, app);
    }
    const entries = [...found.entries()].sort(([a], [b]) => utf8Compare(a, b));
    return `{${entries.map(([guid, app]) => `${goJsonString(guid)}:${appJson(app, opts)}`).join(',')}}`;
  } catch {
    return EMPTY_APP_STATE;
  }
}

/** The `app.state` answer: the App JSON of one app, or `{}` when it does not exist or cannot be written. */
export function singleAppStateBody(apps: AppLookup, request: AppStateRequest, opts: RenderOptions = {}): string {
  try {
    const app = apps.get(appKey(request.droplet, request.version));
    return app && appExists(app) ? appJson(app, opts) : EMPTY_APP_STATE;
  } catch {
    return EMPTY_APP_STATE;
  }
}

export type ParsedRequest<T> = { ok: true; value: T } | { ok: false; reason: 'bad_json' | 'invalid'; detail: string };

const utf8 = new TextDecoder('utf-8', { ignoreBOM: true });

/**
 * Request bytes as Go saw them: invalid UTF-8 becomes U+FFFD, and a byte-order mark is kept (so it
 * fails to parse, as it did in Go) rather than silently dropped.
 */
export function decodeRequestBody(data: Uint8Array | string): string {
  return typeof data === 'string' ? data : utf8.decode(data);
}

/** Go's field-name match: exact, or case-insensitive with ſ (U+017F) ≈ s and K (U+212A) ≈ k. */
function fieldOf(key: string): keyof AppStateRequest | undefined {
  if (key === 'droplet' || key === 'version') return key;
  const folded = key
    .replace(/\u017f/g, 's')
    .replace(/\u212a/g, 'k')
    .replace(/[A-Z]/g, (c) => c.toLowerCase());
  return folded === 'droplet' || folded === 'version' ? folded : undefined;
}

const kind = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function toRequest(v: unknown, where: string): ParsedRequest<AppStateRequest> {
  const request: AppStateRequest = { droplet: '', version: '' };
  if (v === null) return { ok: true, value: request };
  if (typeof v !== 'object' || Array.isArray(v)) return { ok: false, reason: 'invalid', detail: `${where} is ${kind(v)}, not an object` };
  for (const [key, value] of Object.entries(v as Record<string, unknown>)) {
    const field = fieldOf(key);
    if (field === undefined || value === null) continue;
    if (typeof value !== 'string') return { ok: false, reason: 'invalid', detail: `${where}.${field} is ${kind(value)}, not a string` };
    request[field] = value;
  }
  return { ok: true, value: request };
}

function parseJson(text: string): { ok: true; value: unknown } | { ok: false; reason: 'bad_json'; detail: string } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { ok: false, reason: 'bad_json', detail: (err as Error).message };
  }
}

/** An `app.state.bulk` / `/bulk_app_state` request: `[{"droplet":..,"version":..}, ...]`. */
export function parseBulkAppStateRequest(text: string): ParsedRequest<AppStateRequest[]> {
  const json = parseJson(text);
  if (!json.ok) return json;
  if (json.value === null) return { ok: true, value: [] };
  if (!Array.isArray(json.value)) return { ok: false, reason: 'invalid', detail: `the request is ${kind(json.value)}, not an array` };
  const requests: AppStateRequest[] = [];
  for (let i = 0; i < json.value.length; i++) {
    const r = toRequest(json.value[i], `[${i}]`);
    if (!r.ok) return r;
    requests.push(r.value);
  }
  return { ok: true, value: requests };
}

/** An `app.state` request: `{"droplet":..,"version":..}`. */
export function parseAppStateRequest(text: string): ParsedRequest<AppStateRequest> {
  const json = parseJson(text);
  return json.ok ? toRequest(json.value, 'the request') : json;
}
