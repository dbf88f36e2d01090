/**
 * The freshness guards end to end on the hm9000 preset: a real nats-server, a fake Cloud
 * Controller and simulated agents. Heartbeats that arrive slower than the agents send them make
 * the state not fresh (INGEST_BEHIND); most agents falling silent at once holds every start for
 * their instances (ACTUAL_COLLAPSE) until an operator confirms the loss over the API.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { runCli } from '../helpers/hmgate-process.js';
import { freePort, startFakeCC, startNatsServer, waitFor, type FakeApp, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const HB = 200;
const GRACE = 3 * HB;

let dir: string;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents | undefined;
let recorder: SubjectRecorder;
let engine: Engine | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-guards-'));
  nats = await startNatsServer();
  cc = await startFakeCC({ apps: [] });
  recorder = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
});

afterEach(async () => {
  await engine?.stop();
  engine = undefined;
  await agents?.stop();
  agents = undefined;
  await recorder.stop();
  await cc.stop();
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

async function startHmgate(extra: string[] = []): Promise<string> {
  const port = await freePort();
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'extends: hm9000',
      'foundation: guards',
      `heartbeat_interval: ${HB}ms`,
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  heartbeats: { sync_interval: 50ms }',
      `  desired: { url: "${cc.url}", user: bulk_api, password: bulk-password }`,
      `api: { password: pw, listen: "127.0.0.1:${port}" }`,
      ...extra,
      '',
    ].join('\n'),
  );
  engine = new Engine(await loadConfig(file, { env: {} }), { loggers: createLoggerFactory({ foundation: 'guards', level: 'silent' }) });
  await engine.start();
  return `http://127.0.0.1:${port}`;
}

const auth = { authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` };
const app = (guid: string, instances: number): FakeApp => ({ guid, version: 'v1', instances, state: 'STARTED', package_state: 'STAGED' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const codes = async () => (await engine!.status()).problems.map((p) => p.code);

describe('freshness guards end to end (heartbeat 200 ms)', () => {
  it('heartbeats arriving at two thirds of the pace the agents send: actual state is not fresh, named INGEST_BEHIND with the lag', async () => {
    cc.setApps([app('app-a', 10)]);
    // Ten agents whose heartbeats come every 300 ms, not every 200: each still present (TTL 600 ms),
    // but the state falls 100 ms further behind every heartbeat.
    agents = await SimAgents.start(nats.url, 1.5 * HB);
    for (let i = 0; i < 10; i++) agents.agent(`dea-${i}`).run('app-a', i);
    await startHmgate();
    await waitFor(async () => (await codes()).includes('INGEST_BEHIND'), { what: 'INGEST_BEHIND', timeoutMs: 10_000 });
    const s = await engine!.status();
    expect(s.actual.fresh).toBe(false);
    expect(s.actual.reason).toMatch(
      /^ingest is [\d.]+s behind \(more than freshness\.max_ingest_lag, 0\.2s\): heartbeats arrive every 0\.3s on average per agent, not every 0\.2s/,
    );
    const problem = s.problems.find((p) => p.code === 'INGEST_BEHIND')!;
    expect(problem.fix).toMatch(/freshness\.max_ingest_lag/);
    for (let i = 0; i < 5; i++) {
      await sleep(HB);
      expect((await engine!.status()).actual.fresh).toBe(false);
    }
  });

  it('the same agents at their pace are fresh and nothing is behind', async () => {
    cc.setApps([app('app-a', 10)]);
    agents = await SimAgents.start(nats.url, HB);
    for (let i = 0; i < 10; i++) agents.agent(`dea-${i}`).run('app-a', i);
    await startHmgate();
    await waitFor(async () => (await engine!.status()).actual.fresh, { what: 'fresh actual state', timeoutMs: 10_000 });
    await sleep(10 * HB);
    expect(await codes()).not.toContain('INGEST_BEHIND');
  });

  it('7 of 12 agents silent at once: no start for their instances (ACTUAL_COLLAPSE) until an operator confirms; then one start each', async () => {
    cc.setApps([app('app-c', 12)]);
    agents = await SimAgents.start(nats.url, HB);
    for (let i = 0; i < 12; i++) agents.agent(`dea-${i}`).run('app-c', i);
    agents.obey('dea-new');
    const api = await startHmgate(['freshness: { collapse: { min_agents: 10 } }']);
    await waitFor(
      async () => {
        const s = await engine!.status();
        return s.actual.fresh && s.desired.fresh;
      },
      { what: 'fresh state', timeoutMs: 10_000 },
    );
    for (let i = 0; i < 7; i++) agents.agent(`dea-${i}`).silent = true;
    await waitFor(async () => (await codes()).includes('ACTUAL_COLLAPSE'), { what: 'ACTUAL_COLLAPSE', timeoutMs: 10_000 });
    const s = await engine!.status();
    expect(s.actual.fresh).toBe(false);
    expect(s.actual.reason).toBe('7 of 12 agents went silent within 0.6s: not acting on their instances until they return or an operator confirms the loss');
    // Far beyond the agents' TTL and the missing grace: nothing is started.
    await sleep(6 * GRACE);
    expect(recorder.on('hm9000.start')).toEqual([]);
    expect(await codes()).toContain('ACTUAL_COLLAPSE');

    expect((await fetch(`${api}/v1/actual/confirm-loss`, { method: 'POST' })).status).toBe(401);
    // The operator's command, with a wrong password first: one line naming the refusal, nothing confirmed.
    const config = join(dir, 'hmgate.yaml');
    const wrongPassword = join(dir, 'wrong.yaml');
    await writeFile(wrongPassword, (await readFile(config, 'utf8')).replace('password: pw,', 'password: nope,'));
    const refused = await runCli(['confirm-loss', '-c', wrongPassword]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^hmgate: the daemon at http:\/\/127\.0\.0\.1:\d+\/v1\/actual\/confirm-loss refused api\.user \/ api\.password \(401\)\n$/);
    expect(await codes()).toContain('ACTUAL_COLLAPSE');
    const confirmed = await runCli(['confirm-loss', '-c', config]);
    expect(confirmed.stdout).toBe('confirmed: 7 silent agent(s) forgotten; their instances count as missing now\n');
    expect(confirmed.code).toBe(0);
    // A second confirmation finds nothing left to confirm.
    const again = await fetch(`${api}/v1/actual/confirm-loss`, { method: 'POST', headers: auth });
    expect(await again.json()).toEqual({ confirmed: 0 });
    await waitFor(() => recorder.on('hm9000.start').length >= 7, { what: 'seven starts', timeoutMs: 10_000 });
    await sleep(4 * GRACE);
    const started = recorder
      .on('hm9000.start')
      .map((m) => m.body.instance_index as number)
      .sort((a, b) => a - b);
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(recorder.on('hm9000.stop')).toEqual([]);
    expect(await codes()).not.toContain('ACTUAL_COLLAPSE');
  });

  it('the agents come back before anyone confirms: the guard releases and nothing was started', async () => {
    cc.setApps([app('app-d', 12)]);
    agents = await SimAgents.start(nats.url, HB);
    for (let i = 0; i < 12; i++) agents.agent(`dea-${i}`).run('app-d', i);
    agents.obey('dea-new');
    await startHmgate(['freshness: { collapse: { min_agents: 10 } }']);
    await waitFor(
      async () => {
        const s = await engine!.status();
        return s.actual.fresh && s.desired.fresh;
      },
      { what: 'fresh state', timeoutMs: 10_000 },
    );
    for (let i = 0; i < 8; i++) agents.agent(`dea-${i}`).silent = true;
    await waitFor(async () => (await codes()).includes('ACTUAL_COLLAPSE'), { what: 'ACTUAL_COLLAPSE', timeoutMs: 10_000 });
    await sleep(4 * GRACE);
    for (let i = 0; i < 8; i++) agents.agent(`dea-${i}`).silent = false;
    await waitFor(async () => !(await codes()).includes('ACTUAL_COLLAPSE'), { what: 'the guard to release', timeoutMs: 10_000 });
    await waitFor(async () => (await engine!.status()).actual.fresh, { what: 'fresh again', timeoutMs: 10_000 });
    await sleep(4 * GRACE);
    expect(recorder.on('hm9000.start')).toEqual([]);
    expect(recorder.on('hm9000.stop')).toEqual([]);
  });
});
