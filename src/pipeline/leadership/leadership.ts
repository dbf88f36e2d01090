/**
 * This daemon's leadership: the store's election when it offers one (the `LeaderElector`
 * capability), else this daemon alone leads. With an election, the daemon campaigns only while it
 * can do the leader's work itself (leader-fitness.ts). A daemon that becomes leader revokes actual
 * freshness: it acts only after a full freshness window of heartbeats it saved itself, never on
 * what the previous leader last saw.
 */
import { hostname } from 'node:os';
import type { Logger } from 'pino';
import { errorText } from '../../log.js';
import type { AuditSharing } from '../../operator/audit-sharing.js';
import type { Bus } from '../../sdk/bus.js';
import { isLeaderElector, isLeaderWorkCheck } from '../../sdk/capabilities.js';
import type { Clock } from '../../sdk/clock.js';
import type { Leadership } from '../../sdk/leadership.js';
import type { Stage } from '../../sdk/stage.js';
import type { Store } from '../../sdk/store.js';
import type { FreshnessBoard } from '../freshness/board.js';
import type { StageSet } from '../stages.js';
import { AlwaysLeader } from './always-leader.js';
import { LeaderFitness, type FitnessCheck } from './leader-fitness.js';

/** This daemon's id in the leader election and the status: host and process. */
export function daemonId(): string {
  return `${hostname()}:${process.pid}`;
}

export interface LeadershipOptions {
  store: Store;
  /** leader.ttl and leader.resign_after. */
  ttlMs: number;
  resignAfterMs: number;
  logger: Logger;
  bus: Bus & Stage;
  stages: StageSet;
  freshness: FreshnessBoard;
  clock: Clock;
  auditSharing: AuditSharing;
  /** This daemon has just taken the lead: analyse every app at the next cycle. */
  onLead(): void;
  /** Whether the engine is stopping (a shutdown resigns on purpose: nothing to warn about). */
  stopping(): boolean;
}

export interface JoinedLeadership {
  leadership: Leadership;
  /** With an election: whether this daemon can do the leader's work, which decides whether it campaigns. */
  fitness?: LeaderFitness;
}

/** Joins the store's election (or leads alone) and starts campaigning. */
export function joinLeadership(o: LeadershipOptions): JoinedLeadership {
  const { store, logger } = o;
  let leadership: Leadership = new AlwaysLeader(daemonId());
  let fitness: LeaderFitness | undefined;
  if (isLeaderElector(store)) {
    leadership = store.leaderElection({ id: daemonId(), ttlSeconds: Math.max(1, Math.ceil(o.ttlMs / 1000)), logger });
    fitness = new LeaderFitness({ leadership, checks: fitnessChecks(o), resignAfterMs: o.resignAfterMs, logger });
    // Before campaigning: NATS is not connected yet, so this daemon starts out of the election.
    fitness.evaluate();
  }
  const alone = leadership instanceof AlwaysLeader;
  leadership.onChange((leading) => {
    if (leading) {
      logger.info({ id: daemonId() }, 'this daemon leads: waiting for a full freshness window of its own heartbeats before acting');
      o.onLead();
      if (alone) return;
      void o.auditSharing.adopt(store);
      // Until the predecessor's marker is reset, this daemon's view of it (its store's cache) may
      // still call the state fresh: the verdict says not fresh until the reset is done.
      o.freshness.suspendActual('this daemon has just taken the lead: resetting actual freshness, then a freshness window of its own heartbeats');
      const reset = (): void => {
        void store.revokeFreshness('actual').then(
          () => o.freshness.resumeActual(),
          (err: unknown) => {
            logger.error({ error: errorText(err) }, `could not reset actual freshness: ${errorText(err)}; trying again`);
            if (leadership.isLeader && !o.stopping()) o.clock.setTimeout(reset, 1_000);
          },
        );
      };
      reset();
    } else {
      // A standby does not act: the suspension of a reset it will not finish ends with its lead.
      o.freshness.resumeActual();
      // A shutdown resigns on purpose (and one daemon alone never hands over): nothing to warn about.
      if (o.stopping()) return;
      const { why } = leadership.candidacy();
      logger.warn({ leader: leadership.leaderId(), reason: why }, `this daemon no longer leads${why ? `: ${why}` : ''}: it stops writing and sending`);
    }
  });
  leadership.start();
  fitness?.start();
  return { leadership, ...(fitness ? { fitness } : {}) };
}

/**
 * What this daemon needs to do the leader's work itself: its own NATS connection, and heartbeat
 * saves that succeed (stages offering `LeaderWorkCheck`). Shared dependencies (the CC) are not
 * checked: the next leader would fare no better.
 */
function fitnessChecks(o: LeadershipOptions): FitnessCheck[] {
  return [
    {
      problem: () => (o.bus.connected ? null : `not connected to NATS (${o.bus.health?.().last_error ?? 'disconnected'})`),
    },
    {
      whileLeading: true,
      problem: () => {
        for (const { id, stage } of o.stages.offering(isLeaderWorkCheck)) {
          const error = stage.leaderWorkError();
          if (error) return `stage ${id}: ${error}`;
        }
        return null;
      },
    },
  ];
}
