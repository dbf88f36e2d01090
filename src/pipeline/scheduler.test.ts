import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../sdk/clock.js';
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
});
