import { describe, expect, it } from 'vitest';
import { computeCrashDelay } from './crash-delay.js';

describe('computeCrashDelay (docs/hm9000.md#crash-back-off)', () => {
  it('defaults n=3, start=30, max=960: 0 0 0 30 60 120 240 480 960 960', () => {
    const delays = Array.from({ length: 12 }, (_, c) => computeCrashDelay(c, 3, 30, 960));
    expect(delays).toEqual([0, 0, 0, 30, 60, 120, 240, 480, 960, 960, 960, 960]);
  });

  it('a max that is not a power-of-two multiple (950) is reached at c=8', () => {
    expect(computeCrashDelay(7, 3, 30, 950)).toBe(480);
    expect(computeCrashDelay(8, 3, 30, 950)).toBe(950);
  });

  it('the MCAT config (max 60 s): 0 0 0 30 60 60', () => {
    expect([0, 1, 2, 3, 4, 5].map((c) => computeCrashDelay(c, 3, 30, 60))).toEqual([0, 0, 0, 30, 60, 60]);
  });

  it('works in milliseconds the same way', () => {
    expect(computeCrashDelay(5, 3, 30_000, 960_000)).toBe(120_000);
  });
});
