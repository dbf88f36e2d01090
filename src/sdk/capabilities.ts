/**
 * What a stage can do beyond its kind, declared by implementing one of these small interfaces and
 * found by its type guard: the engine asks `isDesiredStateSource(stage)`, never casts. A stage
 * implements any number of them.
 */
import type { LeaderElectionRequest, Leadership } from './leadership.js';
import { hasMethods, type Stage } from './stage.js';

/** A source of desired state: fetches again when asked, and says whether desired state is available now. */
export interface DesiredStateSource {
  /** Fetch again now (an event policy asked: an app changed). Failures are the source's to report. */
  refreshDesired(): void | Promise<void>;
  /** Whether a complete desired state is at hand (the Ruby HM's "desired state available"). */
  desiredAvailable(): boolean;
}
export const isDesiredStateSource = (stage: Stage): stage is Stage & DesiredStateSource => hasMethods(stage, 'refreshDesired', 'desiredAvailable');

/** A stage whose requests in flight can be waited for: a manual clock steps only once they are done. */
export interface Settling {
  settled(): Promise<void>;
}
export const isSettling = (stage: Stage): stage is Stage & Settling => hasMethods(stage, 'settled');

/** A stage that keeps the Ruby HM's statistics, shown by GET /varz. */
export interface VarzProvider {
  varz(): Record<string, unknown>;
}
export const isVarzProvider = (stage: Stage): stage is Stage & VarzProvider => hasMethods(stage, 'varz');

/** A stage told the size of the event path's start queue after each insert (the Ruby HM's varz queue_length). */
export interface QueueLengthObserver {
  setQueueLength(length: number): void;
}
export const isQueueLengthObserver = (stage: Stage): stage is Stage & QueueLengthObserver => hasMethods(stage, 'setQueueLength');

/** A stage whose failure means this daemon cannot do a leader's work itself (its heartbeat saves fail). */
export interface LeaderWorkCheck {
  /** Why this daemon cannot do the leader's work now; null when it can. */
  leaderWorkError(): string | null;
}
export const isLeaderWorkCheck = (stage: Stage): stage is Stage & LeaderWorkCheck => hasMethods(stage, 'leaderWorkError');

/** A store shared by several daemons, which elects one of them to lead. */
export interface LeaderElector {
  leaderElection(request: LeaderElectionRequest): Leadership;
}
export const isLeaderElector = (stage: Stage): stage is Stage & LeaderElector => hasMethods(stage, 'leaderElection');

/** One decision record as a store keeps it: JSON, ordered by `seq`. */
export interface AuditEntry {
  seq: number;
  at: number;
}

/** A shared store that keeps the decision audit beside the state, so a new leader takes it over. */
export interface AuditKeeper {
  appendAudit(records: readonly AuditEntry[]): Promise<void>;
  /** The newest `limit` records, oldest first. */
  readAudit(limit: number): Promise<unknown[]>;
}
export const isAuditKeeper = (stage: Stage): stage is Stage & AuditKeeper => hasMethods(stage, 'appendAudit', 'readAudit');
