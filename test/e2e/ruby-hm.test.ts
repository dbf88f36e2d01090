/**
 * The Ruby HM presets end to end: a real nats-server, a fake Cloud Controller whose bulk API
 * credentials are asked for over NATS, simulated agents heartbeating every second, and the engine
 * as `hmgate run` builds it, with the preset's timings scaled down (droplets_analysis 2 s,
 * droplet_lost 3 s, restart delays 1–4 s). The requests on health.* (and the older design's
 * cloudcontrollers.hm.requests.*) are checked byte for byte and in time.
 */
import { appendFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { startFakeCC, startNatsServer, waitFor, type FakeApp, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const HB = 1_000;
const UPDATED_AT = '2013-07-31 22:00:00 +0000';
const LAST_UPDATED = 1375308000;

let dir: string;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents;
let recorder: SubjectRecorder;
let engine: Engine | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-e2e-ruby-'));
  nats = await startNatsServer();
  cc = await startFakeCC({ apps: [] });
  agents = await SimAgents.start(nats.url, HB);
  recorder = await SubjectRecorder.start(nats.url, ['health.start', 'health.stop', 'cloudcontrollers.hm.requests.*']);
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

/** Starts hmgate on a Ruby preset with the scaled timings; returns when it started (ms). */
async function startHmgate(preset: 'ruby-hm' | 'ruby-hm-partitioned', extra: string[] = [], dropletLost = '3s'): Promise<number> {
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      `extends: ${preset}`,
      'foundation: e2e-ruby',
      `heartbeat_interval: ${HB}ms`,
      'analyze_interval: 2s',
      'events: { run_loop: 1s }',
      `bus: { servers: ["${nats.url}"] }`,
      // droplet_lost once, for every stage that uses it (missing, extra instances, exit restarts, heartbeat_ttl)
      `intervals: { droplet_lost: ${dropletLost} }`,
      'sources:',
      `  desired: { url: "${cc.url.replace(/^http:\/\//, '')}", poll_interval: 3s, credentials_timeout: 1s }`,
      'policies:',
      '  flapping: { min_restart_delay: 1s, max_restart_delay: 4s, delay_time_noise: 0s }',
      'api: { password: pw, enabled: false }',
      ...extra,
      '',
    ].join('\n'),
  );
  const loaded = await loadConfig(file, { env: {} });
  // E2E_LOG=FILE keeps the daemon's debug log of a run, for looking into a failure.
  const logFile = process.env.E2E_LOG;
  const loggers = createLoggerFactory({
    foundation: 'e2e-ruby',
    level: logFile ? 'debug' : 'silent',
    ...(logFile ? { destination: { write: (s: string) => appendFileSync(logFile, s) } } : {}),
  });
  engine = new Engine(loaded, { loggers });
  const t0 = Date.now();
  await engine.start();
  return t0;
}

const app = (guid: string, instances: number, o: Partial<FakeApp> = {}): FakeApp => ({ guid, version: `${guid}-v`, instances, updated_at: UPDATED_AT, ...o });
const on = (subject: string, guid: string) => recorder.on(subject).filter((m) => m.body.droplet === guid);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Seconds since `t0`, to one decimal, for readable failures. */
const since = (t0: number, at: number) => Math.round((at - t0) / 100) / 10;

describe('ruby-hm preset end to end (scaled timings)', () => {
  it('a silently lost instance: started once droplet_lost after its last heartbeat, the first start counting it as running, the next 4 s later', async () => {
    const creds = await agents.respond('cloudcontroller.bulk.credentials.default', { user: cc.user, password: cc.password });
    cc.setApps([app('app-a', 2)]);
    agents.agent('dea-1').run('app-a', 0, { version: 'app-a-v', instance: 'a' });
    agents.agent('dea-2').run('app-a', 1, { version: 'app-a-v', instance: 'b' });
    const t0 = await startHmgate('ruby-hm');
    await sleep(4_500);
    agents.agent('dea-2').silent = true; // its DEA dies silently at ≈4.5 s (last heartbeat ≈4 s)
    await waitFor(() => on('health.start', 'app-a').length >= 2, { what: 'two starts of the lost index', timeoutMs: 20_000 });
    const [first, second] = on('health.start', 'app-a');
    // docs/ruby-hm.md#a-silently-lost-instance, scaled: missing once now − 4 > 3, found by the 2 s
    // analysis at 8 s, sent at the next drain.
    expect(since(t0, first!.at)).toBeGreaterThanOrEqual(7);
    expect(since(t0, first!.at)).toBeLessThanOrEqual(11);
    expect(first!.raw).toBe(`{"droplet":"app-a","last_updated":${LAST_UPDATED},"version":"app-a-v","indices":[1],"running":{"app-a-v":2},"flapping":false}`);
    // The grace re-armed at the missing check: the next check 4 s later, b no longer counted.
    expect(second!.raw).toBe(`{"droplet":"app-a","last_updated":${LAST_UPDATED},"version":"app-a-v","indices":[1],"running":{"app-a-v":1},"flapping":false}`);
    expect((second!.at - first!.at) / 1000).toBeGreaterThanOrEqual(3);
    expect((second!.at - first!.at) / 1000).toBeLessThanOrEqual(5);
    expect(recorder.on('health.stop')).toEqual([]);
    expect(creds.count).toBeGreaterThanOrEqual(1);
  });

  it('a flapping instance: the first crash restarted at once, the next ones after 1, 2 and 4 s, then given up', { timeout: 60_000 }, async () => {
    await agents.respond('cloudcontroller.bulk.credentials.default', { user: cc.user, password: cc.password });
    cc.setApps([app('app-b', 1)]);
    let inst = agents.agent('dea-1').run('app-b', 0, { version: 'app-b-v', instance: 'g1' });
    agents.obeyRequests('dea-1');
    // droplet_lost longer than a delayed restart plus a heartbeat: a FLAPPING index waiting for its
    // restart is never also found missing (which would schedule one more restart, as in the Ruby HM).
    await startHmgate('ruby-hm', [], '8s');
    await sleep(4_000);
    const crashAt: number[] = [];
    const crash = async (n: number) => {
      crashAt.push(Date.now());
      agents.exited(inst, 'CRASHED', 1_700_000_000 + n);
      agents.agent('dea-1').remove(inst.instance);
      // the restart (if any) runs a new instance; crash it once it has heartbeated
      await waitFor(() => [...agents.agent('dea-1').instances.values()].find((i) => i.app === 'app-b'), {
        what: `restart after crash ${n}`,
        timeoutMs: 15_000,
      });
      inst = [...agents.agent('dea-1').instances.values()].find((i) => i.app === 'app-b')!;
      await sleep(1_500);
    };
    for (let n = 1; n <= 4; n++) await crash(n);
    crashAt.push(Date.now());
    agents.exited(inst, 'CRASHED', 1_700_000_005);
    agents.agent('dea-1').remove(inst.instance);
    await sleep(8_000); // more than the 4 s cap and a few missing checks: given up, nothing more
    const starts = on('health.start', 'app-b');
    expect(starts.map((m) => m.body.flapping)).toEqual([false, true, true, true]);
    const delays = starts.map((m, i) => (m.at - crashAt[i]!) / 1000);
    expect(delays[0]).toBeLessThanOrEqual(1.5); // queued LOW, sent at the next 1 s drain
    // min_restart_delay 1 s doubling per crash, armed at the next 1 s run loop
    [1, 2, 4].forEach((d, i) => {
      expect(delays[i + 1]).toBeGreaterThanOrEqual(d);
      expect(delays[i + 1]).toBeLessThanOrEqual(d + 2);
    });
    expect(starts.every((m) => (m.body.indices as number[])[0] === 0)).toBe(true);
  });

  it('a STOPPED app gets one health.stop; healthmanager.health answers the running count per known app', async () => {
    await agents.respond('cloudcontroller.bulk.credentials.default', { user: cc.user, password: cc.password });
    cc.setApps([app('app-c', 2), app('app-d', 1, { state: 'STOPPED' })]);
    agents.agent('dea-1').run('app-c', 0, { version: 'app-c-v', instance: 'c0' });
    agents.agent('dea-1').run('app-c', 1, { version: 'app-c-v', instance: 'c1' });
    agents.agent('dea-1').run('app-d', 0, { version: 'app-d-v', instance: 'd0' });
    agents.obeyRequests('dea-1');
    await startHmgate('ruby-hm');
    await waitFor(() => on('health.stop', 'app-d').length >= 1, { what: "the stopped app's stop", timeoutMs: 10_000 });
    await sleep(5_000);
    expect(on('health.stop', 'app-d').map((m) => m.raw)).toEqual([
      `{"droplet":"app-d","last_updated":${LAST_UPDATED},"instances":{"d0":"app-d-v"},"running":{},"version":"app-d-v"}`,
    ]);
    const replies = await agents.requestMany(
      'healthmanager.health',
      {
        droplets: [
          { droplet: 'app-c', version: 'app-c-v' },
          { droplet: 'no-such-app', version: 'v' },
        ],
      },
      500,
    );
    expect(replies).toEqual([{ droplet: 'app-c', version: 'app-c-v', healthy: 2 }]);
    expect(recorder.on('health.start')).toEqual([]);
  });
});

describe('ruby-hm-partitioned end to end', () => {
  it('agents and CC on ng against a daemon on default: no request and a named problem; cc_partition: ng fixes it', async () => {
    // The CC answers credentials only on its own partition.
    await agents.respond('cloudcontroller.bulk.credentials.ng', { user: cc.user, password: cc.password });
    cc.setApps([app('app-e', 2)]);
    agents.agent('dea-1').run('app-e', 0, { version: 'app-e-v', instance: 'e0', ccPartition: 'ng' });
    await startHmgate('ruby-hm-partitioned');
    await sleep(8_000);
    expect(recorder.messages).toEqual([]);
    const status = await engine!.status();
    const partition = status.problems.find((p) => /cc_partition/.test(p.message));
    expect(partition?.message).toMatch(/"ng".*"default"/);
    expect(partition?.fix).toMatch(/cc_partition: ng/);
    await engine!.stop();
    engine = undefined;

    await startHmgate('ruby-hm-partitioned', ['cc_partition: ng']);
    await waitFor(() => recorder.on('cloudcontrollers.hm.requests.ng').length >= 1, { what: 'a start on the ng partition', timeoutMs: 15_000 });
    const [start] = recorder.on('cloudcontrollers.hm.requests.ng');
    expect(start!.raw).toBe(`{"droplet":"app-e","op":"START","last_updated":${LAST_UPDATED},"version":"app-e-v","indices":[1]}`);
    expect(recorder.messages.every((m) => m.subject === 'cloudcontrollers.hm.requests.ng' && (m.body.indices as number[])[0] === 1)).toBe(true);
    expect((await engine!.status()).problems.filter((p) => /cc_partition/.test(p.message))).toEqual([]);
  });

  it('7 of 12 agents silent at once: no health.start for their instances while ACTUAL_COLLAPSE holds, none when they return', async () => {
    await agents.respond('cloudcontroller.bulk.credentials.default', { user: cc.user, password: cc.password });
    cc.setApps([app('app-g', 12)]);
    for (let i = 0; i < 12; i++) agents.agent(`dea-${i}`).run('app-g', i, { version: 'app-g-v', instance: `g${i}` });
    await startHmgate('ruby-hm', ['freshness: { collapse: { min_agents: 10 } }']);
    await sleep(4_500);
    for (let i = 0; i < 7; i++) agents.agent(`dea-${i}`).silent = true;
    await waitFor(async () => (await engine!.status()).problems.some((p) => p.code === 'ACTUAL_COLLAPSE'), { what: 'ACTUAL_COLLAPSE', timeoutMs: 15_000 });
    // Well past droplet_lost (3 s) and several analyses and queue drains: nothing is sent.
    await sleep(8_000);
    expect(recorder.on('health.start')).toEqual([]);
    for (let i = 0; i < 7; i++) agents.agent(`dea-${i}`).silent = false;
    await waitFor(async () => !(await engine!.status()).problems.some((p) => p.code === 'ACTUAL_COLLAPSE'), {
      what: 'the guard to release',
      timeoutMs: 15_000,
    });
    // What the policies queued while it held is dropped, not sent now that the agents are back.
    await sleep(5_000);
    expect(recorder.on('health.start')).toEqual([]);
    expect(recorder.on('health.stop')).toEqual([]);
  });
});
