/**
 * The store's keys under its prefix (the layout is in README.md): where each kind of state goes,
 * how an agent's name becomes its record and delta keys and back, and the hash that spreads apps
 * over desired chunks and agents over the record period.
 */

export interface Keys {
  root: string;
  agents: string;
  desired: string;
  crashes: string;
  starts: string;
  stops: string;
  fresh: string;
}

const DELTA_SUFFIX = '/d';

/** The keys under `prefix` (with or without a trailing slash). */
export function storeKeys(prefix: string): Keys {
  const root = `${prefix.replace(/\/+$/, '')}/`;
  return {
    root,
    agents: `${root}agents/`,
    desired: `${root}desired/`,
    crashes: `${root}crashes/`,
    starts: `${root}starts/`,
    stops: `${root}stops/`,
    fresh: `${root}fresh/`,
  };
}

/** An agent's segment of its keys: '%' and '/' escaped, so `<agent>/d` is never another agent's record. */
function agentSegment(agent: string): string {
  return /[%/]/.test(agent) ? agent.replace(/%/g, '%25').replace(/\//g, '%2F') : agent;
}

function agentOfSegment(segment: string): string {
  return segment.includes('%') ? segment.replace(/%(25|2F)/g, (_, c: string) => (c === '25' ? '%' : '/')) : segment;
}

export function recordKey(keys: Keys, agent: string): string {
  return keys.agents + agentSegment(agent);
}

export function deltaKey(keys: Keys, agent: string): string {
  return keys.agents + agentSegment(agent) + DELTA_SUFFIX;
}

/** A key under agents/ as an agent's record or delta key, or undefined for any other key there. */
export function parseAgentKey(keys: Keys, key: string): { agent: string; delta: boolean } | undefined {
  const rest = key.slice(keys.agents.length);
  const delta = rest.endsWith(DELTA_SUFFIX);
  const segment = delta ? rest.slice(0, -DELTA_SUFFIX.length) : rest;
  if (segment === '' || segment.includes('/')) return undefined;
  return { agent: agentOfSegment(segment), delta };
}

/** The end of the key range of everything that starts with `prefix`. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** FNV-1a of `key`, modulo `chunks`: which desired chunk an app goes to, and an agent's phase. */
export function chunkOf(key: string, chunks: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % chunks;
}
