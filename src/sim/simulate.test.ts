import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../config/load.js';
import { buildSimulation, simulateFoundation } from './simulate.js';

describe('hmgate simulate', () => {
  it('runs a foundation through crashes, a dying agent, an evacuation, a version change and a CC outage, and converges', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hmgate-sim-'));
    try {
      const file = join(dir, 'c.yaml');
      await writeFile(file, 'extends: hm9000\napi: { password: x, listen: "127.0.0.1:0" }\nsources: { desired: { url: "http://127.0.0.1:1" } }\n');
      const loaded = await loadConfig(file, { env: {} });
      const { result, summary } = await simulateFoundation(loaded, {
        agents: 10,
        instancesPerAgent: 10,
        instancesPerApp: 5,
        crashRate: 0.05,
        agentDiesAt: 120_000,
        evacuateAt: 240_000,
        versionChangeAt: 360_000,
        ccOutage: [480_000, 700_000],
        durationMs: 15 * 60_000,
        seed: 7,
      });
      expect(summary.starts.CRASHED).toBeGreaterThanOrEqual(1);
      expect(summary.starts.MISSING).toBeGreaterThanOrEqual(10); // the dead agent's ten instances, and the new version
      // the evacuating agent's instances (less one that had crashed and was restarted elsewhere)
      expect(summary.starts.EVACUATING).toBeGreaterThanOrEqual(9);
      expect(summary.stops.EVACUATION_COMPLETE).toBe(summary.starts.EVACUATING);
      expect(summary.stops.EXTRA).toBe(5); // app-0's old version
      // nothing is sent while desired state is stale during the outage (12 hb after the last fetch)
      expect(result.timeline.filter((t) => t.at > 480_000 + 130_000 && t.at < 700_000)).toEqual([]);
      // converged: nothing in the last five minutes
      expect(summary.convergedAt).toBeLessThan(10 * 60_000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('is deterministic for a seed', () => {
    const o = { agents: 4, instancesPerAgent: 5, instancesPerApp: 2, crashRate: 0.5, durationMs: 60_000, seed: 3 };
    expect(buildSimulation(o)).toEqual(buildSimulation(o));
    expect(buildSimulation(o).events).not.toEqual(buildSimulation({ ...o, seed: 4 }).events);
  });
});
