/**
 * Extra instances and wrong versions (Ruby HM, analysis step 3, `update_extra_instances` and
 * `on_extra_instances`). Walks every record of every version in insertion order: a STARTING or
 * RUNNING record silent for droplet_lost is marked DOWN; a record is pruned (deleted, with its
 * crash count and flapping state) when the app is STOPPED, when it is beyond the desired slots, or
 * when its version is not the live one; of the pruned ones only STARTING/RUNNING records are
 * stopped, all in one immediate stop. Emptied versions go when the app is STOPPED or they are not
 * live. The stop is built after pruning, so its `running` map no longer counts what it stops
 * (a STOPPED app's stop carries `running: {}`).
 *
 * Slots: `count` (Ruby HM 1063399) lets any record of the live version take a slot, whatever its
 * state or index, in insertion order, until num_instances are kept; `index` (b82a898) keeps
 * indices below num_instances, so a running index 2 of a two-instance app is stopped even while
 * index 1 is missing. `index` also reproduces that design's silence test, which looks only at a
 * record's last heartbeat time.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Logger } from 'pino';
import {
  definePlugin,
  type Droplet,
  Duration,
  type EventDecision,
  type EventInput,
  type EventPolicyStage,
  type ExtraInstance,
  hasRecentHeartbeat,
  type InstanceRecord,
  isRecordStartingOrRunning,
  olderThan,
  stopRequest,
} from '../../src/sdk/index.js';

export const ExtraInstancesOptions = Type.Object(
  {
    slots: Type.Unsafe<'count' | 'index'>({
      type: 'string',
      enum: ['count', 'index'],
      default: 'count',
      description:
        'count: the first num_instances records of the live version (any state or index, in the order they were created) are kept (Ruby HM 1063399). index: records at index >= num_instances are extra (b82a898).',
    }),
    droplet_lost: Duration({
      default: '30s',
      hb: false,
      description: 'A STARTING/RUNNING record silent this long is marked DOWN before the rule runs (Ruby HM intervals.droplet_lost).',
    }),
  },
  { additionalProperties: false },
);

export type ExtraInstancesConfig = Static<typeof ExtraInstancesOptions>;

export const REASON_STOPPED = 'Droplet state is STOPPED';
export const REASON_EXTRA = 'Extra instance';
export const REASON_VERSION = 'Live version mismatch';

/** Whole seconds, the unit of a record's state timestamp. */
const seconds = (ms: number) => Math.floor(ms / 1000);

/**
 * Prunes the app's records as described above and returns the instances to stop, in order. With
 * `count` slots a guid appears once (the Ruby HM kept them in a map keyed by guid: a later record
 * with the same guid takes over the entry, in the first one's place); with `index` every record
 * gives one entry.
 */
export function updateExtraInstances(d: Droplet, now: number, o: ExtraInstancesConfig): ExtraInstance[] {
  const byGuid = new Map<string | null, ExtraInstance>();
  const list: ExtraInstance[] = [];
  const silent = (inst: InstanceRecord) =>
    o.slots === 'index' ? olderThan(inst.lastHeartbeatMs, now, o.droplet_lost) : !hasRecentHeartbeat(inst, now, o.droplet_lost);
  let kept = 0;
  for (const [version, byIndex] of d.versions) {
    for (const [index, inst] of byIndex) {
      if (isRecordStartingOrRunning(inst) && silent(inst)) {
        inst.state = 'DOWN';
        inst.stateTimestamp = seconds(now);
      }
      const beyond = o.slots === 'index' ? index >= d.numInstances : kept >= d.numInstances;
      const reason = d.state === 'STOPPED' ? REASON_STOPPED : beyond ? REASON_EXTRA : version !== d.liveVersion ? REASON_VERSION : null;
      if (reason === null) {
        kept++;
        continue;
      }
      if (isRecordStartingOrRunning(inst)) {
        const entry = { instance: inst.guid, version, reason };
        if (o.slots === 'index') list.push(entry);
        else byGuid.set(inst.guid, entry);
      }
      byIndex.delete(index); // deleting the current entry keeps a Map iteration going
    }
  }
  for (const [version, byIndex] of d.versions) {
    if (byIndex.size === 0 && (d.state === 'STOPPED' || version !== d.liveVersion)) d.versions.delete(version);
  }
  return o.slots === 'index' ? list : [...byGuid.values()];
}

export function extraInstancesRule(d: Droplet, now: number, o: ExtraInstancesConfig, logger: Logger): EventDecision[] {
  const extras = updateExtraInstances(d, now, o);
  // The analysis replaces whatever the heartbeat path had gathered (the older design re-sends
  // this list on every heartbeat of the app until the next analysis).
  d.extraInstances = extras;
  if (extras.length === 0) return [];
  const instances = extras.map((e) => ({ instance: e.instance, version: e.version, reason: e.reason }));
  if (d.desiredUpdateRequired) {
    logger.info({ app: d.id, instances }, `extra instances of ${d.id} not stopped: desired state update required`);
    return [];
  }
  return [
    {
      kind: 'request',
      request: stopRequest(d, extras),
      delivery: 'now',
      // One reason for the stop, as on the heartbeat path; each instance's own is in the facts.
      reason: 'EXTRA',
      log: `not desired (${[...new Set(extras.map((e) => e.reason))].join('; ')})`,
      facts: { instances, desired_instances: d.numInstances, app_state: d.state },
    },
  ];
}

export default definePlugin({
  name: 'extra-instances',
  kind: 'policy',
  family: 'ruby-hm',
  description:
    'Prunes instance records beyond the desired slots, of other versions or of stopped apps, and stops the live ones at once (Ruby HM update_extra_instances).',
  optionsSchema: ExtraInstancesOptions,
  create: (options, ctx): EventPolicyStage => ({
    events: ['analyze'],
    handle: ({ droplet, now }: EventInput) => (droplet ? extraInstancesRule(droplet, now, options, ctx.logger) : []),
  }),
  summary: (o) => `extra-instances: stops instances beyond the desired ${o.slots === 'index' ? 'indices' : 'count'}, of other versions or of stopped apps`,
});
