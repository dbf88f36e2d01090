/**
 * How records are written in etcd. Agent records and desired chunks are compact JSON arrays (they are
 * most of the bytes); the few crash counts, pending messages and freshness markers are plain JSON
 * objects, readable in `dump --raw`.
 */
import type { CrashCount, DesiredApp, FreshnessMarker, InstanceHeartbeat, PendingStart, PendingStop } from '../../src/pipeline/store.js';

export class CodecError extends Error {}

function fail(what: string, detail: string): never {
  throw new CodecError(`${what}: ${detail}`);
}

function parse(what: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    return fail(what, `not JSON (${(err as Error).message})`);
  }
}

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

function isNumber(v: unknown): v is number {
  return typeof v === 'number';
}

// --- agents ---

/**
 * One agent's key: who wrote it (`w`, a store instance), until when the write vouches for the
 * agent's presence (`x`, clock ms), and its instances in reported order. Instances name their app
 * by index into `p`, the agent's distinct (app, version) pairs, so guids are not repeated:
 *
 *   {"w":"k3x9…","x":1700000090000,"p":[["app-guid","v1"]],"i":[[0,"instance-guid",0,"RUNNING",1700000000.5]]}
 *
 * An instance may carry two trailing fields: its CC partition (or null) and, only when it differs
 * from the key's agent, its own agent.
 */
export interface AgentValue {
  writer: string;
  vouchedUntil: number;
  instances: readonly InstanceHeartbeat[];
}

type EncodedInstance = [number, string, number, string, number, ...(string | null)[]];

export function encodeAgent(agent: string, value: AgentValue): string {
  const pairs: [string, string][] = [];
  const pairIndex = new Map<string, number>();
  const list: EncodedInstance[] = [];
  for (const inst of value.instances) {
    const pairKey = `${inst.app}\u0000${inst.version}`;
    let p = pairIndex.get(pairKey);
    if (p === undefined) {
      p = pairs.length;
      pairs.push([inst.app, inst.version]);
      pairIndex.set(pairKey, p);
    }
    const row: EncodedInstance = [p, inst.instance, inst.index, inst.state, inst.stateTimestamp];
    if (inst.agent !== agent) row.push(inst.ccPartition ?? null, inst.agent);
    else if (inst.ccPartition !== undefined) row.push(inst.ccPartition);
    list.push(row);
  }
  return JSON.stringify({ w: value.writer, x: value.vouchedUntil, p: pairs, i: list });
}

export function decodeAgent(agent: string, text: string): AgentValue {
  const what = `agent ${agent}`;
  const v = parse(what, text) as { w?: unknown; x?: unknown; p?: unknown; i?: unknown };
  if (typeof v !== 'object' || v === null) fail(what, 'not an object');
  if (!isString(v.w) || !isNumber(v.x) || !Array.isArray(v.p) || !Array.isArray(v.i)) fail(what, 'missing w, x, p or i');
  const pairs = v.p as unknown[];
  for (const pair of pairs) {
    if (!Array.isArray(pair) || !isString(pair[0]) || !isString(pair[1])) fail(what, 'bad app pair');
  }
  const instances: InstanceHeartbeat[] = [];
  for (const row of v.i as unknown[]) {
    if (!Array.isArray(row) || row.length < 5) fail(what, 'bad instance row');
    const [p, instance, index, state, ts, cc, owner] = row as unknown[];
    const pair = isNumber(p) ? (pairs[p] as [string, string] | undefined) : undefined;
    if (!pair || !isString(instance) || !isNumber(index) || !isString(state) || !isNumber(ts)) fail(what, 'bad instance row');
    const inst: InstanceHeartbeat = { app: pair[0], version: pair[1], instance, index, state, stateTimestamp: ts, agent: isString(owner) ? owner : agent };
    if (isString(cc)) inst.ccPartition = cc;
    instances.push(inst);
  }
  return { writer: v.w, vouchedUntil: v.x, instances };
}

// --- desired state ---

/** One desired app as a row: [guid, version, instances, state, packageState, updatedAt?]. */
export function encodeDesiredApp(app: DesiredApp): string {
  const row: (string | number)[] = [app.guid, app.version, app.instances, app.state, app.packageState];
  if (app.updatedAt !== undefined) row.push(app.updatedAt);
  return JSON.stringify(row);
}

/** A chunk is a JSON array of rows, already encoded and sorted by app key. */
export function joinDesiredChunk(rows: readonly string[]): string {
  return `[${rows.join(',')}]`;
}

export function decodeDesiredChunk(name: string, text: string): DesiredApp[] {
  const what = `desired chunk ${name}`;
  const rows = parse(what, text);
  if (!Array.isArray(rows)) fail(what, 'not an array');
  return rows.map((row: unknown) => {
    if (!Array.isArray(row) || row.length < 5) fail(what, 'bad row');
    const [guid, version, instances, state, packageState, updatedAt] = row as unknown[];
    if (!isString(guid) || !isString(version) || !isNumber(instances) || !isString(state) || !isString(packageState)) fail(what, 'bad row');
    const app: DesiredApp = { guid, version, instances, state, packageState };
    if (isString(updatedAt)) app.updatedAt = updatedAt;
    return app;
  });
}

export interface DesiredMeta {
  chunks: number;
  apps: number;
}

export function encodeDesiredMeta(meta: DesiredMeta): string {
  return JSON.stringify({ chunks: meta.chunks, apps: meta.apps });
}

export function decodeDesiredMeta(text: string): DesiredMeta {
  const v = parse('desired meta', text) as { chunks?: unknown; apps?: unknown };
  if (typeof v !== 'object' || v === null || !isNumber(v.chunks) || !Number.isInteger(v.chunks) || v.chunks < 0) fail('desired meta', 'bad chunks');
  return { chunks: v.chunks, apps: isNumber(v.apps) ? v.apps : 0 };
}

// --- crash counts ---

export interface CrashValue {
  count: CrashCount;
  expiresAt: number;
}

export function encodeCrash(count: CrashCount, expiresAt: number): string {
  return JSON.stringify({ app: count.app, version: count.version, index: count.index, count: count.count, createdAt: count.createdAt, expiresAt });
}

export function decodeCrash(key: string, text: string): CrashValue {
  const what = `crash count ${key}`;
  const v = parse(what, text) as Record<string, unknown>;
  if (typeof v !== 'object' || v === null) fail(what, 'not an object');
  const { app, version, index, count, createdAt, expiresAt } = v;
  if (!isString(app) || !isString(version) || !isNumber(index) || !isNumber(count) || !isNumber(createdAt) || !isNumber(expiresAt)) {
    fail(what, 'missing fields');
  }
  return { count: { app, version, index, count, createdAt }, expiresAt };
}

// --- pending messages ---

export function encodeMessage(m: PendingStart | PendingStop): string {
  return JSON.stringify(m);
}

export function decodeMessage<T extends PendingStart | PendingStop>(what: string, text: string): T {
  const v = parse(what, text) as Record<string, unknown>;
  if (typeof v !== 'object' || v === null || !isString(v.app) || !isString(v.version)) fail(what, 'missing app or version');
  return v as unknown as T;
}

// --- freshness ---

export function encodeFreshness(m: FreshnessMarker): string {
  return JSON.stringify({ timestamp: m.timestamp, expiresAt: m.expiresAt });
}

export function decodeFreshness(what: string, text: string): FreshnessMarker {
  const v = parse(what, text) as Record<string, unknown>;
  if (typeof v !== 'object' || v === null || !isNumber(v.timestamp) || !isNumber(v.expiresAt)) fail(what, 'missing timestamp or expiresAt');
  return Object.freeze({ timestamp: v.timestamp, expiresAt: v.expiresAt });
}

export { sameInstance, sameInstanceSet } from '../../src/pipeline/instances.js';
