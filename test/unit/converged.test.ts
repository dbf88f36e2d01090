/**
 * Converged apps (every desired index exactly one RUNNING instance, nothing else) are passed by
 * without a view when every policy says it proposes nothing for them: the HM9000 rules say so, and
 * a pass that skips them must propose exactly what the full pass proposes.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import crashesPlugin from '../../plugins/crashes/index.js';
import duplicatesPlugin from '../../plugins/duplicates/index.js';
import evacuationPlugin from '../../plugins/evacuation/index.js';
import extrasPlugin from '../../plugins/extras/index.js';
import missingPlugin from '../../plugins/missing/index.js';
import { crash, desired, GRACE, hb, HB, hm9000Policies, pendingStart, snapshot } from '../helpers/hm9000-fixtures.js';
import { analyze, type NamedPolicy } from '../../src/pipeline/cycle/analyzer.js';
import { buildAppView, isConverged } from '../../src/sdk/app-view.js';
import type { PolicyStage } from '../../src/sdk/policy.js';
import type { StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { type InstanceHeartbeat } from '../../src/sdk/state.js';

const NOW = 1_000_000;
const ctx = undefined as unknown as StageContext;
const grace = { grace_period: GRACE };
/** The shipped plugins, as the engine creates them (each says quietWhenConverged). */
const shipped: NamedPolicy[] = [
  { id: 'missing', stage: missingPlugin.create({ ...grace, evacuating_counts_as_present: false }, ctx) as PolicyStage },
  {
    id: 'crashes',
    stage: crashesPlugin.create({ ...grace, crashes_before_backoff: 3, starting_backoff: 3 * HB, maximum_backoff: 96 * HB }, ctx) as PolicyStage,
  },
  { id: 'evacuation', stage: evacuationPlugin.create(grace, ctx) as PolicyStage },
  { id: 'extras', stage: extrasPlugin.create(grace, ctx) as PolicyStage },
  { id: 'duplicates', stage: duplicatesPlugin.create({ ...grace, first_stop_after: 4 }, ctx) as PolicyStage },
];

/** What a pass proposes, without the random message ids. */
function proposals(r: ReturnType<typeof analyze>) {
  return {
    starts: r.starts.map(({ messageId: _, ...s }) => s),
    stops: r.stops.map(({ messageId: _, ...s }) => s),
    crashCounts: r.crashCounts,
  };
}

const STATES = ['RUNNING', 'RUNNING', 'RUNNING', 'STARTING', 'CRASHED', 'EVACUATING'];

/** A few apps: desired or not, instances at indices around the desired count, crash counts, a pending start. */
const foundation = fc.array(
  fc.record({
    n: fc.integer({ min: 0, max: 5 }),
    isDesired: fc.boolean(),
    staged: fc.boolean(),
    instances: fc.array(fc.tuple(fc.integer({ min: 0, max: 6 }), fc.constantFrom(...STATES)), { maxLength: 7 }),
    converged: fc.boolean(),
    crashAt: fc.option(fc.integer({ min: 0, max: 5 })),
    pendingAt: fc.option(fc.integer({ min: 0, max: 5 })),
  }),
  { maxLength: 6 },
);

describe('converged apps', () => {
  it('are recognised from the snapshot: exactly one RUNNING instance at each desired index and nothing else', () => {
    const s = snapshot(NOW, {
      desired: [desired('ok', 3), desired('short', 3), desired('starting', 2), desired('twice', 2), desired('beyond', 1), desired('none', 0)],
      instances: [
        ...[0, 1, 2].map((i) => hb('ok', i, 'RUNNING')),
        ...[0, 1].map((i) => hb('short', i, 'RUNNING')),
        hb('starting', 0, 'RUNNING'),
        hb('starting', 1, 'STARTING'),
        hb('twice', 0, 'RUNNING'),
        hb('twice', 0, 'RUNNING'),
        hb('beyond', 1, 'RUNNING'),
        hb('undesired', 0, 'RUNNING'),
      ],
    });
    const converged = ['ok', 'short', 'starting', 'twice', 'beyond', 'none', 'undesired'].filter((a) => isConverged(s, appKey(a, 'v1')));
    expect(converged).toEqual(['ok', 'none']);
  });

  it('get no proposal from any shipped HM9000 rule, and a pass that skips them proposes what the full pass does', () => {
    expect(shipped.every((p) => p.stage.quietWhenConverged === true)).toBe(true);
    fc.assert(
      fc.property(foundation, (apps) => {
        const parts = {
          desired: [] as ReturnType<typeof desired>[],
          instances: [] as InstanceHeartbeat[],
          crashes: [] as ReturnType<typeof crash>[],
          starts: [] as ReturnType<typeof pendingStart>[],
        };
        apps.forEach((a, k) => {
          const guid = `app-${k}`;
          if (a.isDesired) parts.desired.push(desired(guid, a.n, { packageState: a.staged ? 'STAGED' : 'PENDING' }));
          if (a.converged) for (let i = 0; i < a.n; i++) parts.instances.push(hb(guid, i, 'RUNNING'));
          else for (const [index, state] of a.instances) parts.instances.push(hb(guid, index, state));
          if (a.crashAt !== null) parts.crashes.push(crash(guid, a.crashAt, 2));
          if (a.pendingAt !== null) parts.starts.push(pendingStart(guid, a.pendingAt));
        });
        const s = snapshot(NOW, parts);
        for (const key of s.desired.keys()) {
          if (!isConverged(s, key)) continue;
          const app = buildAppView(s, key)!;
          for (const p of shipped) expect(p.stage.evaluate({ app, now: NOW, priority: 0 })).toEqual([]);
        }
        // The fixtures' policies do not say quietWhenConverged: their pass builds every view.
        expect(proposals(analyze(s, NOW, shipped))).toEqual(proposals(analyze(s, NOW, hm9000Policies())));
      }),
      { numRuns: 500, seed: 7 },
    );
  });

  it('are analysed as any app when one policy does not say it is quiet for them', () => {
    const s = snapshot(NOW, { desired: [desired('a', 1)], instances: [hb('a', 0, 'RUNNING')] });
    const seen: string[] = [];
    const custom: NamedPolicy = { id: 'custom', stage: { evaluate: ({ app }) => (seen.push(app.key), []) } };
    expect(analyze(s, NOW, shipped).apps.size).toBe(0);
    const r = analyze(s, NOW, [...shipped, custom]);
    expect(seen).toEqual([appKey('a', 'v1')]);
    expect(r.apps.has(appKey('a', 'v1'))).toBe(true);
  });
});
