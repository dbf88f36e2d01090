/**
 * The HM9000 analyzer (docs/hm9000.md#analyzer) with the five policies in preset order: every row of
 * the decision table (docs/hm9000.md#decision-table), the other cases after it, and the pitfalls
 * (docs/hm9000.md#pitfalls).
 */
import { describe, expect, it } from 'vitest';
import { analyze } from '../../src/pipeline/cycle/analyzer.js';
import { buildAppViews } from '../../src/sdk/app-view.js';
import { missingRule } from '../../plugins/missing/index.js';
import { crash, desired, GRACE, hb, HB, hm9000Policies, pendingStart, pendingStop, snapshot } from '../helpers/hm9000-fixtures.js';

const NOW = 1_000_000;
const run = (parts: Parameters<typeof snapshot>[1], o?: Parameters<typeof hm9000Policies>[0]) => analyze(snapshot(NOW, parts), NOW, hm9000Policies(o));
const starts = (r: ReturnType<typeof analyze>) =>
  r.starts.map((s) => ({ index: s.index, reason: s.reason, delay: s.sendOn - NOW, keepAlive: s.keepAlive, priority: s.priority, skip: s.skipVerification }));
const stops = (r: ReturnType<typeof analyze>) =>
  r.stops.map((s) => ({ instance: s.instance, reason: s.reason, delay: s.sendOn - NOW, keepAlive: s.keepAlive }));

describe('decision table, docs/hm9000.md#decision-table (desired index i < N, staged app, nothing pending)', () => {
  it('nothing at i → start MISSING after grace, keep_alive 0, priority p', () => {
    const r = run({ desired: [desired('a', 2)], instances: [hb('a', 0, 'RUNNING')] });
    expect(starts(r)).toEqual([{ index: 1, reason: 'MISSING', delay: GRACE, keepAlive: 0, priority: 0.5, skip: false }]);
    expect(r.stops).toEqual([]);
    expect(r.crashCounts).toEqual([]);
  });

  it('CRASHED at i with something running in the app → start CRASHED after back-off(c), keep_alive grace, c+1', () => {
    const r = run({ desired: [desired('a', 2)], instances: [hb('a', 0, 'RUNNING'), hb('a', 1, 'CRASHED')], crashes: [crash('a', 1, 4, { createdAt: 5 })] });
    expect(starts(r)).toEqual([{ index: 1, reason: 'CRASHED', delay: 6 * HB, keepAlive: GRACE, priority: 0.5, skip: false }]);
    expect(r.crashCounts).toEqual([{ count: crash('a', 1, 5, { createdAt: 5 }), ttlMs: 2 * 96 * HB }]);
  });

  it('CRASHED at i = 0 with nothing running → start CRASHED; a new count starts at 0 (created now)', () => {
    const r = run({ desired: [desired('a', 2)], instances: [hb('a', 0, 'CRASHED'), hb('a', 1, 'CRASHED')] });
    expect(starts(r)).toEqual([{ index: 0, reason: 'CRASHED', delay: 0, keepAlive: GRACE, priority: 1, skip: false }]);
    expect(r.crashCounts).toEqual([{ count: crash('a', 0, 1, { createdAt: NOW }), ttlMs: 2 * 96 * HB }]);
  });

  it('CRASHED at i != 0 with nothing STARTING/RUNNING in the app → nothing', () => {
    const r = run({ desired: [desired('a', 3)], instances: [hb('a', 0, 'CRASHED'), hb('a', 2, 'CRASHED')] });
    expect(starts(r).map((s) => s.index)).toEqual([1, 0]); // 1 is MISSING; 2 is skipped; 0 restarts
    expect(starts(r).find((s) => s.index === 0)!.reason).toBe('CRASHED');
  });

  it('an undesired index running counts as "something running" for crash restarts', () => {
    const r = run({ desired: [desired('a', 2)], instances: [hb('a', 1, 'CRASHED'), hb('a', 0, 'CRASHED'), hb('a', 5, 'RUNNING')] });
    expect(starts(r).map((s) => [s.index, s.reason])).toEqual([
      [0, 'CRASHED'],
      [1, 'CRASHED'],
    ]);
    expect(r.stops).toEqual([]); // new starts this pass: no extra stop
  });

  it('EVACUATING at i, crash count 0 → start EVACUATING at once, priority 2.0 (the MISSING start is replaced)', () => {
    const e = hb('a', 0, 'EVACUATING');
    const r = run({ desired: [desired('a', 1)], instances: [e] });
    expect(starts(r)).toEqual([{ index: 0, reason: 'EVACUATING', delay: 0, keepAlive: GRACE, priority: 2, skip: false }]);
    expect(r.stops).toEqual([]);
  });

  it('EVACUATING at i, crash count > 0 → stop each EVACUATING (EVACUATION_COMPLETE) and start EVACUATING', () => {
    const e = hb('a', 0, 'EVACUATING');
    const r = run({ desired: [desired('a', 1)], instances: [e], crashes: [crash('a', 0, 2)] });
    expect(starts(r)).toEqual([{ index: 0, reason: 'EVACUATING', delay: 0, keepAlive: GRACE, priority: 2, skip: false }]);
    expect(stops(r)).toEqual([{ instance: e.instance, reason: 'EVACUATION_COMPLETE', delay: 0, keepAlive: GRACE }]);
  });

  it('EVACUATING and CRASHED at i, nothing running: the crash count still increments, the stored start is the evacuation one', () => {
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'EVACUATING'), hb('a', 0, 'CRASHED')] });
    expect(starts(r).map((s) => s.reason)).toEqual(['EVACUATING']);
    expect(r.crashCounts.map((c) => c.count.count)).toEqual([1]);
  });

  it('≥1 RUNNING and EVACUATING at i → stop each EVACUATING (EVACUATION_COMPLETE) at once', () => {
    const e1 = hb('a', 0, 'EVACUATING');
    const e2 = hb('a', 0, 'EVACUATING');
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'RUNNING'), e1, e2] });
    expect(r.starts).toEqual([]);
    expect(stops(r)).toEqual([
      { instance: e1.instance, reason: 'EVACUATION_COMPLETE', delay: 0, keepAlive: GRACE },
      { instance: e2.instance, reason: 'EVACUATION_COMPLETE', delay: 0, keepAlive: GRACE },
    ]);
  });

  it('only STARTING and EVACUATING at i → nothing (wait)', () => {
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'STARTING'), hb('a', 0, 'EVACUATING')] });
    expect(r.starts).toEqual([]);
    expect(r.stops).toEqual([]);
  });

  it('exactly one STARTING/RUNNING at i → nothing, whatever crashed there', () => {
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'RUNNING'), hb('a', 0, 'CRASHED')] });
    expect(r.starts).toEqual([]);
    expect(r.stops).toEqual([]);
  });

  it('≥2 STARTING/RUNNING at i → stop every one of them (DUPLICATE) at (4+k) × grace', () => {
    const d = [hb('a', 0, 'RUNNING'), hb('a', 0, 'STARTING'), hb('a', 0, 'RUNNING')];
    const r = run({ desired: [desired('a', 1)], instances: [...d, hb('a', 0, 'CRASHED')] });
    expect(r.starts).toEqual([]);
    expect(stops(r)).toEqual(d.map((i, k) => ({ instance: i.instance, reason: 'DUPLICATE', delay: (4 + k) * GRACE, keepAlive: GRACE })));
  });

  it('duplicates are not stopped while the app gets a new start this pass', () => {
    const r = run({ desired: [desired('a', 2)], instances: [hb('a', 0, 'RUNNING'), hb('a', 0, 'RUNNING')] });
    expect(starts(r).map((s) => s.reason)).toEqual(['MISSING']);
    expect(r.stops).toEqual([]);
  });
});

describe('decision table, other cases', () => {
  it('a PENDING app: no missing or crash starts; extra and duplicate stops still apply', () => {
    const extra = hb('a', 3, 'RUNNING');
    const r = run({ desired: [desired('a', 2, { packageState: 'PENDING' })], instances: [hb('a', 0, 'CRASHED'), extra] });
    expect(r.starts).toEqual([]);
    expect(stops(r)).toEqual([{ instance: extra.instance, reason: 'EXTRA', delay: 0, keepAlive: GRACE }]);
  });

  it('a PENDING app with an evacuating instance alone at a desired index: both a stop and a start (B falls through)', () => {
    const e = hb('a', 0, 'EVACUATING');
    const r = run({ desired: [desired('a', 1, { packageState: 'PENDING' })], instances: [e] });
    expect(stops(r)).toEqual([{ instance: e.instance, reason: 'EVACUATION_COMPLETE', delay: 0, keepAlive: GRACE }]);
    expect(starts(r)).toEqual([{ index: 0, reason: 'EVACUATING', delay: 0, keepAlive: GRACE, priority: 2, skip: false }]);
  });

  it('an index beyond N: STARTING/RUNNING get EXTRA stops, EVACUATING get EXTRA stops, CRASHED are ignored', () => {
    const run2 = hb('a', 2, 'RUNNING');
    const start2 = hb('a', 3, 'STARTING');
    const evac = hb('a', 4, 'EVACUATING');
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'RUNNING'), run2, start2, evac, hb('a', 5, 'CRASHED')] });
    expect(r.starts).toEqual([]);
    expect(stops(r)).toEqual([
      { instance: evac.instance, reason: 'EXTRA', delay: 0, keepAlive: GRACE },
      { instance: run2.instance, reason: 'EXTRA', delay: 0, keepAlive: GRACE },
      { instance: start2.instance, reason: 'EXTRA', delay: 0, keepAlive: GRACE },
    ]);
  });

  it('an undesired app (stopped, failed, old version): every running instance is an immediate EXTRA stop', () => {
    const old = hb('a', 0, 'RUNNING', { version: 'v0' });
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'RUNNING'), old] });
    expect(r.starts).toEqual([]);
    expect(stops(r)).toEqual([{ instance: old.instance, reason: 'EXTRA', delay: 0, keepAlive: GRACE }]);
  });

  it('priority is the share of desired indices not running: 1.0, 0.5, 2/3, 1/3', () => {
    const p = (n: number, running: number[]) => run({ desired: [desired('a', n)], instances: running.map((i) => hb('a', i, 'RUNNING')) }).starts[0]!.priority;
    expect(p(2, [])).toBe(1);
    expect(p(2, [0])).toBe(0.5);
    expect(p(3, [2])).toBeCloseTo(2 / 3);
    expect(p(3, [0, 1])).toBeCloseTo(1 / 3);
  });

  it('several apps are analysed independently', () => {
    const dup = [hb('a', 0, 'RUNNING'), hb('a', 0, 'RUNNING')];
    const oldVersion = hb('a', 0, 'RUNNING', { version: 'v0' });
    const r = run({
      desired: [desired('a', 1), desired('b', 2), desired('c', 1)],
      instances: [...dup, oldVersion, hb('b', 1, 'RUNNING')],
    });
    expect(r.starts.map((s) => `${s.app}/${s.index}/${s.reason}`).sort()).toEqual(['b/0/MISSING', 'c/0/MISSING'].sort());
    expect(r.stops.map((s) => s.reason).sort()).toEqual(['DUPLICATE', 'DUPLICATE', 'EXTRA']);
  });
});

describe('message ids', () => {
  it('are given to enqueued messages only, shaped as HM9000 made them (version 4, variant digit 4–7)', () => {
    const r = run({ desired: [desired('a', 3)], instances: [hb('a', 0, 'RUNNING'), hb('a', 5, 'RUNNING')] });
    const ids = [...r.starts, ...r.stops].map((m) => m.messageId);
    expect(ids).toHaveLength(2);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[4-7][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(new Set(ids).size).toBe(2);
  });
});

describe('pitfalls (docs/hm9000.md#pitfalls)', () => {
  it('6: a pending message is never overwritten by the analyzer, and the stop gate ignores pending starts', () => {
    const extra = hb('a', 1, 'RUNNING');
    const pending = pendingStart('a', 0, { sendOn: 5, reason: 'MISSING' });
    const r = run({ desired: [desired('a', 1)], instances: [extra], starts: [pending] });
    expect(r.starts).toEqual([]); // the pending start for index 0 stays as it is
    expect(stops(r)).toEqual([{ instance: extra.instance, reason: 'EXTRA', delay: 0, keepAlive: GRACE }]);
  });

  it('10: the crash count increments only when the start is actually enqueued', () => {
    const r = run({
      desired: [desired('a', 1)],
      instances: [hb('a', 0, 'CRASHED')],
      crashes: [crash('a', 0, 2)],
      starts: [pendingStart('a', 0, { reason: 'CRASHED', sentOn: NOW - 1 })],
    });
    expect(r.starts).toEqual([]);
    expect(r.crashCounts).toEqual([]);
  });

  it('8: evacuation starts count toward the stop gate', () => {
    const extra = hb('a', 3, 'RUNNING');
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'EVACUATING'), extra] });
    expect(starts(r).map((s) => s.reason)).toEqual(['EVACUATING']);
    expect(r.stops).toEqual([]);
  });

  it('an existing stop for an instance guid is not replaced', () => {
    const extra = hb('a', 2, 'RUNNING');
    const r = run({ desired: [desired('a', 1)], instances: [hb('a', 0, 'RUNNING'), extra], stops: [pendingStop(extra)] });
    expect(r.stops).toEqual([]);
  });

  it('H option: an EVACUATING-only index is not missing for the missing rule', () => {
    const snap = snapshot(NOW, { desired: [desired('a', 1)], instances: [hb('a', 0, 'EVACUATING')] });
    const app = buildAppViews(snap).get('a,v1')!;
    expect(missingRule({ app, now: NOW, priority: 1 }, { grace_period: GRACE, evacuating_counts_as_present: true })).toEqual([]);
    expect(missingRule({ app, now: NOW, priority: 1 }, { grace_period: GRACE, evacuating_counts_as_present: false }).map((p) => p.kind)).toEqual(['start']);
  });
});
