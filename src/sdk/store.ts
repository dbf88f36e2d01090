/**
 * The state store contract. Two plugins satisfy it: `memory` (one daemon) and `etcd` (shared state
 * for several daemons). It is shaped so a remote store keeps one record per agent, not one per
 * instance: heartbeats are saved per agent and the agent record's TTL is the agent's presence.
 * Split by concern below, so a reader (or a test double) can name the part it uses.
 *
 * All times are clock milliseconds; all TTLs run on the injected clock.
 */
import type { AppKey } from './app-key.js';
import { hasMethods, type Stage } from './stage.js';
import type {
  AgentHeartbeat,
  AgentRecord,
  CrashCount,
  DesiredApp,
  FreshnessKind,
  FreshnessMarker,
  PendingStart,
  PendingStop,
  StoreChange,
  StoreSnapshot,
} from './state.js';

export interface SaveHeartbeatsResult {
  /** Agents whose instance set changed (written). Unchanged agents only had their TTL renewed. */
  changed: string[];
}

/** The desired state: replaced whole after each complete fetch. */
export interface DesiredStore {
  replaceDesired(apps: Iterable<DesiredApp>): Promise<void>;
  getDesired(): Promise<ReadonlyMap<AppKey, DesiredApp>>;
}

/** The actual state: one record per agent, its TTL the agent's presence. */
export interface ActualStore {
  /**
   * Save a batch of agent heartbeats. Each agent's presence is renewed for `ttlMs`; its instance
   * set is replaced (instances it stopped reporting disappear) and written only when it changed.
   */
  saveHeartbeats(batch: readonly AgentHeartbeat[], ttlMs: number): Promise<SaveHeartbeatsResult>;
  removeAgent(agent: string): Promise<void>;
  /** Present agents only. */
  getAgents(): Promise<ReadonlyMap<string, AgentRecord>>;
}

/** Crash counts per app index, each with its own TTL. */
export interface CrashCountStore {
  putCrashCounts(counts: readonly CrashCount[], ttlMs: number): Promise<void>;
  deleteCrashCounts(keys: readonly string[]): Promise<void>;
  getCrashCounts(): Promise<ReadonlyMap<string, CrashCount>>;
}

/** Pending starts (keyed by startKey) and stops (keyed by stopKey). */
export interface PendingStore {
  putPendingStarts(messages: readonly PendingStart[]): Promise<void>;
  deletePendingStarts(keys: readonly string[]): Promise<void>;
  getPendingStarts(): Promise<ReadonlyMap<string, PendingStart>>;

  putPendingStops(messages: readonly PendingStop[]): Promise<void>;
  deletePendingStops(keys: readonly string[]): Promise<void>;
  getPendingStops(): Promise<ReadonlyMap<string, PendingStop>>;
}

/** The freshness markers of actual and desired state. */
export interface FreshnessStore {
  /** If the marker exists, keep its timestamp and renew its TTL; otherwise create it with timestamp = now. */
  bumpFreshness(which: FreshnessKind, ttlMs: number): Promise<void>;
  revokeFreshness(which: FreshnessKind): Promise<void>;
  getFreshness(which: FreshnessKind): Promise<FreshnessMarker | undefined>;
}

/** Whether a stage keeps the store contract (checked at start, so a broken plugin fails naming itself). */
export function isStore(stage: Stage): stage is Store {
  return hasMethods(stage, 'snapshot', 'onChange', 'saveHeartbeats', 'replaceDesired', 'putPendingStarts', 'bumpFreshness');
}

/** The whole store stage: every concern, a consistent snapshot of all of them, and change events. */
export interface Store extends Stage, DesiredStore, ActualStore, CrashCountStore, PendingStore, FreshnessStore {
  snapshot(): Promise<StoreSnapshot>;
  /** Called after every change, including TTL expiries. Returns an unsubscribe function. */
  onChange(listener: (change: StoreChange) => void): () => void;
}
