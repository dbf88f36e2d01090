/**
 * Extra instances (docs/hm9000.md#extras; HM9000 `analyzer/app_analyzer.go`): every STARTING/RUNNING
 * instance at an index beyond the
 * desired count — all of them for an app that is not desired (stopped, failed, an old version) —
 * gets an immediate EXTRA stop. Skipped for an app that got a new start in this pass.
 */
import { Type } from '@sinclair/typebox';
import {
  definePlugin,
  shortDuration,
  Duration,
  isIndexDesired,
  isStartingOrRunning,
  newStop,
  type PolicyInput,
  type PolicyStage,
  type Proposal,
} from '../../src/sdk/index.js';

export const ExtrasOptions = Type.Object(
  {
    grace_period: Duration({ default: '3hb', description: 'keep_alive of a sent stop (HM9000 grace_period_in_heartbeats).' }),
  },
  { additionalProperties: false },
);

export function extrasRule({ app, now }: PolicyInput, o: { grace_period: number }): Proposal[] {
  return app.instances
    .filter((i) => isStartingOrRunning(i) && !isIndexDesired(app, i.index))
    .map((i) => ({
      kind: 'stop' as const,
      stop: newStop(i, now, { delayMs: 0, keepAliveMs: o.grace_period, reason: 'EXTRA' }),
      log: app.desired ? 'instance index is beyond the desired number of instances' : 'app is not desired',
      facts: { index: i.index, instance: i.instance, agent: i.agent, desired_instances: app.desired?.instances ?? 0 },
    }));
}

export default definePlugin({
  name: 'extras',
  kind: 'policy',
  family: 'hm9000',
  description: 'Stops instances that are not desired: beyond the desired count, stopped apps, old versions (HM9000 analyzer rule 4a).',
  optionsSchema: ExtrasOptions,
  create: (options): PolicyStage => ({ gate: 'no-new-start', quietWhenConverged: true, evaluate: (input) => extrasRule(input, options) }),
  summary: (o) => `extras: stops undesired instances, keep-alive ${shortDuration(Number(o.grace_period))}`,
});
