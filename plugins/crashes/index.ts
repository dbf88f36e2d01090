/**
 * Crashed instances (docs/hm9000.md#crashes; HM9000 `analyzer/app_analyzer.go`): a staged app's
 * desired index with a CRASHED and no
 * STARTING/RUNNING instance is restarted after a back-off that grows with the index's crash count.
 * When nothing of the app runs anywhere only index 0 is restarted. The count is incremented only
 * when the start is actually enqueued, and forgotten only when its TTL (2 × max back-off) lapses.
 */
import { Type } from '@sinclair/typebox';
import {
  byIndex,
  crashCountAt,
  definePlugin,
  counted,
  shortDuration,
  desiredInstances,
  Duration,
  isStaged,
  newStart,
  type PolicyInput,
  type PolicyStage,
  type Proposal,
} from '../../src/sdk/index.js';
import { computeCrashDelay } from './crash-delay.js';

export const CrashesOptions = Type.Object(
  {
    grace_period: Duration({ default: '3hb', description: 'keep_alive of a sent CRASHED start (HM9000 grace_period_in_heartbeats).' }),
    crashes_before_backoff: Type.Integer({ minimum: 0, default: 3, description: 'Restarts without delay (HM9000 number_of_crashes_before_backoff_begins).' }),
    starting_backoff: Duration({ default: '3hb', description: 'First back-off delay (HM9000 starting_backoff_delay_in_heartbeats).' }),
    maximum_backoff: Duration({
      default: '96hb',
      description: 'Largest back-off delay; crash counts live 2 × this (HM9000 maximum_backoff_delay_in_heartbeats).',
    }),
  },
  { additionalProperties: false },
);

export interface CrashesConfig {
  grace_period: number;
  crashes_before_backoff: number;
  starting_backoff: number;
  maximum_backoff: number;
}

export function crashesRule({ app, now, priority }: PolicyInput, o: CrashesConfig): Proposal[] {
  if (!isStaged(app)) return [];
  const n = desiredInstances(app);
  const indices = byIndex(app);
  let anyRunning = false; // at any index, desired or not
  for (const s of indices.values()) if (s.running + s.starting > 0) anyRunning = true;
  const out: Proposal[] = [];
  for (let index = 0; index < n; index++) {
    const s = indices.get(index);
    if (!s || s.running + s.starting > 0 || s.crashed === 0) continue;
    if (index !== 0 && !anyRunning) continue;
    const cc = crashCountAt(app, index, now);
    const delay = computeCrashDelay(cc.count, o.crashes_before_backoff, o.starting_backoff, o.maximum_backoff);
    out.push({
      kind: 'start',
      start: newStart(app, index, now, { delayMs: delay, keepAliveMs: o.grace_period, priority, reason: 'CRASHED' }),
      crashCount: { count: cc, ttlMs: 2 * o.maximum_backoff },
      log: 'instance has crashed',
      facts: { index, crash_count: cc.count, delay_ms: delay, priority },
    });
  }
  return out;
}

export default definePlugin({
  name: 'crashes',
  kind: 'policy',
  family: 'hm9000',
  description: 'Restarts crashed instances with a growing back-off (HM9000 analyzer rule 2 and ComputeCrashDelay).',
  optionsSchema: CrashesOptions,
  create: (options): PolicyStage => ({ quietWhenConverged: true, evaluate: (input) => crashesRule(input, options) }),
  summary: (o) =>
    `crashes: restarts crashed instances, back-off after ${counted(Number(o.crashes_before_backoff), 'crash', 'crashes')} from ${shortDuration(Number(o.starting_backoff))} up to ${shortDuration(Number(o.maximum_backoff))}`,
});
