/**
 * The records of hmgate's state, as stores keep them and rules read them: desired apps, the
 * instances agents report, crash counts, pending starts and stops, and freshness markers. All
 * times are clock milliseconds.
 */
import type { AppKey } from './app-key.js';

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

/** HM9000's keys (docs/hm9000.md#pending-messages): a start is keyed by guid-version-index, a stop by instance guid. */
export function startKey(m: { app: string; version: string; index: number }): string {
  return `${m.app}-${m.version}-${m.index}`;
}
export function stopKey(m: { instance: string }): string {
  return m.instance;
}
export function crashKey(c: { app: string; version: string; index: number }): string {
  return `${c.app},${c.version}/${c.index}`;
}

/** The app of a crash-count key (`guid,version/index`). */
export function crashApp(key: string): string {
  return key.slice(0, key.lastIndexOf('/'));
}

export type FreshnessKind = 'actual' | 'desired';

export interface FreshnessMarker {
  /** When the current unbroken streak of bumps began. */
  timestamp: number;
  expiresAt: number;
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
