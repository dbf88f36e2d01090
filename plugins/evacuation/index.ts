/**
 * Evacuating instances (docs/hm9000.md#evacuation; HM9000 `analyzer/app_analyzer.go`), for every
 * index with a heartbeat: an EVACUATING
 * instance at an undesired index is an EXTRA stop; otherwise it is stopped (EVACUATION_COMPLETE)
 * once the index runs elsewhere, waited for while it is STARTING elsewhere, stopped at once on an
 * unstable (crashed) index, and started elsewhere immediately at priority 2.0. A non-staged app
 * falls through after its stop and still gets the start — HM9000 B does exactly that.
 */
import { Type } from '@sinclair/typebox';
import {
  byIndex,
  crashCountAt,
  definePlugin,
  shortDuration,
  Duration,
  type InstanceHeartbeat,
  isIndexDesired,
  isStaged,
  newStart,
  newStop,
  type PolicyInput,
  type PolicyStage,
  type Proposal,
} from '../../src/sdk/index.js';

export const EVACUATION_PRIORITY = 2.0;

export const EvacuationOptions = Type.Object(
  {
    grace_period: Duration({ default: '3hb', description: 'keep_alive of EVACUATING starts and of the stops (HM9000 grace_period_in_heartbeats).' }),
  },
  { additionalProperties: false },
);

export function evacuationRule({ app, now }: PolicyInput, o: { grace_period: number }): Proposal[] {
  const out: Proposal[] = [];
  const stopEach = (evacuating: InstanceHeartbeat[], reason: string, log: string) => {
    for (const e of evacuating) {
      out.push({
        kind: 'stop',
        stop: newStop(e, now, { delayMs: 0, keepAliveMs: o.grace_period, reason }),
        log,
        facts: { index: e.index, instance: e.instance, agent: e.agent },
      });
    }
  };
  for (const [index, at] of byIndex(app)) {
    if (at.evacuating === 0) continue;
    const evacuating = at.instances.filter((i) => i.state === 'EVACUATING');
    if (!isIndexDesired(app, index)) {
      stopEach(evacuating, 'EXTRA', 'Identified undesired evacuating instance.');
      continue;
    }
    if (!isStaged(app)) stopEach(evacuating, 'EVACUATION_COMPLETE', 'Identified evacuating instance that is not staged.');
    if (at.running > 0) {
      stopEach(evacuating, 'EVACUATION_COMPLETE', 'Stopping an evacuating instance that has started running elsewhere.');
      continue;
    }
    if (at.starting > 0) continue;
    const cc = crashCountAt(app, index, now);
    if (cc.count > 0) stopEach(evacuating, 'EVACUATION_COMPLETE', 'Stopping an unstable evacuating instance.');
    out.push({
      kind: 'start',
      start: newStart(app, index, now, { delayMs: 0, keepAliveMs: o.grace_period, priority: EVACUATION_PRIORITY, reason: 'EVACUATING' }),
      log: 'An instance is evacuating.  Starting it elsewhere.',
      facts: { index, evacuating: evacuating.map((e) => e.instance), crash_count: cc.count },
    });
  }
  return out;
}

export default definePlugin({
  name: 'evacuation',
  kind: 'policy',
  family: 'hm9000',
  description: 'Moves instances off evacuating agents: start elsewhere, then stop the evacuating one (HM9000 analyzer rule 3).',
  optionsSchema: EvacuationOptions,
  create: (options): PolicyStage => ({ quietWhenConverged: true, evaluate: (input) => evacuationRule(input, options) }),
  summary: (o) => `evacuation: moves instances off evacuating agents, keep-alive ${shortDuration(Number(o.grace_period))}`,
});
