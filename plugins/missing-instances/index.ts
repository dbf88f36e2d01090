/**
 * Missing instances (Ruby HM, analysis step 2): once an app's grace (`reset_timestamp`) is a
 * `droplet_lost` old, every desired index of its live version that is not alive gets a start
 * queued at NORMAL priority; a FLAPPING index goes to the flapping policy instead (raised as a
 * `missing` event, silently). The grace is re-armed after each such check, which gives the Ruby
 * HM's re-request cadence: no sooner than droplet_lost, i.e. every other 20 s tick (40 s).
 *
 * The start is built at the moment it is decided: its `running` map is the one before this pass
 * marks silent instances DOWN (that happens later, in extra-instances), so the first start after a
 * silent loss still counts the lost instance — as the Ruby HM did, and the Cloud Controller then
 * ignores it until the next check.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Logger } from 'pino';
import {
  definePlugin,
  shortDuration,
  type Droplet,
  Duration,
  type EventDecision,
  type EventEnv,
  type EventInput,
  type EventPolicyStage,
  getInstance,
  graceOver,
  missingIndices,
  missingIndicesByIndex,
  startRequest,
} from '../../src/sdk/index.js';

export const MissingInstancesOptions = Type.Object(
  {
    rule: Type.Unsafe<'alive' | 'by-index'>({
      type: 'string',
      enum: ['alive', 'by-index'],
      default: 'alive',
      description:
        'alive: an index is missing when its record is not alive (CRASHED, or no heartbeat for droplet_lost) and has no delayed restart pending (Ruby HM 1063399). by-index: CRASHED, never heard from or silent for droplet_lost, with pending restarts tracked per index, and a missing index of an app awaiting a desired-state update is reported as the error at which that Ruby HM exited (b82a898).',
    }),
    droplet_lost: Duration({
      default: '30s',
      hb: false,
      description: 'An instance silent this long is not alive; also the per-app grace before (and between) missing checks (Ruby HM intervals.droplet_lost).',
    }),
    priority: Type.Integer({
      minimum: 0,
      default: 1000,
      description: 'Queue priority of a missing start (Ruby HM NORMAL_PRIORITY; crash restarts use 1, evacuations 1 000 000).',
    }),
  },
  { additionalProperties: false },
);

export type MissingInstancesConfig = Static<typeof MissingInstancesOptions>;

export function missingInstancesRule(d: Droplet, now: number, env: EventEnv, o: MissingInstancesConfig, logger: Logger): EventDecision[] {
  // The grace is tested first: within it, the records of the desired indices are not even created
  // (record creation order decides extra-instance slots later).
  if (!graceOver(d, now, o.droplet_lost)) return [];
  const find = o.rule === 'by-index' ? missingIndicesByIndex : missingIndices;
  const missing = find(d, now, o.droplet_lost);
  if (missing.length === 0) return [];

  const out: EventDecision[] = [];
  if (!env.busConnected) {
    logger.warn(
      { app: d.id, indices: missing },
      `actual state unavailable (message bus not connected): missing indices ${JSON.stringify(missing)} of ${d.id} not started`,
    );
  } else if (d.desiredUpdateRequired) {
    if (o.rule === 'by-index') {
      logger.error(
        { app: d.id, indices: missing },
        `missing indices ${JSON.stringify(missing)} of ${d.id} while its desired state awaits an update: the Ruby HM of this design exited here (NameError); skipped`,
      );
    } else {
      logger.debug({ app: d.id, indices: missing }, `missing indices of ${d.id} ignored: desired state update required`);
    }
  } else {
    for (const index of missing) {
      const inst = getInstance(d, index);
      if (inst.state === 'FLAPPING') {
        out.push({ kind: 'raise', event: { kind: 'missing', app: d.id, index, version: d.liveVersion, chatty: false } });
        continue;
      }
      out.push({
        kind: 'request',
        request: startRequest(d, index),
        delivery: { queue: o.priority },
        reason: 'MISSING',
        log: 'instance is missing',
        facts: { index, instance_state: inst.state, last_heartbeat_ms: inst.lastHeartbeatMs, desired_instances: d.numInstances },
      });
    }
  }
  // Re-armed whatever was done, so a still-missing index is looked at again only after the grace.
  d.resetTimestampMs = now;
  return out;
}

export default definePlugin({
  name: 'missing-instances',
  kind: 'policy',
  family: 'ruby-hm',
  description: "Queues starts of an app's missing instances when its grace is over (Ruby HM analysis, has_missing_indices / on_missing_instances).",
  optionsSchema: MissingInstancesOptions,
  create: (options, ctx): EventPolicyStage => ({
    events: ['analyze'],
    handle: ({ droplet, now, env }: EventInput) => (droplet ? missingInstancesRule(droplet, now, env, options, ctx.logger) : []),
  }),
  summary: (o) => `missing-instances: queues starts of missing instances (${String(o.rule)}), grace and silence ${shortDuration(Number(o.droplet_lost))}`,
});
