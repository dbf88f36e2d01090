import { afterEach, describe, expect, it, vi } from 'vitest';
import { RealClock, VirtualClock, type Timer } from './clock.js';

describe('VirtualClock', () => {
  it('starts at the given time and does not move by itself', () => {
    expect(new VirtualClock().now()).toBe(0);
    const clock = new VirtualClock(5_000);
    expect(clock.now()).toBe(5_000);
    clock.setTimeout(() => {}, 10);
    expect(clock.now()).toBe(5_000);
  });

  it('gives each timer its due time', () => {
    const clock = new VirtualClock(1_000);
    expect(clock.setTimeout(() => {}, 250).due).toBe(1_250);
    expect(clock.setTimeout(() => {}, -5).due).toBe(1_000);
    expect(clock.setTimeout(() => {}, Number.NaN).due).toBe(1_000);
  });

  it('fires timers in due order, ties in insertion order, with now() at each due time', () => {
    const clock = new VirtualClock(100);
    const fired: [string, number][] = [];
    const record = (name: string) => () => fired.push([name, clock.now()]);
    clock.setTimeout(record('c30'), 30);
    clock.setTimeout(record('a10'), 10);
    clock.setTimeout(record('b10'), 10);
    clock.setTimeout(record('d0'), 0);
    clock.setTimeout(record('e10'), 10);
    clock.setTimeout(record('late'), 51);
    clock.advance(50);
    expect(fired).toEqual([
      ['d0', 100],
      ['a10', 110],
      ['b10', 110],
      ['e10', 110],
      ['c30', 130],
    ]);
    expect(clock.now()).toBe(150);
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(1);
    expect(fired.at(-1)).toEqual(['late', 151]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('keeps insertion order for ties among many timers', () => {
    const clock = new VirtualClock();
    const fired: number[] = [];
    // Enough timers that heap reshuffling would expose an unstable order.
    for (let i = 0; i < 200; i++) clock.setTimeout(() => fired.push(i), (i * 7) % 5);
    clock.advance(10);
    const expected = [...Array(200).keys()].sort((a, b) => ((a * 7) % 5) - ((b * 7) % 5) || a - b);
    expect(fired).toEqual(expected);
  });

  it('fires a timer exactly at its due time, not before', () => {
    const clock = new VirtualClock();
    let fired = 0;
    clock.setTimeout(() => fired++, 100);
    clock.advance(99);
    expect(fired).toBe(0);
    clock.advance(1);
    expect(fired).toBe(1);
  });

  it('fires timers set by callbacks when they fall due within the window', () => {
    const clock = new VirtualClock();
    const fired: [string, number][] = [];
    clock.setTimeout(() => {
      fired.push(['outer', clock.now()]);
      clock.setTimeout(() => {
        fired.push(['inner', clock.now()]);
        clock.setTimeout(() => fired.push(['innermost', clock.now()]), 0);
      }, 20);
      clock.setTimeout(() => fired.push(['beyond', clock.now()]), 100);
    }, 10);
    clock.setTimeout(() => fired.push(['other', clock.now()]), 25);
    clock.advance(50);
    expect(fired).toEqual([
      ['outer', 10],
      ['other', 25],
      ['inner', 30],
      ['innermost', 30],
    ]);
    expect(clock.now()).toBe(50);
    expect(clock.pendingTimers()).toBe(1);
    expect(clock.nextDue()).toBe(110);
  });

  it('runs a self-rescheduling interval the right number of times', () => {
    const clock = new VirtualClock();
    const ticks: number[] = [];
    const tick = () => {
      ticks.push(clock.now());
      clock.setTimeout(tick, 1_000);
    };
    clock.setTimeout(tick, 1_000);
    clock.advance(5_500);
    expect(ticks).toEqual([1_000, 2_000, 3_000, 4_000, 5_000]);
  });

  it('clearTimeout cancels a timer, also from a callback, and ignores foreign or spent timers', () => {
    const clock = new VirtualClock();
    const fired: string[] = [];
    const a = clock.setTimeout(() => fired.push('a'), 10);
    let c: Timer | undefined = undefined;
    clock.setTimeout(() => {
      fired.push('b');
      clock.clearTimeout(c);
    }, 20);
    c = clock.setTimeout(() => fired.push('c'), 30);
    const d = clock.setTimeout(() => fired.push('d'), 40);
    clock.clearTimeout(a);
    clock.clearTimeout(a);
    clock.clearTimeout(undefined);
    clock.clearTimeout({ due: 40 });
    expect(clock.pendingTimers()).toBe(3);
    clock.advance(100);
    expect(fired).toEqual(['b', 'd']);
    expect(clock.pendingTimers()).toBe(0);
    clock.clearTimeout(d);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('clearTimeout of one timer leaves the order of the others intact', () => {
    const clock = new VirtualClock();
    const fired: number[] = [];
    const timers = [50, 10, 40, 20, 30, 60, 5].map((ms) => clock.setTimeout(() => fired.push(ms), ms));
    clock.clearTimeout(timers[3]);
    clock.clearTimeout(timers[0]);
    clock.advance(100);
    expect(fired).toEqual([5, 10, 30, 40, 60]);
  });

  it('advanceTo moves to an absolute time and refuses to go back', () => {
    const clock = new VirtualClock(1_000);
    clock.advanceTo(1_500);
    expect(clock.now()).toBe(1_500);
    clock.advanceTo(1_500);
    expect(clock.now()).toBe(1_500);
    expect(() => clock.advanceTo(1_499)).toThrow(RangeError);
    expect(() => clock.advance(-1)).toThrow(RangeError);
    expect(() => clock.advance(Number.POSITIVE_INFINITY)).toThrow(RangeError);
    expect(clock.now()).toBe(1_500);
  });

  it('refuses an advance from inside a timer callback', () => {
    const clock = new VirtualClock();
    let error: unknown;
    clock.setTimeout(() => {
      try {
        clock.advance(5);
      } catch (err) {
        error = err;
      }
    }, 10);
    clock.advance(20);
    expect(error).toBeInstanceOf(Error);
    expect(clock.now()).toBe(20);
  });

  it('stops at a throwing callback, leaving later timers pending', () => {
    const clock = new VirtualClock();
    const fired: number[] = [];
    clock.setTimeout(() => {
      throw new Error('boom');
    }, 10);
    clock.setTimeout(() => fired.push(clock.now()), 20);
    expect(() => clock.advance(30)).toThrow('boom');
    expect(clock.now()).toBe(10);
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(20);
    expect(fired).toEqual([20]);
  });

  it('sleep resolves when virtual time reaches it', async () => {
    const clock = new VirtualClock(1_000);
    let woke: number | undefined;
    const done = clock.sleep(500).then(() => {
      woke = clock.now();
    });
    clock.advance(499);
    await Promise.resolve();
    expect(woke).toBeUndefined();
    clock.advance(1);
    await done;
    expect(woke).toBe(1_500);
  });

  it('a synchronous advance does not run sleep continuations between timers', async () => {
    const clock = new VirtualClock();
    const woke: number[] = [];
    void (async () => {
      await clock.sleep(10);
      woke.push(clock.now());
      await clock.sleep(10);
      woke.push(clock.now());
    })();
    clock.advance(100);
    await new Promise((r) => setImmediate(r));
    // The continuation ran after the advance, so its second sleep started at 100.
    expect(woke).toEqual([100]);
    expect(clock.nextDue()).toBe(110);
  });

  it('advanceAsync lets sleep() chains progress between timers', async () => {
    const clock = new VirtualClock();
    const woke: number[] = [];
    const loop = (async () => {
      for (let i = 0; i < 5; i++) {
        await clock.sleep(10);
        woke.push(clock.now());
      }
    })();
    await clock.advanceAsync(45);
    expect(woke).toEqual([10, 20, 30, 40]);
    expect(clock.now()).toBe(45);
    await clock.advanceAsync(5);
    await loop;
    expect(woke).toEqual([10, 20, 30, 40, 50]);
  });

  it('advanceAsync lets async handlers with several awaits schedule before later timers fire', async () => {
    const clock = new VirtualClock();
    const events: [string, number][] = [];
    const fetchSomething = async () => {
      await Promise.resolve();
      await new Promise((r) => setImmediate(r));
      return 'data';
    };
    clock.setTimeout(() => {
      void (async () => {
        const data = await fetchSomething();
        events.push([data, clock.now()]);
        clock.setTimeout(() => events.push(['follow-up', clock.now()]), 5);
      })();
    }, 10);
    clock.setTimeout(() => events.push(['fixed', clock.now()]), 12);
    await clock.advanceAsync(20);
    expect(events).toEqual([
      ['data', 10],
      ['fixed', 12],
      ['follow-up', 15],
    ]);
    expect(clock.now()).toBe(20);
  });

  it('advanceAsync runs pending continuations before the first timer', async () => {
    const clock = new VirtualClock();
    const woke: number[] = [];
    void (async () => {
      await Promise.resolve();
      await clock.sleep(5);
      woke.push(clock.now());
    })();
    // The sleep is not set yet: it starts only after the first await resolves.
    expect(clock.pendingTimers()).toBe(0);
    await clock.advanceAsync(10);
    expect(woke).toEqual([5]);
  });

  it('advanceToAsync moves to an absolute time and refuses to go back', async () => {
    const clock = new VirtualClock(100);
    await clock.advanceToAsync(250);
    expect(clock.now()).toBe(250);
    await expect(clock.advanceToAsync(200)).rejects.toThrow(RangeError);
    await expect(clock.advanceAsync(-1)).rejects.toThrow(RangeError);
  });

  it('refuses a second advance while an async advance is running', async () => {
    const clock = new VirtualClock();
    const first = clock.advanceAsync(10);
    expect(() => clock.advance(1)).toThrow(Error);
    await expect(clock.advanceAsync(1)).rejects.toThrow(Error);
    await first;
    expect(clock.now()).toBe(10);
  });
});

describe('RealClock', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('reads the wall clock', () => {
    const before = Date.now();
    const now = new RealClock().now();
    expect(now).toBeGreaterThanOrEqual(before);
    expect(now).toBeLessThanOrEqual(Date.now());
  });

  it('fires timers at their due time, and sleep resolves, as wall time passes', async () => {
    vi.useFakeTimers({ now: 1_000_000 });
    const clock = new RealClock();
    const fired: number[] = [];
    const timer = clock.setTimeout(() => fired.push(Date.now()), 1_500);
    expect(timer.due).toBe(1_001_500);
    let slept = false;
    void clock.sleep(2_000).then(() => {
      slept = true;
    });
    vi.advanceTimersByTime(1_499);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual([1_001_500]);
    await vi.advanceTimersByTimeAsync(500);
    expect(slept).toBe(true);
  });

  it('clearTimeout cancels, and tolerates undefined or foreign timers', () => {
    vi.useFakeTimers({ now: 0 });
    const clock = new RealClock();
    let fired = false;
    const timer = clock.setTimeout(() => {
      fired = true;
    }, 100);
    clock.clearTimeout(timer);
    clock.clearTimeout(undefined);
    clock.clearTimeout({ due: 5 });
    vi.advanceTimersByTime(1_000);
    expect(fired).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps delays beyond Node\u2019s 2^31-1 ms limit instead of firing at once', () => {
    vi.useFakeTimers({ now: 0 });
    const clock = new RealClock();
    const day = 24 * 3600 * 1000;
    let firedAt: number | undefined;
    const timer = clock.setTimeout(() => {
      firedAt = Date.now();
    }, 40 * day);
    expect(timer.due).toBe(40 * day);
    vi.advanceTimersByTime(30 * day);
    expect(firedAt).toBeUndefined();
    vi.advanceTimersByTime(10 * day - 1);
    expect(firedAt).toBeUndefined();
    vi.advanceTimersByTime(1);
    expect(firedAt).toBe(40 * day);
  });

  it('a long timer can be cancelled after it was re-armed', () => {
    vi.useFakeTimers({ now: 0 });
    const clock = new RealClock();
    let fired = false;
    const timer = clock.setTimeout(() => {
      fired = true;
    }, 2 ** 32);
    vi.advanceTimersByTime(2 ** 31);
    clock.clearTimeout(timer);
    vi.advanceTimersByTime(2 ** 32);
    expect(fired).toBe(false);
  });

  it('keeps its timers ref\u2019d so they hold the process open', () => {
    const clock = new RealClock();
    const count = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = count();
    const timer = clock.setTimeout(() => {}, 60_000);
    expect(count()).toBe(before + 1);
    clock.clearTimeout(timer);
    expect(count()).toBe(before);
  });
});

describe('SteppedClock', () => {
  it('tells time in steps and keeps periodic timers on the step grid', async () => {
    const { SteppedClock, VirtualClock } = await import('./clock.js');
    const inner = new VirtualClock(10_003);
    const clock = new SteppedClock(inner, 1000);
    expect(clock.now()).toBe(10_000);
    const fired: number[] = [];
    // a timer of a whole step fires on the grid, not 1000 ms after the odd real time
    clock.setTimeout(() => fired.push(inner.now()), 1000);
    // a timer shorter than a step runs as asked
    clock.setTimeout(() => fired.push(inner.now()), 5);
    inner.advance(2000);
    expect(fired).toEqual([10_008, 11_000]);
    expect(clock.now()).toBe(12_000);
  });
});
