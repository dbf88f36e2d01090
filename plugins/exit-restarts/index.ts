/**
 * Restarts of instances whose agent goes away (spec ruby-hm §3.3, §9.3): a `droplet.exited` with
 * reason DEA_SHUTDOWN or DEA_EVACUATION queues a START of that index at high priority, ahead of
 * missing and crash restarts. No flapping check and no desired-state check, and no stop of the old
 * instance (the agent is leaving). Crash restarts are the flapping policy's; the mark-down and the
 * missing-check grace of such exits are droplet-records'.
 */
import { Type } from '@sinclair/typebox';
import { startRequest, type Droplet } from '../../src/pipeline/droplets.js';
import type { EventDecision, EventInput, EventPolicyStage, ExitEvent } from '../../src/pipeline/events.js';
import { definePlugin, type StageContext } from '../../src/pipeline/plugin.js';

export const ExitRestartsOptions = Type.Object(
  {
    priority: Type.Integer({
      default: 1_000_000,
      description: 'Queue priority of the restart (Ruby HM HIGH_PRIORITY); the queue takes higher first (missing: 1000, crash: 1).',
    }),
  },
  { additionalProperties: false },
);

export interface ExitRestartsConfig {
  priority: number;
}

/** Exit reasons that mean the instance's agent is leaving. */
export const AGENT_EXIT_REASONS: ReadonlySet<string> = new Set(['DEA_SHUTDOWN', 'DEA_EVACUATION']);

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

export default definePlugin({
  name: 'exit-restarts',
  kind: 'policy',
  description: 'Restarts at once (queued, high priority) the instances of an agent that shuts down or evacuates (Ruby HM droplet.exited DEA_SHUTDOWN / DEA_EVACUATION).',
  optionsSchema: ExitRestartsOptions,
  create: (options, _ctx: StageContext): EventPolicyStage => ({
    events: ['exit'],
    handle: (input: EventInput) => (input.event.kind === 'exit' ? exitRestart(input.droplet as Droplet, input.event, options) : []),
  }),
});
