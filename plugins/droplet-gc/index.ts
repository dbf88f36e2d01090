/**
 * Garbage collection of app records (Ruby HM `prune_crashes` and `gc_droplets`). At the end of an
 * app's analysis its crash records older than flapping_timeout are dropped (they feed
 * `healthmanager.status` CRASHED and the crash counts of varz). Every droplet_gc, each app the bulk
 * API has not reported for droplet_gc_grace_period is forgotten; heartbeats do not keep it, and its
 * next event creates it afresh (grace and update-required again). When the desired-state source
 * reports which apps a completed walk saw (bulk-api forget_unseen, the older Ruby HM), the others
 * are forgotten at once.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { Logger } from 'pino';
import {
  definePlugin,
  shortDuration,
  type Droplet,
  type DropletRegistry,
  Duration,
  type EventDecision,
  type EventInput,
  type EventPolicyStage,
  olderThan,
} from '../../src/sdk/index.js';

export const DropletGcOptions = Type.Object(
  {
    flapping_timeout: Duration({
      default: '500s',
      hb: false,
      description: "Crash records older than this are dropped at the end of the app's analysis (Ruby HM intervals.flapping_timeout).",
    }),
    droplet_gc: Duration({ default: '300s', hb: false, description: 'How often app records are swept (Ruby HM intervals.droplet_gc).' }),
    droplet_gc_grace_period: Duration({
      default: '240s',
      hb: false,
      description: 'A swept app absent from the bulk API for longer than this is forgotten (Ruby HM intervals.droplet_gc_grace_period).',
    }),
  },
  { additionalProperties: false },
);

export type DropletGcConfig = Static<typeof DropletGcOptions>;

/** Drops crash records older than flapping_timeout; returns how many went. */
export function pruneCrashes(d: Droplet, now: number, o: Pick<DropletGcConfig, 'flapping_timeout'>): number {
  let n = 0;
  for (const [guid, crash] of d.crashes) {
    if (olderThan(crash.timestampMs, now, o.flapping_timeout)) {
      d.crashes.delete(guid);
      n++;
    }
  }
  return n;
}

export function ripeForGc(d: Droplet, now: number, o: Pick<DropletGcConfig, 'droplet_gc_grace_period'>): boolean {
  return olderThan(d.desiredUpdateMs, now, o.droplet_gc_grace_period);
}

/** The records of apps a completed walk did not report (`hm.desired-state.droplet-gone`). */
export function unseenApps(seen: readonly string[], records: DropletRegistry): string[] {
  const kept = new Set(seen);
  const gone: string[] = [];
  for (const d of records.values()) if (!kept.has(d.id)) gone.push(d.id);
  return gone;
}

export function dropletGcRule(input: EventInput, o: DropletGcConfig, logger: Logger, records?: DropletRegistry): EventDecision[] {
  if (input.event.kind === 'walk') {
    if (input.event.phase !== 'done' || !input.event.seen || !records) return [];
    const gone = unseenApps(input.event.seen, records);
    for (const id of gone) logger.info({ app: id }, `hm.desired-state.droplet-gone: ${id} was not in the bulk API walk; its record is forgotten`);
    return gone.length ? [{ kind: 'forget', apps: gone }] : [];
  }
  const d = input.droplet;
  if (!d) return [];
  if (input.event.kind === 'analyze') {
    pruneCrashes(d, input.now, o);
    return [];
  }
  if (input.event.kind === 'sweep' && ripeForGc(d, input.now, o)) {
    logger.debug(
      { app: d.id, desired_update_age_ms: input.now - d.desiredUpdateMs },
      `forgetting ${d.id}: not in the desired state for more than ${o.droplet_gc_grace_period / 1000}s`,
    );
    return [{ kind: 'forget' }];
  }
  return [];
}

export default definePlugin({
  name: 'droplet-gc',
  kind: 'policy',
  family: 'ruby-hm',
  description: 'Drops stale crash records after each analysis and forgets apps the bulk API no longer reports (Ruby HM prune_crashes / gc_droplets).',
  optionsSchema: DropletGcOptions,
  create: (options, ctx): EventPolicyStage => ({
    events: ['analyze', 'sweep', 'walk'],
    everyMs: options.droplet_gc,
    handle: (input: EventInput) => dropletGcRule(input, options, ctx.logger, ctx.events.droplets),
  }),
  summary: (o) =>
    `droplet-gc: drops crash records after ${shortDuration(Number(o.flapping_timeout))}, forgets apps absent for ${shortDuration(Number(o.droplet_gc_grace_period))} every ${shortDuration(Number(o.droplet_gc))}`,
});
