/**
 * What `hmgate demo` adds to the live simulator: desired state that changes (served fresh through
 * the live bulk API), a version change obeyed, a dead agent's instances started on its
 * stand-in; and the nats-server it starts, or the fix it names when there is none.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DemoFoundation, newVersion } from './demo-foundation.js';
import { findNatsServer, NatsServerMissingError } from './demo-nats.js';
import { appGuid, appVersion } from './live-foundation.js';
import { LiveCloudController } from './live-cc.js';

interface Reported {
  droplet: string;
  version: string;
  instance: string;
  index: number;
  state: string;
}

const T0 = 1_764_000_000_000;
const report = (f: DemoFoundation, agent: number, now: number) => (JSON.parse(f.heartbeat(agent, now)) as { droplets: Reported[]; dea: string }).droplets;
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('DemoFoundation', () => {
  it('changes an app’s desired count and version; a start of the new version takes the old one’s place and is reported under it', () => {
    // 5 agents × 3 instances, apps of 3: app a's index i is slot 3a + i, on agent (3a + i) mod 5.
    const f = new DemoFoundation({ agents: 5, instancesPerAgent: 3, instancesPerApp: 3, churn: 0, seed: 1 }, T0);
    expect(f.desiredApp(1)).toMatchObject({ id: appGuid(1), version: appVersion(1), instances: 3 });
    f.setDesiredInstances(1, 1);
    expect(f.desiredApp(1).instances).toBe(1);
    expect(() => f.setDesiredInstances(1, 4)).toThrow(/room for 3/);

    const v2 = newVersion(3);
    expect(v2).not.toBe(appVersion(3));
    f.setDesiredVersion(3, v2);
    expect(f.desiredApp(3)).toMatchObject({ version: v2, instances: 3 });
    expect(f.desiredGeneration).toBe(2);
    // Slot 9 (app 3, index 0) on agent 4 runs v1; a start of v2 replaces it, a start of v1 is not one.
    const old = f.currentGuid(9)!;
    expect(f.start(appGuid(3), appVersion(3), 0, T0 + 1)).toBe(false);
    expect(f.start(appGuid(3), 'some-other-version', 0, T0 + 1)).toBe(false);
    expect(f.start(appGuid(3), v2, 0, T0 + 1)).toBe(true);
    expect(f.currentGuid(9)).not.toBe(old);
    expect(f.versionOf(9)).toBe(v2);
    // The stop for the old instance finds nothing to stop.
    expect(f.stop(old)).toBe(false);
    const app3 = report(f, 4, T0 + 2).filter((d) => d.droplet === appGuid(3));
    expect(app3).toEqual([expect.objectContaining({ index: 0, version: v2, state: 'STARTING', instance: f.currentGuid(9) })]);
    expect(report(f, 4, T0 + 3).find((d) => d.droplet === appGuid(3))).toMatchObject({ version: v2, state: 'RUNNING' });
  });

  it('starts a dead agent’s instances on its stand-in, which reports them from then on', () => {
    const f = new DemoFoundation({ agents: 5, instancesPerAgent: 3, instancesPerApp: 3, churn: 0, seed: 1 }, T0);
    // Agent 2 runs slots 2, 7 and 12: app 0 index 2, app 2 index 1, app 4 index 0.
    const before = report(f, 3, T0).length;
    // Still running there (only its heartbeats stop): a start for it is a duplicate until it died.
    expect(f.start(appGuid(2), appVersion(2), 1, T0)).toBe(false);
    f.die(2, 3);
    expect(f.isDead(2)).toBe(true);
    expect(() => f.die(4, 2)).toThrow(/cannot stand in/);
    expect(f.start(appGuid(2), appVersion(2), 1, T0 + 1)).toBe(true);
    expect(f.hostOf(7)).toBe(3);
    expect(f.hostOf(2)).toBe(2);
    // Started once: a second start for the same index is refused, as for any running instance.
    expect(f.start(appGuid(2), appVersion(2), 1, T0 + 1)).toBe(false);
    const on3 = report(f, 3, T0 + 2);
    expect(on3).toHaveLength(before + 1);
    expect(on3.at(-1)).toMatchObject({ droplet: appGuid(2), index: 1, state: 'STARTING', instance: f.currentGuid(7) });
    expect(report(f, 3, T0 + 3).at(-1)).toMatchObject({ droplet: appGuid(2), index: 1, state: 'RUNNING' });
  });
});

describe('the live bulk API over a changing foundation', () => {
  it('serves the desired state as it is now after each change', async () => {
    const f = new DemoFoundation({ agents: 2, instancesPerAgent: 2, instancesPerApp: 2, churn: 0, seed: 1 }, T0);
    const cc = new LiveCloudController(f, { host: '127.0.0.1', port: 0, user: 'bulk_api', password: 'pw' });
    await cc.start();
    cleanups.push(() => cc.stop());
    const auth = { Authorization: `Basic ${Buffer.from('bulk_api:pw').toString('base64')}` };
    const page = async () => {
      const res = await fetch(`${cc.url}/bulk/apps?batch_size=50&bulk_token={}`, { headers: auth });
      expect(res.status).toBe(200);
      return (await res.json()) as { results: Record<string, { instances: number; version: string }>; bulk_token: { id: number | null } };
    };
    expect((await page()).results[appGuid(0)]).toMatchObject({ instances: 2, version: appVersion(0) });
    f.setDesiredInstances(0, 1);
    expect((await page()).results[appGuid(0)]?.instances).toBe(1);
    f.setDesiredVersion(0, newVersion(0));
    const now = await page();
    expect(now.results[appGuid(0)]).toMatchObject({ instances: 1, version: newVersion(0) });
    expect(now.bulk_token.id).toBe(2);
  });
});

describe('findNatsServer', () => {
  it('names the fix when nats-server is nowhere', async () => {
    const empty = await mkdtemp(join(tmpdir(), 'hmgate-demo-path-'));
    cleanups.push(() => rm(empty, { recursive: true, force: true }));
    expect(() => findNatsServer({ PATH: empty }, [])).toThrow(NatsServerMissingError);
    expect(() => findNatsServer({ PATH: empty }, [])).toThrow('install it with `apt-get install -y nats-server`, or give --nats URL');
    expect(() => findNatsServer({ NATS_SERVER_BIN: join(empty, 'nats-server') })).toThrow(/NATS_SERVER_BIN is .* not an executable file/);
    expect(findNatsServer({ PATH: empty }, ['/bin/sh'])).toBe('/bin/sh');
  });
});
