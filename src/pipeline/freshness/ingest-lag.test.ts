import { describe, expect, it } from 'vitest';
import { IngestLagMeter } from './ingest-lag.js';

const HB = 10_000;
const opts = { intervalMs: HB, maxLagMs: HB, windowMs: 3 * HB, silentAfterMs: 2 * HB };

/** 100 agents heartbeating every `gap` ms from 0 to `until`; their arrivals fed to the meter. */
function arrivals(m: IngestLagMeter, gap: number, until: number): void {
  const last = new Map<number, number>();
  const events: [number, number][] = [];
  for (let a = 0; a < 100; a++) for (let t = (a * gap) / 100; t < until; t += gap) events.push([t, a]);
  events.sort((x, y) => x[0] - y[0]);
  for (const [t, a] of events) {
    m.arrival(t, last.get(a));
    last.set(a, t);
  }
}

describe('IngestLagMeter', () => {
  it("heartbeats arriving at the agents' pace are not behind; slower by a third or more is", () => {
    const onPace = new IngestLagMeter(opts);
    arrivals(onPace, HB, 120_000);
    expect(onPace.evaluate(120_000)).toBeNull();

    const slow = new IngestLagMeter(opts);
    // 1 450 of 2 000 heartbeats a second: each agent heard every 13.8 s.
    arrivals(slow, 13_800, 120_000);
    const lag = slow.evaluate(120_000);
    expect(lag?.lagMs).toBe(11_400);
    expect(lag?.cause).toMatch(/every 13\.8s on average per agent, not every 10\.0s/);

    const bitSlow = new IngestLagMeter(opts);
    arrivals(bitSlow, 12_000, 120_000); // 6 s over a window: within max_ingest_lag
    expect(bitSlow.evaluate(120_000)).toBeNull();
  });

  it('gaps longer than silent_after are silences, not slow arrivals; old windows are forgotten', () => {
    const m = new IngestLagMeter(opts);
    arrivals(m, 25_000, 200_000);
    expect(m.evaluate(200_000)).toBeNull();
    const stale = new IngestLagMeter(opts);
    arrivals(stale, 13_800, 100_000);
    expect(stale.evaluate(100_000)).not.toBeNull();
    expect(stale.evaluate(200_000)).toBeNull(); // nothing heard for two windows: no rate to judge
  });

  it("a source's own lag counts when it passes the bound; the worst one is named", () => {
    const m = new IngestLagMeter(opts);
    let saveLag = 4_000;
    const off = m.register('sources.heartbeats', () => ({ lagMs: saveLag, cause: 'unsaved' }));
    expect(m.evaluate(0)).toBeNull();
    saveLag = 12_000;
    expect(m.evaluate(0)).toEqual({ lagMs: 12_000, cause: 'unsaved' });
    off();
    expect(m.evaluate(0)).toBeNull();

    // At a sub-second heartbeat an instant reading counts only past a second: a pause of the daemon
    // itself (a garbage collection) is not ingest falling behind. Slow arrivals still count at the bound.
    const fast = new IngestLagMeter({ intervalMs: 200, maxLagMs: 200, windowMs: 600, silentAfterMs: 400 });
    let instant = 700;
    fast.register('sources.heartbeats', () => ({ lagMs: instant, cause: 'unsaved' }));
    expect(fast.evaluate(0)).toBeNull();
    instant = 1_200;
    expect(fast.evaluate(0)?.lagMs).toBe(1_200);
    instant = 0;
    const beats: [number, number][] = [];
    for (let a = 0; a < 10; a++) for (let t = a * 30; t < 3_000; t += 300) beats.push([t, a]);
    beats.sort((x, y) => x[0] - y[0]);
    const last = new Map<number, number>();
    for (const [t, a] of beats) {
      fast.arrival(t, last.get(a));
      last.set(a, t);
    }
    expect(fast.evaluate(3_000)?.lagMs).toBe(300); // every 300 ms, not 200: 100 ms more per beat, 3 beats a window

    const switchedOff = new IngestLagMeter({ ...opts, maxLagMs: 0 });
    switchedOff.register('sources.heartbeats', () => ({ lagMs: 60_000, cause: 'unsaved' }));
    arrivals(switchedOff, 20_000, 120_000);
    expect(switchedOff.evaluate(120_000)).toBeNull();
  });
});
