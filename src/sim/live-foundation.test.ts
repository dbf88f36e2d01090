/** The live simulator's foundation: what its agents report as instances restart, crash, start and vanish. */
import { describe, expect, it } from 'vitest';
import { appGuid, appOf, appVersion, LiveFoundation } from './live-foundation.js';

interface Reported {
  droplet: string;
  version: string;
  instance: string;
  index: number;
  state: string;
  state_timestamp: number;
}

const T0 = 1_764_000_000_000;
const report = (f: LiveFoundation, agent: number, now: number) => (JSON.parse(f.heartbeat(agent, now)) as { droplets: Reported[] }).droplets;

describe('LiveFoundation', () => {
  it('lays apps across agents and reports each change once, in the next heartbeat of the agent that runs it', () => {
    const f = new LiveFoundation({ agents: 4, instancesPerAgent: 5, instancesPerApp: 2, churn: 0.25, seed: 3 }, T0);
    expect([f.instances, f.apps]).toEqual([20, 10]);
    const first = report(f, 1, T0 + 1_000);
    // Instance g of app g / 2 at index g % 2 lives on agent g mod 4.
    expect(first.map((d) => [d.droplet, d.index])).toEqual([1, 5, 9, 13, 17].map((g) => [appGuid(Math.floor(g / 2)), g % 2]));
    expect(first.every((d) => d.state === 'RUNNING' && d.state_timestamp === T0 / 1000 && d.version === appVersion(appOf(d.droplet)))).toBe(true);
    // Unchanged: the same bytes again.
    expect(f.heartbeat(1, T0 + 11_000)).toBe(f.heartbeat(1, T0 + 21_000));

    // A restart: a new guid carrying its build time, STARTING once, then RUNNING.
    expect(f.planChurn()).toBe(5);
    const at = T0 + 30_000;
    const restarted = [0, 1, 2, 3].flatMap((d) => report(f, d, at)).filter((d) => d.state === 'STARTING');
    expect(restarted.length).toBeGreaterThan(0);
    for (const d of restarted) expect(d.instance).toMatch(new RegExp(`t${at}$`));
    const later = [0, 1, 2, 3].flatMap((d) => report(f, d, at + 10_000));
    for (const d of restarted) expect(later.find((x) => x.instance === d.instance)).toMatchObject({ state: 'RUNNING', state_timestamp: (at + 10_000) / 1000 });

    // A crash, a start in its place, a vanished instance: each shows in the agent's next heartbeat.
    expect(f.crash(6, at + 11_000)).toBe(true);
    expect(report(f, 2, at + 12_000).find((d) => d.droplet === appGuid(3) && d.index === 0)).toMatchObject({
      state: 'CRASHED',
      state_timestamp: (at + 11_000) / 1000,
    });
    expect(f.start(appGuid(3), appVersion(3), 0, at + 13_000)).toBe(true);
    const started = report(f, 2, at + 14_000).find((d) => d.droplet === appGuid(3) && d.index === 0)!;
    expect(started).toMatchObject({ state: 'STARTING', state_timestamp: (at + 13_000) / 1000 });
    expect(started.instance).toBe(f.currentGuid(6));
    expect(f.stop(started.instance)).toBe(true);
    expect(report(f, 2, at + 15_000).some((d) => d.droplet === appGuid(3) && d.index === 0)).toBe(false);
    expect(f.start(appGuid(3), 'other-version', 0, at + 16_000)).toBe(false);
  });

  it('reports a partition named outside Latin-1 as it is', () => {
    const f = new LiveFoundation({ agents: 1, instancesPerAgent: 2, instancesPerApp: 2, churn: 0, seed: 1, cc_partition: 'ĉ-zone' }, T0);
    const body = JSON.parse(f.heartbeat(0, T0)) as { droplets: { cc_partition: string }[] };
    expect(body.droplets.map((d) => d.cc_partition)).toEqual(['ĉ-zone', 'ĉ-zone']);
  });
});
