/** `hmgate simulate`'s flag values: every bad one is a UsageError (the CLI exits 2), naming the flag. */
import { describe, expect, it } from 'vitest';
import { simulationOptions, UsageError, type SimulateArgs } from '../../src/sim/commands.js';

const args = (more: Partial<SimulateArgs> = {}): SimulateArgs => ({
  agents: '20',
  instances: '10',
  perApp: '5',
  crashRate: '0.02',
  duration: '15m',
  seed: '1',
  timeline: false,
  ...more,
});

describe('simulationOptions', () => {
  it('takes good values, durations in heartbeats too', () => {
    const o = simulationOptions(args({ agentDiesAt: '3hb', ccOutage: '5m-8m', seed: '7' }), 10_000);
    expect(o).toMatchObject({
      agents: 20,
      instancesPerAgent: 10,
      instancesPerApp: 5,
      crashRate: 0.02,
      agentDiesAt: 30_000,
      ccOutage: [300_000, 480_000],
      seed: 7,
    });
  });

  it.each([
    [{ agents: 'many' }, '--agents must be a whole number > 0, not "many"'],
    [{ perApp: '' }, '--per-app must be a whole number > 0, not ""'],
    [{ crashRate: '' }, '--crash-rate must be between 0 and 1, not ""'],
    [{ seed: 'abc' }, '--seed must be a whole number, not "abc"'],
    [{ evacuateAt: 'later' }, '--evacuate-at: bad duration "later": use a number with ms, s, m, h or hb (heartbeats), e.g. "250ms", "10s", "3hb"'],
    [{ ccOutage: '5m-8m-9m' }, '--cc-outage must be FROM-TO, e.g. 5m-8m, not "5m-8m-9m"'],
    [{ ccOutage: '5m-5m' }, '--cc-outage must end after it begins, not "5m-5m"'],
  ] as [Partial<SimulateArgs>, string][])('%o: a UsageError', (more, message) => {
    let thrown: unknown;
    try {
      simulationOptions(args(more), 10_000);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(UsageError);
    expect((thrown as Error).message).toBe(message);
  });
});
