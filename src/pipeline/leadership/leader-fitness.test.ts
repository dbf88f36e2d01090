/**
 * LeaderFitness decides from its checks whether a daemon campaigns and when a leader resigns; the
 * leadership here is a stand-in that records what it is told, and time is moved by hand.
 */
import { describe, expect, it } from 'vitest';
import type { Candidacy, Leadership } from '../../sdk/leadership.js';
import { LeaderFitness, type FitnessCheck } from './leader-fitness.js';

class FakeLeadership implements Leadership {
  isLeader = false;
  eligible = true;
  why: string | null = null;
  readonly told: [boolean, string | null][] = [];
  start(): void {}
  leaderId(): string | null {
    return null;
  }
  onChange(): () => void {
    return () => {};
  }
  async resign(): Promise<void> {}
  async stop(): Promise<void> {}
  setEligible(eligible: boolean, why: string | null = null): void {
    if (eligible !== this.eligible) this.told.push([eligible, why]);
    this.eligible = eligible;
    this.why = why;
    if (!eligible) this.isLeader = false;
  }
  candidacy(): Candidacy {
    return { candidate: this.eligible, why: this.why };
  }
}

const RESIGN_AFTER = 2_000;

function setup(checks: FitnessCheck[]) {
  let now = 1_000_000;
  const lines: { level: string; msg: string }[] = [];
  const logger = {
    info: (_: object, msg?: string) => lines.push({ level: 'info', msg: msg ?? '' }),
    warn: (_: object, msg?: string) => lines.push({ level: 'warn', msg: msg ?? '' }),
    debug() {},
  };
  const leadership = new FakeLeadership();
  const fitness = new LeaderFitness({ leadership, checks, resignAfterMs: RESIGN_AFTER, logger, now: () => now });
  return {
    leadership,
    fitness,
    lines,
    /** Moves time on by `ms`, evaluating every 100 ms as the timer would. */
    advance(ms: number) {
      for (let t = 0; t < ms; t += 100) {
        now += 100;
        fitness.evaluate();
      }
    },
  };
}

/** A check whose answer the test sets. */
function toggle(initial: string | null, whileLeading = false): FitnessCheck & { set(p: string | null): void } {
  let problem = initial;
  return { whileLeading, problem: () => problem, set: (p) => (problem = p) };
}

describe('LeaderFitness', () => {
  it('a daemon that never connected to NATS never campaigns, and says why once, after resign_after', () => {
    const nats = toggle('not connected to NATS (authorization refused)');
    const { leadership, fitness, lines, advance } = setup([nats]);
    fitness.evaluate();
    expect(leadership.candidacy()).toEqual({ candidate: false, why: 'not connected to NATS (authorization refused)' });
    advance(RESIGN_AFTER - 200);
    expect(lines).toEqual([]);
    advance(10 * RESIGN_AFTER);
    expect(leadership.told).toEqual([[false, 'not connected to NATS (authorization refused)']]);
    expect(lines).toEqual([{ level: 'warn', msg: 'not a candidate for leadership: not connected to NATS (authorization refused)' }]);
  });

  it('a daemon campaigns once NATS is connected, silently when that is at start-up', () => {
    const nats = toggle('not connected to NATS (connecting)');
    const { leadership, fitness, lines, advance } = setup([nats]);
    fitness.evaluate();
    advance(300);
    nats.set(null);
    advance(100);
    expect(leadership.told).toEqual([
      [false, 'not connected to NATS (connecting)'],
      [true, null],
    ]);
    expect(lines).toEqual([]);
  });

  it('a leader rides out a NATS blip shorter than resign_after', () => {
    const nats = toggle(null);
    const { leadership, fitness, advance } = setup([nats]);
    fitness.evaluate();
    leadership.isLeader = true;
    nats.set('not connected to NATS (disconnected)');
    advance(RESIGN_AFTER - 300);
    nats.set(null);
    advance(5 * RESIGN_AFTER);
    expect(leadership.isLeader).toBe(true);
    expect(leadership.told).toEqual([]);
  });

  it('a leader without NATS for resign_after resigns naming the cause, and campaigns again once connected', () => {
    const nats = toggle(null);
    const { leadership, fitness, lines, advance } = setup([nats]);
    fitness.evaluate();
    leadership.isLeader = true;
    nats.set('not connected to NATS (disconnected)');
    advance(RESIGN_AFTER - 100);
    expect(leadership.isLeader).toBe(true);
    advance(200);
    expect(leadership.isLeader).toBe(false);
    expect(leadership.told).toHaveLength(1);
    expect(leadership.told[0]![1]).toMatch(/^not connected to NATS \(disconnected\) for 2(\.\d)?s, longer than leader.resign_after \(2s\)$/);
    // Out of the election while NATS stays away; the engine's line on losing leadership said why.
    advance(3 * RESIGN_AFTER);
    expect(leadership.eligible).toBe(false);
    expect(leadership.why).toBe('not connected to NATS (disconnected)');
    expect(lines).toEqual([]);
    nats.set(null);
    advance(100);
    expect(leadership.eligible).toBe(true);
    expect(lines).toEqual([{ level: 'info', msg: 'fit to lead again: campaigning for leadership' }]);
  });

  it('a standby that loses NATS leaves the election at once', () => {
    const nats = toggle(null);
    const { leadership, fitness, lines, advance } = setup([nats]);
    fitness.evaluate();
    advance(100);
    nats.set('not connected to NATS (disconnected)');
    advance(100);
    expect(leadership.told).toEqual([[false, 'not connected to NATS (disconnected)']]);
    expect(lines.map((l) => l.level)).toEqual(['warn']);
  });

  it('failing saves count only while leading; a leader resigns for them and retries after a hold-off that doubles', () => {
    const saves = toggle('saving heartbeats to the store failed: boom', true);
    const { leadership, fitness, advance } = setup([saves]);
    fitness.evaluate();
    advance(5 * RESIGN_AFTER);
    // A standby does not save: what it last saw as leader does not keep it out.
    expect(leadership.told).toEqual([]);
    leadership.isLeader = true;
    advance(RESIGN_AFTER + 100);
    expect(leadership.isLeader).toBe(false);
    expect(leadership.why).toMatch(/^saving heartbeats to the store failed: boom for 2(\.\d)?s/);
    // Held off for resign_after, then a candidate again.
    advance(RESIGN_AFTER - 200);
    expect(leadership.eligible).toBe(false);
    expect(leadership.why).toMatch(/campaigns again in 2s/);
    advance(300);
    expect(leadership.eligible).toBe(true);
    // Leads again and fails again: held off twice as long.
    leadership.isLeader = true;
    advance(RESIGN_AFTER + 100);
    expect(leadership.isLeader).toBe(false);
    advance(2 * RESIGN_AFTER - 200);
    expect(leadership.eligible).toBe(false);
    advance(300);
    expect(leadership.eligible).toBe(true);
    // Saves succeed in the next term: the hold-off is back to resign_after.
    leadership.isLeader = true;
    saves.set(null);
    advance(500);
    saves.set('saving heartbeats to the store failed: boom');
    advance(RESIGN_AFTER + 100);
    expect(leadership.isLeader).toBe(false);
    advance(RESIGN_AFTER + 100);
    expect(leadership.eligible).toBe(true);
  });

  it('a check that throws counts as failing', () => {
    const { leadership, fitness } = setup([
      {
        problem: () => {
          throw new Error('no bus');
        },
      },
    ]);
    fitness.evaluate();
    expect(leadership.candidacy()).toEqual({ candidate: false, why: 'fitness check failed: no bus' });
  });
});
