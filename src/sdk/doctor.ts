/**
 * What `hmgate doctor` asks of a plugin's `doctor` hook, and what the hook returns: the checks of one
 * stage against its real dependency (the CC, etcd, the agents' heartbeats), each a CheckResult
 * printed as
 *
 *   ok: <what>: <detail>
 *   FAIL: <what>: <why>; fix: <fix> [<CODE>]
 *   skip: <what>: <why>
 *
 * plus what the doctor's own cross-checks compare between stages (the desired apps, the heartbeats
 * heard). Failures carry the problem code of the catalogue shared with /v1/status (problems.ts).
 */
import type { NatsConnection } from 'nats';
import type { Problem, ProblemCode } from './problems.js';

export interface CheckResult {
  /**
   * The check: config, nats, etcd, cc, heartbeats, cc_partition, start_stop, foundation. The doctor
   * prints the results of every stage grouped by check, in this order.
   */
  name: string;
  ok: boolean;
  /** Not run (a dependency failed, or nothing to compare); counts as ok. */
  skipped?: boolean;
  what: string;
  why: string;
  /** What to change; '' when ok. */
  fix: string;
  code?: ProblemCode;
}

export const pass = (name: string, what: string, why: string): CheckResult => ({ name, ok: true, what, why, fix: '' });
export const skip = (name: string, what: string, why: string): CheckResult => ({ name, ok: true, skipped: true, what, why, fix: '' });
export const fail = (name: string, p: Problem): CheckResult => ({ name, ok: false, what: p.what, why: p.why, fix: p.fix, code: p.code });
/** A failure that is about the config itself rather than a dependency (no problem code). */
export const failPlain = (name: string, what: string, why: string, fix: string): CheckResult => ({ name, ok: false, what, why, fix });

/** The desired apps (guids of apps that should run), from a complete walk. */
export interface DesiredSample {
  guids: Set<string>;
  apps: number;
}

/** What was heard on a heartbeat subject. */
export interface HeartbeatSample {
  subject: string;
  windowMs: number;
  heartbeats: number;
  agents: Set<string>;
  instances: number;
  /** Instances per cc_partition; null for instances without one. */
  partitions: Map<string | null, number>;
  /** Guids of every app with an instance heartbeating. */
  apps: Set<string>;
  /** How long it listened. */
  listenedMs: number;
}

/** What a plugin's `doctor` hook is given about one of its stages. */
export interface DoctorInput<O = Record<string, unknown>> {
  id: string;
  /** The config section: store, sources, policies or sinks. */
  section: string;
  /** Where the stage's options live in the config: `sources.desired`, `sinks.cloud_controller`, `store`. */
  path: string;
  options: O;
  /** The config file's directory (ca_file and the like are relative to it). */
  configDir: string;
  /** The longest wait of one check for one answer. */
  timeoutMs: number;
  heartbeatMs: number;
  /** The doctor's NATS connection, as the daemon would connect; absent when NATS is not reachable. Not to be closed. */
  nats?: NatsConnection;
  /**
   * Whether another source of this config may be compared with this stage (the same-foundation
   * check compares the desired apps with the heartbeats): read what that needs, e.g. the whole
   * desired state.
   */
  crossCheck: boolean;
}

/** What a plugin's `doctor` hook found. */
export interface DoctorFindings {
  /** The lines of this stage's checks. */
  results: CheckResult[];
  /**
   * A source of desired state: the desired apps, read in full, or null when they could not be
   * (the same-foundation check is then skipped, saying so). Left out by other stages.
   */
  desired?: DesiredSample | null;
  /** A source of heartbeats: what was heard, or null when nothing could be listened to. Left out by other stages. */
  heartbeats?: HeartbeatSample | null;
}
