/**
 * Duplicate instances (docs/hm9000.md#duplicates; HM9000 `analyzer/app_analyzer.go`): at a desired
 * index with more than one STARTING/RUNNING
 * instance, every one of them gets a DUPLICATE stop staggered at (4 + k) × grace; the dispatcher
 * sends a stop only while the index is still duplicated, so all but one go, one at a time.
 * Skipped for an app that got a new start in this pass.
 */
import { Type } from '@sinclair/typebox';
import {
  byIndex,
  definePlugin,
  shortDuration,
  desiredInstances,
  Duration,
  isStartingOrRunning,
  newStop,
  type PolicyInput,
  type PolicyStage,
  type Proposal,
} from '../../src/sdk/index.js';

export const DuplicatesOptions = Type.Object(
  {
    grace_period: Duration({ default: '3hb', description: 'Unit of the stagger and keep_alive of a sent stop (HM9000 grace_period_in_heartbeats).' }),
    first_stop_after: Type.Integer({ minimum: 0, default: 4, description: 'The k-th duplicate is stopped after (first_stop_after + k) × grace_period.' }),
  },
  { additionalProperties: false },
);

export function duplicatesRule({ app, now }: PolicyInput, o: { grace_period: number; first_stop_after: number }): Proposal[] {
  const n = desiredInstances(app);
  const out: Proposal[] = [];
  for (const [index, at] of byIndex(app)) {
    if (index >= n || at.running + at.starting < 2) continue;
    const list = at.instances.filter(isStartingOrRunning);
    list.forEach((inst, k) => {
      const delay = (o.first_stop_after + k) * o.grace_period;
      out.push({
        kind: 'stop',
        stop: newStop(inst, now, { delayMs: delay, keepAliveMs: o.grace_period, reason: 'DUPLICATE' }),
        log: 'instance is a duplicate',
        facts: { index, instance: inst.instance, agent: inst.agent, running_at_index: list.length, delay_ms: delay },
      });
    });
  }
  return out;
}

export default definePlugin({
  name: 'duplicates',
  kind: 'policy',
  family: 'hm9000',
  description: 'Stops all but one instance running at the same index, one at a time (HM9000 analyzer rule 4b).',
  optionsSchema: DuplicatesOptions,
  create: (options): PolicyStage => ({ gate: 'no-new-start', quietWhenConverged: true, evaluate: (input) => duplicatesRule(input, options) }),
  summary: (o) => `duplicates: stops duplicates one at a time from ${String(o.first_stop_after)} + k × ${shortDuration(Number(o.grace_period))}`,
});
