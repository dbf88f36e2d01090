import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { RealClock, SteppedClock, VirtualClock } from '../sdk/clock.js';
import { EngineMetrics } from './engine-metrics.js';
import type { FreshnessBoard } from './freshness/board.js';
import { CycleScheduler } from './scheduler.js';

function recordingLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  return { logger, lines };
}

describe('CycleScheduler', () => {
  it('runs at once, then every interval measured from the start of each run', async () => {
    const clock = new VirtualClock(1_000_000);
    const starts: number[] = [];
    const { logger } = recordingLogger();
    const s = new CycleScheduler(
      clock,
      10_000,
      async () => {
        starts.push(clock.now());
        await clock.sleep(3_000); // a run that takes 3 s of clock time
      },
      logger,
      undefined,
      () => clock.now(), // durations on the virtual clock too
    );
    s.start();
    await clock.advanceAsync(35_000);
    expect(starts).toEqual([1_000_000, 1_010_000, 1_020_000, 1_030_000]);
    expect(s.stats.runs).toBe(4);
    expect(s.stats.lastDurationMs).toBe(3_000);
    await clock.advanceAsync(3_000);
    await s.stop();
  });

  it('never overlaps: an overrunning run is followed at once by the next, with a warning', async () => {
    const clock = new VirtualClock(0);
    const starts: number[] = [];
    let active = 0;
    let maxActive = 0;
    const { logger, lines } = recordingLogger();
    const s = new CycleScheduler(
      clock,
      1_000,
      async () => {
        starts.push(clock.now());
        active++;
        maxActive = Math.max(maxActive, active);
        await clock.sleep(starts.length === 1 ? 2_500 : 100);
        active--;
      },
      logger,
      undefined,
      () => clock.now(), // durations on the virtual clock too
    );
    s.start();
    await clock.advanceAsync(4_000);
    expect(maxActive).toBe(1);
    expect(starts).toEqual([0, 2_500, 3_500]);
    expect(s.stats.overruns).toBe(1);
    const warn = lines.find((l) => l.level === 40);
    expect(warn?.msg).toBe('cycle took 2500ms, longer than its 1000ms interval');
    await clock.advanceAsync(200);
    await s.stop();
  });

  it('keeps going after a failing run and counts it', async () => {
    const clock = new VirtualClock(0);
    let n = 0;
    const outcomes: boolean[] = [];
    const { logger, lines } = recordingLogger();
    const s = new CycleScheduler(
      clock,
      1_000,
      async () => {
        n++;
        if (n === 2) throw new Error('store unreachable');
      },
      logger,
      (_ms, ok) => outcomes.push(ok),
    );
    s.start();
    await clock.advanceAsync(3_000);
    expect(outcomes).toEqual([true, false, true, true]);
    expect(s.stats.failures).toBe(1);
    expect(lines.some((l) => l.msg === 'cycle failed; continuing' && l.error === 'store unreachable')).toBe(true);
    await s.stop();
  });

  it('stop() cancels the next run and waits for the one in progress', async () => {
    const clock = new VirtualClock(0);
    let finished = 0;
    let runs = 0;
    const { logger } = recordingLogger();
    const s = new CycleScheduler(
      clock,
      1_000,
      async () => {
        runs++;
        await clock.sleep(500);
        finished++;
      },
      logger,
    );
    s.start();
    await clock.advanceAsync(0);
    const stopped = s.stop();
    await clock.advanceAsync(500);
    await stopped;
    expect(finished).toBe(1);
    await clock.advanceAsync(5_000);
    expect(runs).toBe(1);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('measures durations on the monotonic clock, not the stepped one: hmgate_cycle_duration_seconds under time_resolution: 1s', async () => {
    // The engine's clock under the hm9000 preset: whole seconds. A 37 ms cycle starts and ends in the same second.
    const base = new VirtualClock(1_000_000);
    const clock = new SteppedClock(base, 1_000);
    let monotonic = 5_000.25; // a fake performance.now(), moved by the cycle
    const registry = new Registry();
    const metrics = new EngineMetrics(registry, 'f-1', { ingestLagMs: () => 0 } as unknown as FreshnessBoard);
    const { logger } = recordingLogger();
    const starts: number[] = [];
    const s = new CycleScheduler(
      clock,
      10_000,
      async () => {
        starts.push(clock.now());
        await base.sleep(37);
        monotonic += 37;
      },
      logger,
      (ms, ok) => metrics.observeCycle(ms, ok),
      () => monotonic,
    );
    s.start();
    await base.advanceAsync(25_000);
    expect(starts).toEqual([1_000_000, 1_010_000, 1_020_000]); // the periods still run on the injected clock
    expect(s.stats.lastDurationMs).toBe(37);
    const values = (await metrics.cycleDuration.get()).values;
    expect(values.find((v) => v.metricName === 'hmgate_cycle_duration_seconds_count')?.value).toBe(3);
    expect(values.find((v) => v.metricName === 'hmgate_cycle_duration_seconds_sum')?.value).toBeCloseTo(0.111, 6);
    expect(values.find((v) => v.metricName === 'hmgate_cycle_duration_seconds_bucket' && v.labels.le === 0.01)?.value).toBe(0);
    expect(values.find((v) => v.metricName === 'hmgate_cycle_duration_seconds_bucket' && v.labels.le === 0.05)?.value).toBe(3);
    await s.stop();
  });

  it('by default measures real elapsed time, also when the clock is stepped', async () => {
    const clock = new SteppedClock(new RealClock(), 1_000);
    const durations: number[] = [];
    const { logger } = recordingLogger();
    const s = new CycleScheduler(
      clock,
      60_000,
      () => new Promise((r) => setTimeout(r, 40)),
      logger,
      (ms) => durations.push(ms),
    );
    s.start();
    await new Promise((r) => setTimeout(r, 400));
    await s.stop();
    expect(durations).toHaveLength(1);
    // Not a whole step of the clock (0 or 1000), the time the run took.
    expect(durations[0]).toBeGreaterThanOrEqual(35);
    expect(durations[0]).toBeLessThan(900);
  });
});
