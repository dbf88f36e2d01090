/**
 * Restarts of instances whose agent goes away (docs/ruby-hm.md#evacuation, #an-evacuation): a `droplet.exited` with
 * reason DEA_SHUTDOWN or DEA_EVACUATION queues a START of that index at high priority, ahead of
 * missing and crash restarts. No flapping check and no stop of the old instance (the agent is
 * leaving). Crash restarts are the flapping policy's; the mark-down and the missing-check grace of
 * such exits are droplet-records'.
 *
 * The Ruby HM queued the start without checking the desired state, so a forged or stale exit
 * started an app the Cloud Controller does not want, an index beyond its count, or a second copy of
 * an index running elsewhere. hmgate verifies it against the app's record first (`verify`, on by
 * default); a refused start is counted and logged with why. `verify: false` restores the original.
 */
import { Type } from '@sinclair/typebox';
import type { Counter } from 'prom-client';
import {
  counted,
  definePlugin,
  type Droplet,
  Duration,
  type EventDecision,
  type EventEnv,
  type EventInput,
  type EventPolicyStage,
  type ExitEvent,
  hasRecentHeartbeat,
  LogLimiter,
  peekInstance,
  shouldRun,
  type StageContext,
  startRequest,
  suppressedOrdersCounter,
} from '../../src/sdk/index.js';
import type { Logger } from 'pino';

export const ExitRestartsOptions = Type.Object(
  {
    priority: Type.Integer({
      default: 1_000_000,
      description: 'Queue priority of the restart (Ruby HM HIGH_PRIORITY); the queue takes higher first (missing: 1000, crash: 1).',
    }),
    verify: Type.Boolean({
      default: true,
      description:
        'true: restart only if the bulk API answered last time and has reported the app since its last update, the app is STARTED and STAGED, the index is below its instance count, and no other instance heartbeats RUNNING or STARTING there; anything else is counted (hmgate_orders_suppressed_total) and logged with why, not started. false: restart whatever the message names, unverified (Ruby HM).',
    }),
    droplet_lost: Duration({
      default: '30s',
      hb: false,
      description:
        'With verify: how recent the last heartbeat of another instance at the index must be for it to count as running there (Ruby HM droplet_lost).',
    }),
  },
  { additionalProperties: false },
);

export interface ExitRestartsConfig {
  priority: number;
  /** Default true. */
  verify?: boolean;
  /** ms; default 30 s. */
  droplet_lost?: number;
}

/** Exit reasons that mean the instance's agent is leaving. */
export const AGENT_EXIT_REASONS: ReadonlySet<string> = new Set(['DEA_SHUTDOWN', 'DEA_EVACUATION']);

export interface ExitRefusal {
  reason: 'desired_not_fresh' | 'not_desired' | 'not_started' | 'index_not_desired' | 'running_elsewhere' | 'starting_elsewhere';
  detail: string;
}

/**
 * Whether the restart an agent exit asks for still makes sense, from the app's record (what the
 * bulk API last said, and the instance records heartbeats keep). Null when it does.
 */
export function verifyExitRestart(
  d: Droplet,
  exit: ExitEvent,
  now: number,
  env: Pick<EventEnv, 'desiredAvailable'>,
  dropletLostMs: number,
): ExitRefusal | null {
  // Without current desired state nothing can be verified; the missing-instance rule starts the
  // index later if it is still missing once the bulk API answers again.
  if (!env.desiredAvailable)
    return { reason: 'desired_not_fresh', detail: 'desired state is not available (the last bulk API exchange failed), so the start cannot be verified' };
  if (d.state === null) return { reason: 'not_desired', detail: 'the Cloud Controller has not reported this app' };
  if (d.desiredUpdateRequired)
    return {
      reason: 'desired_not_fresh',
      detail: 'the app changed in the Cloud Controller and its desired state has not been fetched since, so the start cannot be verified',
    };
  if (!shouldRun(d)) return { reason: 'not_started', detail: `the app is ${d.state} with a ${String(d.packageState)} package, not STARTED and STAGED` };
  if (exit.index >= d.numInstances)
    return { reason: 'index_not_desired', detail: `index ${exit.index} is beyond the ${counted(d.numInstances, 'desired instance')}` };
  // The record of the index at the live version, if another guid heartbeats there: droplet-records
  // has already marked the exited guid's own record down.
  const other = peekInstance(d, exit.index);
  if (other && other.guid !== null && other.guid !== exit.instance && hasRecentHeartbeat(other, now, dropletLostMs)) {
    if (other.state === 'RUNNING') return { reason: 'running_elsewhere', detail: `index ${exit.index} already runs elsewhere (instance ${other.guid})` };
    // A copy already starting is the replacement; a second start would only make a duplicate that
    // is stopped later. If it fails, the index is missing and is started after the grace.
    if (other.state === 'STARTING')
      return { reason: 'starting_elsewhere', detail: `index ${exit.index} is already starting elsewhere (instance ${other.guid})` };
  }
  return null;
}

export function exitRestart(d: Droplet, exit: ExitEvent, o: ExitRestartsConfig): EventDecision[] {
  if (!AGENT_EXIT_REASONS.has(exit.reason)) return [];
  return [
    {
      kind: 'request',
      request: startRequest(d, exit.index),
      delivery: { queue: o.priority },
      reason: 'EVACUATING',
      log: exit.reason === 'DEA_SHUTDOWN' ? "instance's agent shut down" : "instance's agent is evacuating",
      facts: { index: exit.index, instance: exit.instance, exit_reason: exit.reason, exit_version: exit.version },
    },
  ];
}

export class ExitRestarts implements EventPolicyStage {
  readonly events = ['exit'] as const;
  private readonly suppressed: Counter<'action' | 'why'> | undefined;
  /** Refusals are logged at most once per reason every logEveryMs: forged exits cannot flood the log. */
  private readonly refusals: LogLimiter;

  constructor(
    private readonly o: ExitRestartsConfig,
    private readonly ctx?: Pick<StageContext, 'logger' | 'metrics'>,
    logEveryMs = 10_000,
  ) {
    this.suppressed = ctx ? suppressedOrdersCounter(ctx.metrics) : undefined;
    this.refusals = new LogLimiter(logEveryMs);
  }

  handle(input: EventInput): EventDecision[] {
    const exit = input.event;
    if (exit.kind !== 'exit' || !AGENT_EXIT_REASONS.has(exit.reason)) return [];
    const d = input.droplet as Droplet;
    if (this.o.verify !== false) {
      const refusal = verifyExitRestart(d, exit, input.now, input.env, this.o.droplet_lost ?? 30_000);
      if (refusal) {
        this.suppressed?.inc({ action: 'start', why: 'verification' });
        this.log(this.ctx?.logger, refusal, exit, input.now);
        return [];
      }
    }
    return exitRestart(d, exit, this.o);
  }

  private log(logger: Logger | undefined, refusal: ExitRefusal, exit: ExitEvent, now: number): void {
    const line = this.refusals.pass(refusal.reason, now);
    if (!line) return;
    logger?.warn(
      {
        app: exit.app,
        version: exit.version,
        index: exit.index,
        instance: exit.instance,
        exit_reason: exit.reason,
        why: refusal.reason,
        detail: refusal.detail,
        ...(line.heldBack ? { refused_since_last_log: line.heldBack } : {}),
      },
      `Not starting ${exit.app} index ${exit.index} for droplet.exited ${exit.reason}: ${refusal.detail}`,
    );
  }
}

export default definePlugin({
  name: 'exit-restarts',
  kind: 'policy',
  family: 'ruby-hm',
  description:
    'Restarts at once (queued, high priority) the instances of an agent that shuts down or evacuates (Ruby HM droplet.exited DEA_SHUTDOWN / DEA_EVACUATION), verified against the desired state unless verify: false.',
  optionsSchema: ExitRestartsOptions,
  create: (options, ctx: StageContext): EventPolicyStage => new ExitRestarts(options, ctx),
  summary: (o) =>
    `exit-restarts: restarts instances of agents that shut down or evacuate, queue priority ${String(o.priority)}${o.verify === false ? ', UNVERIFIED' : ''}`,
});
