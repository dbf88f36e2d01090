/**
 * Extra app (Ruby HM, analysis step 1, `is_extra?` / `on_extra_app`): an app the bulk API has not
 * reported for more than desired_state_lost (deleted in the Cloud Controller, or never known to it)
 * gets one immediate stop of its instances, on every pass while that lasts — provided the last bulk
 * exchange succeeded. It is not held back while the app awaits a desired-state update, and it is
 * sent even with no instance to name: the Cloud Controller then stops the whole app if it does not
 * know it. Runs first in the analysis, before any record is pruned.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Logger } from 'pino';
import {
  allInstances,
  definePlugin,
  shortDuration,
  type Droplet,
  Duration,
  type EventDecision,
  type EventEnv,
  type EventInput,
  type EventPolicyStage,
  isRecordStartingOrRunning,
  olderThan,
  stopRequest,
} from '../../src/sdk/index.js';

export const ExtraAppOptions = Type.Object(
  {
    desired_state_lost: Duration({
      default: '180s',
      hb: false,
      description: 'An app absent from the bulk API for longer than this is stopped as an extra app (Ruby HM intervals.desired_state_lost).',
    }),
    instances: Type.Unsafe<'live' | 'all-records'>({
      type: 'string',
      enum: ['live', 'all-records'],
      default: 'live',
      description:
        'live: the stop names each STARTING/RUNNING instance once (Ruby HM 1063399). all-records: it names every record of every version in any state, null for one never heard from (b82a898).',
    }),
  },
  { additionalProperties: false },
);

export type ExtraAppConfig = Static<typeof ExtraAppOptions>;

export const REASON_EXTRA_APP = 'Extra app';

export function extraAppRule(d: Droplet, now: number, env: EventEnv, o: ExtraAppConfig, logger: Logger): EventDecision[] {
  if (!olderThan(d.desiredUpdateMs, now, o.desired_state_lost)) return [];
  if (!env.desiredAvailable) {
    logger.debug({ app: d.id }, `${d.id} is not in the desired state, but desired state is unavailable: not stopped`);
    return [];
  }
  const named: { instance: string | null; version: string | null }[] = [];
  if (o.instances === 'all-records') {
    for (const inst of allInstances(d)) named.push({ instance: inst.guid, version: inst.version });
  } else {
    // One entry per guid, as a map keyed by guid: a later record with the same guid keeps the
    // first one's place.
    const byGuid = new Map<string | null, { instance: string | null; version: string | null }>();
    for (const inst of allInstances(d)) if (isRecordStartingOrRunning(inst)) byGuid.set(inst.guid, { instance: inst.guid, version: inst.version });
    named.push(...byGuid.values());
  }
  return [
    {
      kind: 'request',
      request: stopRequest(d, named),
      delivery: 'now',
      reason: 'EXTRA_APP',
      log: `not in the desired state for more than ${o.desired_state_lost / 1000}s`,
      facts: { instances: named.map((n) => ({ ...n, reason: REASON_EXTRA_APP })), desired_update_age_ms: now - d.desiredUpdateMs },
    },
  ];
}

export default definePlugin({
  name: 'extra-app',
  kind: 'policy',
  family: 'ruby-hm',
  description: 'Stops the instances of an app the bulk API has not reported for desired_state_lost (Ruby HM is_extra? / on_extra_app).',
  optionsSchema: ExtraAppOptions,
  create: (options, ctx): EventPolicyStage => ({
    events: ['analyze'],
    handle: ({ droplet, now, env }: EventInput) => (droplet ? extraAppRule(droplet, now, env, options, ctx.logger) : []),
  }),
  summary: (o) => `extra-app: stops apps absent from the desired state for ${shortDuration(Number(o.desired_state_lost))}`,
});
