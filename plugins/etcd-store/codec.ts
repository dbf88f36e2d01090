/**
 * How records are written in etcd. Agent records, their deltas and desired chunks are compact JSON
 * arrays (they are most of the bytes); the few crash counts, pending messages and freshness markers
 * are plain JSON objects, readable in `dump --raw`.
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

// --- agent deltas ---

/**
 * What changed in an agent's instances since its record was written, when only states changed:
 * the record it applies to (`b`, the record key's mod revision), until when it vouches for the
 * agent (`x`, as in the record), and one row per changed instance — its position in the record's
 * `i`, its state and state timestamp, and its index only when that changed too:
 *
 *   {"b":4711,"x":1700000120000,"i":[[37,"CRASHED",1700000001],[52,"RUNNING",1700000003,4]]}
 */
export type DeltaRow = [number, string, number] | [number, string, number, number];

export interface AgentDelta {
  base: number;
  vouchedUntil: number;
  rows: readonly DeltaRow[];
}

export function encodeAgentDelta(delta: AgentDelta): string {
  return JSON.stringify({ b: delta.base, x: delta.vouchedUntil, i: delta.rows });
}

export function decodeAgentDelta(agent: string, text: string): AgentDelta {
  const what = `delta of agent ${agent}`;
  const v = parse(what, text) as { b?: unknown; x?: unknown; i?: unknown };
  if (typeof v !== 'object' || v === null) fail(what, 'not an object');
  if (!isNumber(v.b) || !isNumber(v.x) || !Array.isArray(v.i)) fail(what, 'missing b, x or i');
  for (const row of v.i as unknown[]) {
    if (!Array.isArray(row) || row.length < 3 || !Number.isInteger(row[0]) || (row[0] as number) < 0 || !isString(row[1]) || !isNumber(row[2])) fail(what, 'bad row');
    if (row.length > 3 && !isNumber(row[3])) fail(what, 'bad row');
  }
  return { base: v.b, vouchedUntil: v.x, rows: v.i as DeltaRow[] };
}

/** The same instance but for what a delta row carries (state, state timestamp, index). */
function sameIdentity(a: InstanceHeartbeat, b: InstanceHeartbeat): boolean {
  return a.instance === b.instance && a.app === b.app && a.version === b.version && a.agent === b.agent && a.ccPartition === b.ccPartition;
}

function rowOf(pos: number, from: InstanceHeartbeat, to: InstanceHeartbeat): DeltaRow | undefined {
  if (from.state === to.state && from.stateTimestamp === to.stateTimestamp && from.index === to.index) return undefined;
  return from.index === to.index ? [pos, to.state, to.stateTimestamp] : [pos, to.state, to.stateTimestamp, to.index];
}

/**
 * The delta rows that turn `record` into `next`, or undefined when they are not the same instances
 * (one added, removed, or moved to another app, version, agent or partition): then only a new
 * record says it. Any order of `next`; allocation-free when it is the record's order.
 */
export function diffInstances(record: readonly InstanceHeartbeat[], next: readonly InstanceHeartbeat[]): DeltaRow[] | undefined {
  if (record.length !== next.length) return undefined;
  const rows: DeltaRow[] = [];
  let i = 0;
  for (; i < record.length && sameIdentity(record[i]!, next[i]!); i++) {
    const row = rowOf(i, record[i]!, next[i]!);
    if (row) rows.push(row);
  }
  if (i === record.length) return rows;
  // Another order: match by instance guid (which must then be unique in the record).
  const at = new Map<string, number>();
  for (let p = 0; p < record.length; p++) {
    if (at.has(record[p]!.instance)) return undefined;
    at.set(record[p]!.instance, p);
  }
  const used = new Uint8Array(record.length);
  rows.length = 0;
  for (const inst of next) {
    const p = at.get(inst.instance);
    if (p === undefined || used[p] || !sameIdentity(record[p]!, inst)) return undefined;
    used[p] = 1;
    const row = rowOf(p, record[p]!, inst);
    if (row) rows.push(row);
  }
  return rows.sort((a, b) => a[0] - b[0]);
}

/** The record's instances with a delta's rows applied (in the record's order). */
export function applyDelta(agent: string, record: readonly InstanceHeartbeat[], rows: readonly DeltaRow[]): InstanceHeartbeat[] {
  const out = record.slice();
  for (const [pos, state, stateTimestamp, index] of rows) {
    const inst = out[pos];
    if (inst === undefined) fail(`delta of agent ${agent}`, `row for position ${pos} of a record of ${record.length} instances`);
    out[pos] = { ...inst, state, stateTimestamp, index: index ?? inst.index };
  }
  return out;
}

// --- desired state ---

/** One desired app as a row: [guid, version, instances, state, packageState, updatedAt?, memory?] (null for an absent updatedAt before a memory). */
export function encodeDesiredApp(app: DesiredApp): string {
  const row: (string | number | null)[] = [app.guid, app.version, app.instances, app.state, app.packageState];
  if (app.updatedAt !== undefined || app.memory !== undefined) row.push(app.updatedAt ?? null);
  if (app.memory !== undefined) row.push(app.memory);
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
    const [guid, version, instances, state, packageState, updatedAt, memory] = row as unknown[];
    if (!isString(guid) || !isString(version) || !isNumber(instances) || !isString(state) || !isString(packageState)) fail(what, 'bad row');
    const app: DesiredApp = { guid, version, instances, state, packageState };
    if (isString(updatedAt)) app.updatedAt = updatedAt;
    if (isNumber(memory)) app.memory = memory;
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
