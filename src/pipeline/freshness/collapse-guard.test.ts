import { describe, expect, it } from 'vitest';
import { CollapseGuard } from './collapse-guard.js';

const HB = 10_000;
const opts = { share: 0.55, minAgents: 10, silentAfterMs: 2 * HB, windowMs: 3 * HB };

/** `n` agents heard every heartbeat from `from` to `to` (exclusive), `agent-0` … */
function beat(g: CollapseGuard, agents: string[], from: number, to: number): void {
  for (let t = from; t < to; t += HB) for (const a of agents) g.heard(a, t);
}
const names = (n: number, prefix = 'agent') => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);

describe('CollapseGuard', () => {
  it('trips when more than the share of agents fall silent within the window, and holds until every one returns', () => {
    const g = new CollapseGuard(opts);
    const all = names(20);
    const lost = all.slice(0, 12); // 60 %
    const kept = all.slice(12);
    beat(g, all, 0, 100_000);
    expect(g.evaluate(100_000)).toBeNull();
    beat(g, kept, 100_000, 130_000);
    // 90 s was their last heartbeat: silent after 110 s.
    expect(g.evaluate(105_000)).toBeNull();
    expect(g.evaluate(120_000)).toEqual({ silent: 12, total: 20, since: 120_000, windowMs: 30_000 });
    // Long after the window it still holds: nothing has come back.
    beat(g, kept, 130_000, 400_000);
    expect(g.evaluate(400_000)?.silent).toBe(12);
    // 11 of 12 return: still one silent, still held.
    for (const a of lost.slice(1)) g.heard(a, 400_000);
    expect(g.evaluate(400_000)?.silent).toBe(1);
    g.heard(lost[0]!, 401_000);
    expect(g.evaluate(401_000)).toBeNull();
  });

  it('does not trip for a share at or below the threshold, for agents lost one by one, or at or below min_agents', () => {
    const half = new CollapseGuard(opts);
    const all = names(20);
    beat(half, all, 0, 100_000);
    beat(half, all.slice(11), 100_000, 200_000); // 11 of 20 = 55 %: not more than the share
    for (let t = 100_000; t <= 200_000; t += 5_000) expect(half.evaluate(t)).toBeNull();

    const rolling = new CollapseGuard(opts);
    // One agent falls silent every 4 hb: never more than one within a window.
    let alive = [...all];
    for (let t = 0; t < 800_000; t += HB) {
      if (t > 100_000 && t % (4 * HB) === 0 && alive.length > 2) alive = alive.slice(1);
      for (const a of alive) rolling.heard(a, t);
      expect(rolling.evaluate(t)).toBeNull();
    }
    expect(alive.length).toBeLessThanOrEqual(3); // 17 of 20 lost, one by one

    const small = new CollapseGuard(opts);
    const ten = names(10);
    beat(small, ten, 0, 100_000);
    beat(small, ten.slice(9), 100_000, 200_000); // 9 of 10 lost, but only 10 agents
    expect(small.evaluate(200_000)).toBeNull();
  });

  it('the operator confirms the loss: the silent agents are forgotten and the guard releases; later silences count anew', () => {
    const g = new CollapseGuard(opts);
    const all = names(30);
    beat(g, all, 0, 100_000);
    beat(g, all.slice(20), 100_000, 140_000);
    expect(g.evaluate(140_000)?.silent).toBe(20);
    expect(g.confirm()).toBe(20);
    expect(g.evaluate(140_000)).toBeNull();
    expect(g.known).toBe(10);
    beat(g, all.slice(20), 140_000, 200_000);
    expect(g.evaluate(200_000)).toBeNull();
    expect(g.confirm()).toBe(0);
  });

  it('agents that fall silent while it holds join the lost ones; share 1 switches it off', () => {
    const g = new CollapseGuard(opts);
    const all = names(20);
    beat(g, all, 0, 100_000);
    beat(g, all.slice(12), 100_000, 130_000);
    expect(g.evaluate(120_000)?.silent).toBe(12);
    // Two more go; the engine evaluates every cycle.
    for (let t = 130_000; t < 200_000; t += HB) {
      beat(g, all.slice(14), t, t + HB);
      g.evaluate(t);
    }
    expect(g.evaluate(200_000)?.silent).toBe(14);

    const off = new CollapseGuard({ ...opts, share: 1 });
    beat(off, all, 0, 100_000);
    expect(off.evaluate(300_000)).toBeNull();
  });
});
