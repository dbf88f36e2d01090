/**
 * The hm9000 preset end to end: a real nats-server, a fake Cloud Controller, simulated agents
 * heartbeating at a sub-second interval, and the engine as `hmgate run` builds it. Each scenario
 * reproduces a worked example of the HM9000 spec (Appendix A, Appendix B, extras, version change,
 * duplicates, evacuation) and checks the exact messages on hm9000.start / hm9000.stop.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { startFakeCC, startNatsServer, waitFor, type FakeApp, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const HB = 200;
const GRACE = 3 * HB;

let dir: string;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents;
let recorder: SubjectRecorder;
let engine: Engine | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-e2e-'));
  nats = await startNatsServer();
  cc = await startFakeCC({ apps: [] });
  agents = await SimAgents.start(nats.url, HB);
  recorder = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
});

afterEach(async () => {
  await engine?.stop();
  engine = undefined;
  await agents.stop();
  await recorder.stop();
  await cc.stop();
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

async function startHmgate(extra: string[] = []): Promise<{ freshAt: () => number | undefined }> {
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'extends: hm9000',
      'foundation: e2e',
      `heartbeat_interval: ${HB}ms`,
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  heartbeats: { sync_interval: 50ms }',
      `  desired: { url: "${cc.url}", user: bulk_api, password: bulk-password }`,
      'api: { password: pw, enabled: false }',
      ...extra,
      '',
    ].join('\n'),
  );
  const loaded = await loadConfig(file, { env: {} });
  engine = new Engine(loaded, { loggers: createLoggerFactory({ foundation: 'e2e', level: 'silent' }) });
  await engine.start();
  let freshAt: number | undefined;
  const watch = setInterval(async () => {
    if (freshAt === undefined && engine) {
      const s = await engine.status();
      if (s.actual.fresh && s.desired.fresh) freshAt = Date.now();
    }
  }, 20);
  watch.unref();
  return { freshAt: () => freshAt };
}

const app = (guid: string, instances: number, version = 'v1', o: Partial<FakeApp> = {}): FakeApp => ({
  guid,
  version,
  instances,
  state: 'STARTED',
  package_state: 'STAGED',
  ...o,
});
const starts = (guid: string) => recorder.on('hm9000.start').filter((m) => m.body.droplet === guid);
const stops = (guid: string) => recorder.on('hm9000.stop').filter((m) => m.body.droplet === guid);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('hm9000 preset end to end (heartbeat 200 ms)', () => {
  it('Appendix A: a missing instance gets one hm9000.start after the grace period, none if it reappears; nothing before freshness', async () => {
    cc.setApps([app('app-a', 2), app('app-b', 2)]);
    agents.agent('dea-1').run('app-a', 0);
    agents.agent('dea-1').run('app-b', 0);
    agents.obey('dea-2');
    const t0 = Date.now();
    const { freshAt } = await startHmgate();
    await waitFor(() => freshAt(), { what: 'fresh state', timeoutMs: 10_000 });
    expect(freshAt()! - t0).toBeGreaterThanOrEqual(3 * HB); // the freshness window
    expect(recorder.messages.filter((m) => m.at < freshAt()!)).toEqual([]);
    agents.agent('dea-1').run('app-b', 1); // b's index 1 reappears before its start is due
    await waitFor(() => starts('app-a').length >= 1, { what: 'the start for app-a', timeoutMs: 5_000 });
    await sleep(4 * GRACE);
    expect(starts('app-a')).toHaveLength(1);
    const [start] = starts('app-a');
    expect(start!.raw).toMatch(
      /^\{"message_id":"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[4-7][0-9a-f]{3}-[0-9a-f]{12}","droplet":"app-a","version":"v1","instance_index":1\}$/,
    );
    expect(start!.at - freshAt()!).toBeGreaterThanOrEqual(GRACE - 2 * HB); // enqueued at most a cycle before fresh was seen
    expect(starts('app-b')).toEqual([]);
    expect(recorder.on('hm9000.stop')).toEqual([]);
  });

  it('Appendix B: a crashing instance is restarted at once three times, then with a growing back-off', async () => {
    cc.setApps([app('app-c', 2)]);
    agents.agent('dea-1').run('app-c', 0);
    agents.agent('dea-1').run('app-c', 1, { state: 'CRASHED' });
    agents.obey('dea-2', (guid) => guid === 'app-c'); // its restarts crash again
    await startHmgate(['policies:', '  crashes: { maximum_backoff: 6hb }']); // the MCAT's back-off: 0 0 0 3hb 6hb 6hb
    await waitFor(() => starts('app-c').length >= 6, { what: 'six crash restarts', timeoutMs: 20_000 });
    const at = starts('app-c').map((m) => m.at);
    const gaps = at.slice(1).map((t, i) => t - at[i]!);
    expect(starts('app-c').every((m) => m.body.instance_index === 1)).toBe(true);
    // delay + keep_alive (grace) + at most one cycle: 0+600, 0+600, 600+600, 1200+600, 1200+600 ms
    const expected = [GRACE, GRACE, 2 * GRACE, 3 * GRACE, 3 * GRACE];
    // The back-off on the engine's own clock: when each start was sent, by its decision record (a
    // cycle slowed by a busy machine publishes late, which only the arrival times would show).
    const sentAt = engine!.audit
      .list({ app: 'app-c' })
      .filter((r) => r.action === 'start' && r.outcome === 'sent')
      .map((r) => r.at)
      .slice(0, 6);
    expect(sentAt).toHaveLength(6);
    sentAt.slice(1).forEach((t, i) => expect(t - sentAt[i]!).toBeGreaterThanOrEqual(expected[i]! - 50));
    // As the agents saw them: the upper bound allows a couple of late cycles on a busy machine.
    gaps.forEach((g, i) => expect(g).toBeLessThanOrEqual(expected[i]! + 4 * HB + 100));
  });

  it('an extra instance and a version change: the undesired ones are stopped with is_duplicate false, the new version started', async () => {
    cc.setApps([app('app-d', 1), app('app-e', 1, 'v2')]);
    const extra = agents.agent('dea-1').run('app-d', 1);
    agents.agent('dea-1').run('app-d', 0);
    const old = agents.agent('dea-1').run('app-e', 0, { version: 'v1' });
    agents.obey('dea-2');
    await startHmgate();
    await waitFor(() => stops('app-d').length >= 1 && stops('app-e').length >= 1 && starts('app-e').length >= 1, {
      what: 'the stops and the start',
      timeoutMs: 10_000,
    });
    await sleep(3 * GRACE);
    expect(stops('app-d').map((m) => m.raw)).toEqual([
      expect.stringMatching(
        new RegExp(
          `^\\{"message_id":"[0-9a-f-]{36}","droplet":"app-d","version":"v1","instance_guid":"${extra.instance}","instance_index":1,"is_duplicate":false\\}$`,
        ),
      ),
    ]);
    expect(stops('app-e').map((m) => m.body)).toEqual([
      expect.objectContaining({ version: 'v1', instance_guid: old.instance, instance_index: 0, is_duplicate: false }),
    ]);
    expect(starts('app-e').map((m) => m.body)).toEqual([expect.objectContaining({ version: 'v2', instance_index: 0 })]);
    // the old version is stopped at once; the new one's MISSING start waits for the grace period
    expect(starts('app-e')[0]!.at).toBeGreaterThan(stops('app-e')[0]!.at);
    expect(starts('app-d')).toEqual([]);
  });

  it('duplicates are stopped one at a time after (4 + k) × grace, and only while still duplicated', async () => {
    cc.setApps([app('app-f', 1)]);
    agents.agent('dea-1').run('app-f', 0);
    agents.agent('dea-2').run('app-f', 0);
    agents.agent('dea-3').run('app-f', 0);
    agents.obey('dea-4');
    const { freshAt } = await startHmgate();
    await waitFor(() => stops('app-f').length >= 2, { what: 'two duplicate stops', timeoutMs: 15_000 });
    await sleep(4 * GRACE);
    const f = stops('app-f');
    expect(f).toHaveLength(2);
    expect(f.every((m) => m.body.is_duplicate === true && m.body.instance_index === 0)).toBe(true);
    expect(new Set(f.map((m) => m.body.instance_guid)).size).toBe(2);
    expect(f[0]!.at - freshAt()!).toBeGreaterThanOrEqual(4 * GRACE - 2 * HB);
    expect(f[1]!.at - f[0]!.at).toBeGreaterThanOrEqual(GRACE - 100);
    expect(starts('app-f')).toEqual([]);
  });

  it('an evacuating agent: the instance is started elsewhere at once, then the evacuating one is stopped', async () => {
    cc.setApps([app('app-g', 1)]);
    const inst = agents.agent('dea-1').run('app-g', 0);
    agents.obey('dea-2');
    const { freshAt } = await startHmgate();
    await waitFor(() => freshAt(), { what: 'fresh state', timeoutMs: 10_000 });
    await sleep(2 * HB);
    inst.state = 'EVACUATING';
    const evacuatingSince = Date.now();
    await waitFor(() => starts('app-g').length >= 1 && stops('app-g').length >= 1, { what: 'the evacuation start and stop', timeoutMs: 10_000 });
    expect(starts('app-g')[0]!.body).toMatchObject({ droplet: 'app-g', instance_index: 0 });
    expect(starts('app-g')[0]!.at - evacuatingSince).toBeLessThan(GRACE); // immediate, not after the grace period
    expect(stops('app-g')[0]!.body).toMatchObject({ instance_guid: inst.instance, instance_index: 0, is_duplicate: true });
    expect(stops('app-g')[0]!.at).toBeGreaterThan(starts('app-g')[0]!.at);
  });

  it('sends nothing while either state is stale: agents silent, then the CC down', async () => {
    cc.setApps([app('app-h', 1)]);
    agents.agent('dea-1').run('app-h', 0);
    const { freshAt } = await startHmgate();
    await waitFor(() => freshAt(), { what: 'fresh state', timeoutMs: 10_000 });
    agents.agent('dea-1').silent = true; // its instance vanishes after the TTL, and so does freshness
    await sleep(5 * GRACE);
    expect(recorder.messages).toEqual([]);
    expect((await engine!.status()).actual.fresh).toBe(false);

    agents.agent('dea-1').silent = false;
    await waitFor(async () => (await engine!.status()).actual.fresh, { what: 'fresh again', timeoutMs: 5_000 });
    cc.fail('500');
    // desired goes stale 12 hb after the last good fetch; until then hmgate still acts on it
    await waitFor(async () => !(await engine!.status()).desired.fresh, { what: 'desired stale', timeoutMs: 10_000 });
    expect((await engine!.status()).desired.reason).toMatch(/500/);
    agents.agent('dea-1').remove([...agents.agent('dea-1').instances.keys()][0]!); // now really missing
    await sleep(5 * GRACE);
    expect(recorder.messages).toEqual([]);
  });
});
