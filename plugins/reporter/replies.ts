/**
 * The answers to `healthmanager.status`, `healthmanager.health` and `healthmanager.droplet`
 * (docs/ruby-hm.md#status-health-and-droplet-replies; Ruby `lib/health_manager/reporter.rb`), from
 * the app records. Requests are read in the Ruby HM's order of reading,
 * so a request it could not answer is not answered here either; a malformed one is reported with a
 * reason instead of failing. An app hmgate has no record of gets no reply, and no record is created
 * for it; reading a known app's instances may create records, as every Ruby read path did.
 */
import { dropletJson, type DropletRegistry, getInstance, type InstanceRecord } from '../../src/sdk/index.js';

export interface Answer {
  /** Reply bodies, in order: one for status, one per known app for health and droplet. */
  bodies: string[];
  /** Why the request, or the rest of it, was not answered. */
  bad?: { reason: string; detail: string };
  /** Apps asked about that have no record (no reply for them). */
  unknown: string[];
  /** A status request for a state other than FLAPPING and CRASHED (not answered). */
  ignoredState?: unknown;
}

type Obj = Record<string, unknown>;
type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string; detail: string };

const isObject = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const show = (v: unknown): string => (v === undefined ? 'nothing' : JSON.stringify(v).slice(0, 80));

function parse(data: Uint8Array | string): Parsed<Obj> {
  const raw = typeof data === 'string' ? data : new TextDecoder().decode(data);
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    return { ok: false, reason: 'bad_json', detail: `not JSON: ${(err as Error).message}` };
  }
  if (!isObject(value)) return { ok: false, reason: 'bad_shape', detail: `expected a JSON object, got ${show(value)}` };
  return { ok: true, value };
}

/** An app guid as the Ruby HM read it (`.to_s`): a string, or a number written out. */
function guid(v: unknown, where: string): Parsed<string> {
  if (typeof v === 'string') return { ok: true, value: v };
  if (typeof v === 'number' && Number.isFinite(v)) return { ok: true, value: String(v) };
  if (v === undefined) return { ok: false, reason: 'missing_droplet', detail: `${where} has no "droplet"` };
  return { ok: false, reason: 'bad_droplet', detail: `${where}: "droplet" must be a string, not ${show(v)}` };
}

/** A version: versions are keyed by string, or null while unknown. */
function version(v: unknown, where: string): Parsed<string | null> {
  if (typeof v === 'string' || v === null) return { ok: true, value: v };
  if (v === undefined) return { ok: false, reason: 'missing_version', detail: `${where} has no "version"` };
  return { ok: false, reason: 'bad_version', detail: `${where}: "version" must be a string or null, not ${show(v)}` };
}

const bad = (p: { reason: string; detail: string }, bodies: string[] = [], unknown: string[] = []): Answer => ({
  bodies,
  unknown,
  bad: { reason: p.reason, detail: p.detail },
});

/**
 * `{"droplet","state":"FLAPPING","version"}` → `{"indices":[{"index","since"}…]}` (records of that
 * version in state FLAPPING; since = their state timestamp); `{"droplet","state":"CRASHED"}` →
 * `{"instances":[{"instance","since"}…]}` from the crash records (since = the agent's crash time).
 */
export function statusAnswer(registry: DropletRegistry, data: Uint8Array | string): Answer {
  const m = parse(data);
  if (!m.ok) return bad(m);
  const id = guid(m.value.droplet, 'the request');
  if (!id.ok) return bad(id);
  const d = registry.peek(id.value);
  if (!d) return { bodies: [], unknown: [id.value] };
  if (!('state' in m.value)) return bad({ reason: 'missing_state', detail: 'the request has no "state"' });
  const state = m.value.state;
  if (state === 'FLAPPING') {
    const v = version(m.value.version, 'the request');
    if (!v.ok) return bad(v);
    // Reading a version's instances created its (empty) entry in the Ruby HM, so it is created here.
    let byIndex = d.versions.get(v.value);
    if (!byIndex) {
      byIndex = new Map<number, InstanceRecord>();
      d.versions.set(v.value, byIndex);
    }
    const indices = [...byIndex].filter(([, r]) => r.state === 'FLAPPING').map(([index, r]) => ({ index, since: r.stateTimestamp }));
    return { bodies: [JSON.stringify({ indices })], unknown: [] };
  }
  if (state === 'CRASHED') {
    const instances = [...d.crashes].map(([instance, c]) => ({ instance, since: c.crashTimestamp }));
    return { bodies: [JSON.stringify({ instances })], unknown: [] };
  }
  return { bodies: [], unknown: [], ignoredState: state };
}

/** The `droplets` list of health and droplet requests. */
function entries(m: Obj): Parsed<unknown[]> {
  if (!('droplets' in m)) return { ok: false, reason: 'missing_droplets', detail: 'the request has no "droplets"' };
  if (!Array.isArray(m.droplets)) return { ok: false, reason: 'bad_droplets', detail: `"droplets" must be a list, not ${show(m.droplets)}` };
  return { ok: true, value: m.droplets };
}

/**
 * `{"droplets":[{"droplet","version"}…]}` → one `{"droplet","version","healthy":N}` per known app,
 * N = indices 0…instances-1 whose record of the requested version is RUNNING. A malformed entry
 * ends the request there: the entries before it have their replies.
 */
export function healthAnswer(registry: DropletRegistry, data: Uint8Array | string, nowMs: number): Answer {
  const m = parse(data);
  if (!m.ok) return bad(m);
  const list = entries(m.value);
  if (!list.ok) return bad(list);
  const bodies: string[] = [];
  const unknown: string[] = [];
  for (const [n, e] of list.value.entries()) {
    const where = `droplets[${n}]`;
    if (!isObject(e)) return bad({ reason: 'bad_shape', detail: `${where} must be an object, not ${show(e)}` }, bodies, unknown);
    const id = guid(e.droplet, where);
    if (!id.ok) return bad(id, bodies, unknown);
    const v = version(e.version, where);
    if (!v.ok) return bad(v, bodies, unknown);
    const d = registry.peek(id.value);
    if (!d) {
      unknown.push(id.value);
      continue;
    }
    // Records read into being start DOWN as of now.
    d.nowMs = nowMs;
    let healthy = 0;
    for (let i = 0; i < d.numInstances; i++) if (getInstance(d, i, v.value).state === 'RUNNING') healthy++;
    bodies.push(JSON.stringify({ droplet: id.value, version: v.value, healthy }));
  }
  return { bodies, unknown };
}

/** `{"droplets":[{"droplet"}…]}` → each known app's record as JSON, one reply each. */
export function dropletAnswer(registry: DropletRegistry, data: Uint8Array | string): Answer {
  const m = parse(data);
  if (!m.ok) return bad(m);
  const list = entries(m.value);
  if (!list.ok) return bad(list);
  const bodies: string[] = [];
  const unknown: string[] = [];
  for (const [n, e] of list.value.entries()) {
    const where = `droplets[${n}]`;
    if (!isObject(e)) return bad({ reason: 'bad_shape', detail: `${where} must be an object, not ${show(e)}` }, bodies, unknown);
    const id = guid(e.droplet, where);
    if (!id.ok) return bad(id, bodies, unknown);
    const d = registry.peek(id.value);
    if (d) bodies.push(dropletJson(d));
    else unknown.push(id.value);
  }
  return { bodies, unknown };
}
