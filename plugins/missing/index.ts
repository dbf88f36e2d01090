/**
 * Missing instances (docs/hm9000.md#missing; HM9000 `analyzer/app_analyzer.go`): for a staged app,
 * every desired index with no
 * STARTING/RUNNING and no CRASHED instance gets a MISSING start after the grace period, kept 0 s
 * once sent (so a still-missing index is proposed again in a later cycle).
 */
import { Type } from '@sinclair/typebox';
import {
  byIndex,
  definePlugin,
  shortDuration,
  desiredInstances,
  Duration,
  isStaged,
  newStart,
  type PolicyInput,
  type PolicyStage,
  type Proposal,
} from '../../src/sdk/index.js';

export const MissingOptions = Type.Object(
  {
    grace_period: Duration({ default: '3hb', description: 'Delay before a MISSING start is sent (HM9000 grace_period_in_heartbeats).' }),
    evacuating_counts_as_present: Type.Boolean({
      default: false,
      description:
        'true: an index whose only instance is EVACUATING is not missing (HM9000 H, 9a8db6b); false: it is, and the evacuation rule replaces the start (B).',
    }),
  },
  { additionalProperties: false },
);

export interface MissingConfig {
  grace_period: number;
  evacuating_counts_as_present: boolean;
}

export function missingRule({ app, now, priority }: PolicyInput, o: MissingConfig): Proposal[] {
  if (!isStaged(app)) return [];
  const n = desiredInstances(app);
  const indices = byIndex(app);
  const out: Proposal[] = [];
  for (let index = 0; index < n; index++) {
    const s = indices.get(index);
    if (s && (s.running + s.starting + s.crashed > 0 || (o.evacuating_counts_as_present && s.evacuating > 0))) continue;
    out.push({
      kind: 'start',
      start: newStart(app, index, now, { delayMs: o.grace_period, keepAliveMs: 0, priority, reason: 'MISSING' }),
      log: 'instance is missing',
      facts: { index, desired_instances: n, priority },
    });
  }
  return out;
}

export default definePlugin({
  name: 'missing',
  kind: 'policy',
  family: 'hm9000',
  description: 'Starts desired instances that no agent reports (HM9000 analyzer rule 1).',
  optionsSchema: MissingOptions,
  create: (options): PolicyStage => ({ quietWhenConverged: true, evaluate: (input) => missingRule(input, options) }),
  summary: (o) => `missing: starts missing instances after ${shortDuration(Number(o.grace_period))}`,
});
