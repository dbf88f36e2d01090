/**
 * The state store interface. Two plugins satisfy it: `memory` (one daemon) and `etcd` (shared state
 * for several daemons). It is shaped so a remote store keeps one record per agent, not one per
 * instance: heartbeats are saved per agent and the agent record's TTL is the agent's presence.
 *
 * All times are clock milliseconds; all TTLs run on the injected clock.
 */
import type { Stage } from './plugin.js';

/** `${guid},${version}`: versions are separate apps (HM9000 §3.5). */
export type AppKey = string;

interface KeyEntry {
  version: string;
  key: AppKey;
  /** The key of another version of the same app. */
  next: KeyEntry | undefined;
}
const keys = new Map<string, KeyEntry>();
let keysKept = 0;
const KEYS_KEPT = 2_000_000;

/**
 * One string per app key, however many instances and agents name the app: per-agent groupings of
 * a large foundation hold an app key per instance, and a key is 70-odd bytes. Bounded: forgotten
 * all at once past KEYS_KEPT (a later call makes the key again).
 */
export function appKey(guid: string, version: string): AppKey {
  const first = keys.get(guid);
  for (let e = first; e !== undefined; e = e.next) if (e.version === version) return e.key;
  const key = `${guid},${version}`;
  if (keysKept >= KEYS_KEPT) {
    keys.clear();
    keysKept = 0;
  }
  keys.set(guid, { version, key, next: keysKept === 0 ? undefined : first });
  keysKept++;
  return key;
}

export interface DesiredApp {
  guid: string;
  version: string;
  instances: number;
  state: string; // STARTED | STOPPED
  packageState: string; // STAGED | PENDING | FAILED
  /** CC's `updated_at`, kept for the Ruby HM's `last_updated`. */
  updatedAt?: string;
  /** Memory per instance (CC's unit, MB), for the Ruby HM's statistics; set by `walk: ruby`. */
  memory?: number;
}

export type InstanceState = 'STARTING' | 'RUNNING' | 'CRASHED' | 'EVACUATING' | string;

export interface InstanceHeartbeat {
  app: string;
  version: string;
  /** The instance guid. */
  instance: string;
  index: number;
  state: InstanceState;
  /** The agent's state timestamp (seconds, as reported). */
  stateTimestamp: number;
  /** The agent (DEA) guid that reports this instance. */
  agent: string;
  ccPartition?: string;
}

export interface AgentHeartbeat {
  agent: string;
  instances: readonly InstanceHeartbeat[];
}

export interface AgentRecord {
  agent: string;
  instances: readonly InstanceHeartbeat[];
  /** Clock time at which the agent's presence lapses unless it heartbeats again. */
  expiresAt: number;
}

export interface CrashCount {
  app: string;
  version: string;
  index: number;
  count: number;
  createdAt: number;
}

export interface PendingMessageBase {
  messageId: string;
  /** Clock time from which it may be sent. */
  sendOn: number;
  /** Clock time it was sent, 0 while unsent. */
  sentOn: number;
  /** How long a sent message is kept (ms) so the same decision is not sent again. */
  keepAlive: number;
  app: string;
  version: string;
}

export interface PendingStart extends PendingMessageBase {
  index: number;
  priority: number;
  skipVerification: boolean;
  reason: string;
}

export interface PendingStop extends PendingMessageBase {
  instance: string;
  reason: string;
}

/** HM9000 §3.4: a start is keyed by guid-version-index, a stop by instance guid. */
export function startKey(m: { app: string; version: string; index: number }): string {
  return `${m.app}-${m.version}-${m.index}`;
}
export function stopKey(m: { instance: string }): string {
  return m.instance;
}
export function crashKey(c: { app: string; version: string; index: number }): string {
  return `${c.app},${c.version}/${c.index}`;
}

export type FreshnessKind = 'actual' | 'desired';

export interface FreshnessMarker {
  /** When the current unbroken streak of bumps began. */
  timestamp: number;
  expiresAt: number;
}

export interface SaveHeartbeatsResult {
  /** Agents whose instance set changed (written). Unchanged agents only had their TTL renewed. */
  changed: string[];
}

export type StoreChange =
  | { kind: 'desired' }
  | { kind: 'agent'; agent: string; apps: AppKey[] }
  | { kind: 'crash'; key: string; app: AppKey }
  | { kind: 'start'; key: string; app: AppKey }
  | { kind: 'stop'; key: string; app: AppKey }
  | { kind: 'freshness'; which: FreshnessKind };

/** A consistent read of everything the analyzer needs, grouped per app. */
export interface StoreSnapshot {
  now: number;
  desired: ReadonlyMap<AppKey, DesiredApp>;
  /** Live instances only (agent present), per app. */
  instances: ReadonlyMap<AppKey, readonly InstanceHeartbeat[]>;
  crashCounts: ReadonlyMap<AppKey, readonly CrashCount[]>;
  starts: ReadonlyMap<string, PendingStart>;
  stops: ReadonlyMap<string, PendingStop>;
  freshness: { actual?: FreshnessMarker; desired?: FreshnessMarker };
}

export interface Store extends Stage {
  /** Replace the whole desired set (after a complete fetch). */
  replaceDesired(apps: Iterable<DesiredApp>): Promise<void>;
  getDesired(): Promise<ReadonlyMap<AppKey, DesiredApp>>;

  /**
   * Save a batch of agent heartbeats. Each agent's presence is renewed for `ttlMs`; its instance
   * set is replaced (instances it stopped reporting disappear) and written only when it changed.
   */
  saveHeartbeats(batch: readonly AgentHeartbeat[], ttlMs: number): Promise<SaveHeartbeatsResult>;
  removeAgent(agent: string): Promise<void>;
  /** Present agents only. */
  getAgents(): Promise<ReadonlyMap<string, AgentRecord>>;

  putCrashCounts(counts: readonly CrashCount[], ttlMs: number): Promise<void>;
  deleteCrashCounts(keys: readonly string[]): Promise<void>;
  getCrashCounts(): Promise<ReadonlyMap<string, CrashCount>>;

  putPendingStarts(messages: readonly PendingStart[]): Promise<void>;
  deletePendingStarts(keys: readonly string[]): Promise<void>;
  getPendingStarts(): Promise<ReadonlyMap<string, PendingStart>>;

  putPendingStops(messages: readonly PendingStop[]): Promise<void>;
  deletePendingStops(keys: readonly string[]): Promise<void>;
  getPendingStops(): Promise<ReadonlyMap<string, PendingStop>>;

  /**
   * HM9000 §5.1: if the marker exists, keep its timestamp and renew its TTL; otherwise create it
   * with timestamp = now.
   */
  bumpFreshness(which: FreshnessKind, ttlMs: number): Promise<void>;
  revokeFreshness(which: FreshnessKind): Promise<void>;
  getFreshness(which: FreshnessKind): Promise<FreshnessMarker | undefined>;

  snapshot(): Promise<StoreSnapshot>;
  /** Called after every change, including TTL expiries. Returns an unsubscribe function. */
  onChange(listener: (change: StoreChange) => void): () => void;
}
