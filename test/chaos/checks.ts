/**
 * The assertions every fault shares, with failure messages that print the offending orders and
 * what the test did when.
 */
import { expect } from 'vitest';
import { waitFor } from '../helpers/index.js';
import type { Cluster } from './harness.js';
import type { Verdict } from './recorder.js';

/** Waits for `cond`; on timeout fails with the story so far. */
export async function until(c: Cluster, cond: () => boolean | Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  try {
    await waitFor(cond, { what, timeoutMs, intervalMs: 50 });
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${c.story()}`, { cause: err });
  }
}

/** Every instance made to vanish so far has had at least one start. */
export const allStarted = (c: Cluster) => () => c.recorder.startsFor().every((v) => v.starts >= 1);

/**
 * 0 wrong stops, 0 wrong starts, 0 starts while stale, 0 duplicate sends, and exactly one start per
 * instance made to vanish — which also proves the recorder heard and judged the expected starts.
 */
export function expectClean(c: Cluster): void {
  const r = c.recorder;
  const none = (verdict: Verdict, name: string) => expect(r.with(verdict).length, `${name}:\n${r.format(r.with(verdict), c.t0)}\n\n${c.story()}`).toBe(0);
  none('wrong_stop', 'wrong stops');
  none('wrong_start', 'wrong starts');
  none('stale_start', 'starts while stale');
  none('duplicate', 'duplicate sends');
  const per = r.startsFor();
  expect(per.length, 'the test made no instance vanish').toBeGreaterThan(0);
  const off = per.filter((v) => v.starts !== 1);
  expect(
    off,
    `instances made to vanish that did not get exactly one start:\n${off.map((v) => `  instance ${v.instance}: ${v.starts} starts`).join('\n')}\n\n${c.story()}`,
  ).toEqual([]);
  expect(r.with('start').length, `correct starts judged\n${c.story()}`).toBeGreaterThanOrEqual(per.length);
}

/** A healthy leader was back, within the generous bound. */
export function expectTakeover(c: Cluster, takeoverMs: number | undefined, boundMs: number): void {
  expect(takeoverMs, `no fresh leader was seen after the fault\n${c.story()}`).toBeDefined();
  expect(takeoverMs!, `takeover took ${takeoverMs} ms, over the bound of ${boundMs} ms\n${c.story()}`).toBeLessThanOrEqual(boundMs);
}
