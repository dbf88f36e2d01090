/**
 * How records are written in etcd. Agent records, their deltas and desired chunks are compact JSON
 * arrays (they are most of the bytes); the few crash counts, pending messages and freshness markers
 * are plain JSON objects, readable in `dump --raw`.
 */
import {
  counted,
  type CrashCount,
  type DesiredApp,
  type FreshnessMarker,
  type InstanceHeartbeat,
  type PendingStart,
  type PendingStop,
} from '../../src/sdk/index.js';

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

/** Instances as rows naming their app by index into `p` (shared by records and deltas' additions). */
function encodeRows(agent: string, instances: readonly InstanceHeartbeat[]): { p: [string, string][]; i: EncodedInstance[] } {
  const pairs: [string, string][] = [];
  const pairIndex = new Map<string, number>();
  const list: EncodedInstance[] = [];
  for (const inst of instances) {
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
  return { p: pairs, i: list };
}

function decodeRows(what: string, agent: string, pairs: unknown, rows: unknown): InstanceHeartbeat[] {
  if (!Array.isArray(pairs) || !Array.isArray(rows)) fail(what, 'missing p or i');
  for (const pair of pairs) {
    if (!Array.isArray(pair) || !isString(pair[0]) || !isString(pair[1])) fail(what, 'bad app pair');
  }
  const instances: InstanceHeartbeat[] = [];
  for (const row of rows as unknown[]) {
    if (!Array.isArray(row) || row.length < 5) fail(what, 'bad instance row');
    const [p, instance, index, state, ts, cc, owner] = row as unknown[];
    const pair = isNumber(p) ? (pairs[p] as [string, string] | undefined) : undefined;
    if (!pair || !isString(instance) || !isNumber(index) || !isString(state) || !isNumber(ts)) fail(what, 'bad instance row');
    const inst: InstanceHeartbeat = { app: pair[0], version: pair[1], instance, index, state, stateTimestamp: ts, agent: isString(owner) ? owner : agent };
    if (isString(cc)) inst.ccPartition = cc;
    instances.push(inst);
  }
  return instances;
}

export function encodeAgent(agent: string, value: AgentValue): string {
  const { p, i } = encodeRows(agent, value.instances);
  return JSON.stringify({ w: value.writer, x: value.vouchedUntil, p, i });
}

export function decodeAgent(agent: string, text: string): AgentValue {
  const what = `agent ${agent}`;
  const v = parse(what, text) as { w?: unknown; x?: unknown; p?: unknown; i?: unknown };
  if (typeof v !== 'object' || v === null) fail(what, 'not an object');
  if (!isString(v.w) || !isNumber(v.x) || !Array.isArray(v.p) || !Array.isArray(v.i)) fail(what, 'missing w, x, p or i');
  return { writer: v.w, vouchedUntil: v.x, instances: decodeRows(what, agent, v.p, v.i) };
}

// --- agent deltas ---

/**
 * What changed in an agent's instances since its record was written: the record it applies to
 * (`b`, the record key's mod revision), until when it vouches for the agent (`x`, as in the
 * record), one row per changed instance of the record — its position in the record's `i`, its
 * state and state timestamp, and its index only when that changed too — and, when the set
 * changed (an instance restarted under a new guid, one stopped), the positions of the record's
 * instances that are gone (`r`) and the new instances as a record writes them (`p`, `a`):
 *
 *   {"b":4711,"x":1700000120000,"i":[[37,"CRASHED",1700000001],[52,"RUNNING",1700000003,4]]}
 *   {"b":4711,"x":1700000130000,"i":[],"r":[12],"p":[["app-guid","v1"]],"a":[[0,"new-guid",3,"STARTING",1700000005.5]]}
 *
 * So an agent whose instances restart rewrites its record only when the delta has grown, not at
 * every restart.
 */
export type DeltaRow = [number, string, number] | [number, string, number, number];

export interface AgentDelta {
  base: number;
  vouchedUntil: number;
  rows: readonly DeltaRow[];
  /** Positions in the record of instances that are gone, ascending. */
  removed?: readonly number[];
  /** Instances not in the record, after the record's in the merged order. */
  added?: readonly InstanceHeartbeat[];
  /** Not written: the writer's own instances the delta makes of its record (in any order). */
  merged?: readonly InstanceHeartbeat[];
}

export function encodeAgentDelta(agent: string, delta: AgentDelta): string {
  const out: { b: number; x: number; i: readonly DeltaRow[]; r?: readonly number[]; p?: [string, string][]; a?: EncodedInstance[] } = {
    b: delta.base,
    x: delta.vouchedUntil,
    i: delta.rows,
  };
  if (delta.removed !== undefined && delta.removed.length > 0) out.r = delta.removed;
  if (delta.added !== undefined && delta.added.length > 0) {
    const { p, i } = encodeRows(agent, delta.added);
    out.p = p;
    out.a = i;
  }
  return JSON.stringify(out);
}

export function decodeAgentDelta(agent: string, text: string): AgentDelta {
  const what = `delta of agent ${agent}`;
  const v = parse(what, text) as { b?: unknown; x?: unknown; i?: unknown; r?: unknown; p?: unknown; a?: unknown };
  if (typeof v !== 'object' || v === null) fail(what, 'not an object');
  if (!isNumber(v.b) || !isNumber(v.x) || !Array.isArray(v.i)) fail(what, 'missing b, x or i');
  for (const row of v.i as unknown[]) {
    if (!Array.isArray(row) || row.length < 3 || !isPosition(row[0]) || !isString(row[1]) || !isNumber(row[2])) fail(what, 'bad row');
    if (row.length > 3 && !isNumber(row[3])) fail(what, 'bad row');
  }
  const delta: AgentDelta = { base: v.b, vouchedUntil: v.x, rows: v.i as DeltaRow[] };
  if (v.r !== undefined) {
    if (!Array.isArray(v.r) || !v.r.every(isPosition)) fail(what, 'bad removed positions');
    delta.removed = v.r as number[];
  }
  if (v.a !== undefined) delta.added = decodeRows(what, agent, v.p, v.a);
  return delta;
}

function isPosition(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0;
}

/** The same instance but for what a delta row carries (state, state timestamp, index). */
function sameIdentity(a: InstanceHeartbeat, b: InstanceHeartbeat): boolean {
  return a.instance === b.instance && a.app === b.app && a.version === b.version && a.agent === b.agent && a.ccPartition === b.ccPartition;
}

function rowOf(pos: number, from: InstanceHeartbeat, to: InstanceHeartbeat): DeltaRow | undefined {
  if (from.state === to.state && from.stateTimestamp === to.stateTimestamp && from.index === to.index) return undefined;
  return from.index === to.index ? [pos, to.state, to.stateTimestamp] : [pos, to.state, to.stateTimestamp, to.index];
}

/** A delta's changes to its record: rows, and the instances gone and added. */
export type DeltaChanges = Pick<AgentDelta, 'rows' | 'removed' | 'added'>;

/**
 * The changes that turn `record` into `next` (any order of `next`): rows for instances of the
 * record whose state, timestamp or index changed, the positions of those not in `next`, and the
 * instances of `next` not in the record. An instance that moved to another app, version, agent
 * or partition is gone and added. Undefined when a guid is not unique in the record or in `next`
 * (positions would be ambiguous): then only a new record says it. Allocation-free but for the
 * rows when `next` has the record's instances in its order.
 */
export function diffInstances(record: readonly InstanceHeartbeat[], next: readonly InstanceHeartbeat[]): DeltaChanges | undefined {
  const rows: DeltaRow[] = [];
  let i = 0;
  if (record.length === next.length) {
    for (; i < record.length && sameIdentity(record[i]!, next[i]!); i++) {
      const row = rowOf(i, record[i]!, next[i]!);
      if (row) rows.push(row);
    }
    if (i === record.length) return { rows };
  }
  // Another order, or other instances: match by instance guid.
  const at = new Map<string, number>();
  for (let p = 0; p < record.length; p++) {
    if (at.has(record[p]!.instance)) return undefined;
    at.set(record[p]!.instance, p);
  }
  const used = new Uint8Array(record.length);
  const seen = new Set<string>();
  const added: InstanceHeartbeat[] = [];
  rows.length = 0;
  for (const inst of next) {
    if (seen.has(inst.instance)) return undefined;
    seen.add(inst.instance);
    const p = at.get(inst.instance);
    if (p === undefined || !sameIdentity(record[p]!, inst)) {
      added.push(inst);
      continue;
    }
    used[p] = 1;
    const row = rowOf(p, record[p]!, inst);
    if (row) rows.push(row);
  }
  const removed: number[] = [];
  for (let p = 0; p < record.length; p++) if (!used[p]) removed.push(p);
  rows.sort((a, b) => a[0] - b[0]);
  const out: DeltaChanges = { rows };
  if (removed.length > 0) out.removed = removed;
  if (added.length > 0) out.added = added;
  return out;
}

/**
 * The record's instances with a delta applied: changed rows in place, the removed ones left out,
 * the added ones after them. Unchanged instances are the record's very objects.
 */
export function applyDelta(agent: string, record: readonly InstanceHeartbeat[], delta: DeltaChanges): InstanceHeartbeat[] {
  const what = `delta of agent ${agent}`;
  const out = record.slice();
  for (const [pos, state, stateTimestamp, index] of delta.rows) {
    const inst = out[pos];
    if (inst === undefined) fail(what, `row for position ${pos} of a record of ${counted(record.length, 'instance')}`);
    out[pos] = { ...inst, state, stateTimestamp, index: index ?? inst.index };
  }
  const removed = delta.removed ?? [];
  let kept: InstanceHeartbeat[] = out;
  if (removed.length > 0) {
    const gone = new Uint8Array(record.length);
    for (const pos of removed) {
      if (pos >= record.length) fail(what, `removes position ${pos} of a record of ${counted(record.length, 'instance')}`);
      gone[pos] = 1;
    }
    kept = out.filter((_, pos) => !gone[pos]);
  }
  if (delta.added !== undefined) for (const inst of delta.added) kept.push(inst);
  return kept;
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

/**
 * A pending start or stop as encodeMessage wrote it. Only app and version are checked (the changes
 * name the app by them); the other fields are the daemon's own, taken as it wrote them.
 */
function isPendingMessage<T extends PendingStart | PendingStop>(v: unknown): v is T {
  return typeof v === 'object' && v !== null && 'app' in v && isString(v.app) && 'version' in v && isString(v.version);
}

export function decodeMessage<T extends PendingStart | PendingStop>(what: string, text: string): T {
  const v = parse(what, text);
  if (!isPendingMessage<T>(v)) fail(what, 'missing app or version');
  return v;
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

export { sameInstance, sameInstanceSet } from '../../src/sdk/index.js';
