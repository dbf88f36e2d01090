/**
 * Heartbeats read entry by entry, for the event policies. The schema decoder refuses a whole
 * heartbeat when one instance entry is bad; the Ruby Health Manager handled each entry on its own,
 * so when event policies listen, a refused heartbeat is read again here: the envelope must hold,
 * and each bad entry is left out with its reason while the others go on. It is only reached by
 * heartbeats the schema decoder refused, so good traffic never pays for it. Pure; never throws.
 * The schema's bounds hold here too: an envelope over them is refused whole, an entry over them is
 * a bad entry with the reason too_long.
 */
import { type HeartbeatMessage, MAX_MESSAGE_BYTES, MESSAGE_LIMITS } from '../../src/sdk/index.js';

export type HeartbeatEntry = HeartbeatMessage['droplets'][number];

/** States whose state_timestamp is read (the others need none). */
const TIMESTAMPED = new Set(['STARTING', 'RUNNING', 'CRASHED']);

export interface BadEntry {
  /** Position in `droplets`. */
  position: number;
  /** The drop reason it is counted under. */
  code: 'invalid_entry' | 'too_long';
  reason: string;
  /**
   * The entry's cc_partition when it is a string (a partition filter counts it as another
   * partition first); undefined for a too_long entry, which is counted as too_long whatever it says.
   */
  ccPartition: string | undefined;
}

export type EntriesResult =
  | {
      ok: true;
      dea: string;
      /** Every entry of `droplets`, good or bad. */
      total: number;
      /** The good entries, in message order; a missing state_timestamp of a state that needs none is 0. */
      good: HeartbeatEntry[];
      bad: BadEntry[];
    }
  | { ok: false; reason: string; detail: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Characters as JSON Schema counts them (code points), as the schema decoder does. */
function longerThan(s: string, max: number): boolean {
  if (s.length <= max) return false;
  let n = 0;
  for (const _ of s) if (++n > max) return true;
  return false;
}

/** The first string field of an entry over its bound, in words, or null. */
function overBound(e: Record<string, unknown>): string | null {
  const L = MESSAGE_LIMITS;
  for (const [field, max] of [
    ['droplet', L.guid],
    ['version', L.guid],
    ['instance', L.guid],
    ['state', L.state],
    ['cc_partition', L.cc_partition],
  ] as const) {
    const v = e[field];
    if (typeof v === 'string' && longerThan(v, max)) return `${field} is longer than ${max} characters`;
  }
  return null;
}

/** Why an entry cannot be handled, or null. */
function entryProblem(e: Record<string, unknown>): string | null {
  if (typeof e.droplet !== 'string' || e.droplet === '') return 'droplet (the app guid) is missing';
  if (typeof e.version !== 'string') return 'version is missing';
  if (typeof e.instance !== 'string' || e.instance === '') return 'instance is missing';
  if (typeof e.index !== 'number' || !Number.isSafeInteger(e.index) || e.index < 0) return 'index must be a whole number';
  if (typeof e.state !== 'string') return 'state is missing';
  if (e.state_timestamp !== undefined && typeof e.state_timestamp !== 'number') return 'state_timestamp must be a number';
  if (e.state_timestamp === undefined && TIMESTAMPED.has(e.state)) return `state_timestamp is missing (a ${e.state} entry needs it)`;
  return null;
}

export function readEntries(data: Uint8Array | string, maxBytes = MAX_MESSAGE_BYTES): EntriesResult {
  const size = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
  if (size > maxBytes) return { ok: false, reason: 'too_large', detail: `${size} bytes, more than ${maxBytes}` };
  let doc: unknown;
  try {
    doc = JSON.parse(typeof data === 'string' ? data : utf8.decode(data));
  } catch (err) {
    return err instanceof SyntaxError
      ? { ok: false, reason: 'bad_json', detail: err.message }
      : { ok: false, reason: 'not_utf8', detail: 'the message is not UTF-8 text' };
  }
  if (!isObject(doc)) return { ok: false, reason: 'invalid', detail: '(message) must be an object' };
  if (typeof doc.dea !== 'string' || doc.dea === '') return { ok: false, reason: 'invalid', detail: '/dea (the agent guid) is missing' };
  if (longerThan(doc.dea, MESSAGE_LIMITS.agentId)) return { ok: false, reason: 'too_long', detail: `/dea is longer than ${MESSAGE_LIMITS.agentId} characters` };
  if (!Array.isArray(doc.droplets)) return { ok: false, reason: 'invalid', detail: '/droplets must be an array' };
  if (doc.droplets.length > MESSAGE_LIMITS.instancesPerAgent) {
    return { ok: false, reason: 'too_many', detail: `/droplets has ${doc.droplets.length} entries, more than ${MESSAGE_LIMITS.instancesPerAgent}` };
  }
  const good: HeartbeatEntry[] = [];
  const bad: BadEntry[] = [];
  doc.droplets.forEach((e: unknown, position: number) => {
    if (!isObject(e)) {
      bad.push({ position, code: 'invalid_entry', reason: 'the entry must be an object', ccPartition: undefined });
      return;
    }
    // First: an entry over a bound is too_long whatever else is wrong, and its strings (its
    // cc_partition too) go no further, not even into a log line.
    const tooLong = overBound(e);
    if (tooLong !== null) {
      bad.push({ position, code: 'too_long', reason: tooLong, ccPartition: undefined });
      return;
    }
    const ccPartition = typeof e.cc_partition === 'string' ? e.cc_partition : undefined;
    const problem = entryProblem(e);
    if (problem !== null) {
      bad.push({ position, code: 'invalid_entry', reason: problem, ccPartition });
      return;
    }
    const entry: HeartbeatEntry = {
      droplet: e.droplet as string,
      version: e.version as string,
      instance: e.instance as string,
      index: e.index as number,
      state: e.state as string,
      state_timestamp: (e.state_timestamp as number | undefined) ?? 0,
    };
    if (ccPartition !== undefined) entry.cc_partition = ccPartition;
    good.push(entry);
  });
  return { ok: true, dea: doc.dea, total: doc.droplets.length, good, bad };
}
