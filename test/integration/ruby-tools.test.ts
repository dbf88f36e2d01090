/**
 * Two operator tools of the Ruby presets against a real nats-server and fake Cloud Controller:
 * shadowing a running health manager (GET /v1/shadow pairs hmgate's would-be requests with the
 * other's), and the manual clock driven over NATS (healthmanager.advance_time), with which a
 * black-box test moves time from outside.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { freePort, startFakeCC, startNatsServer, waitFor, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const UPDATED_AT = '2013-07-31 22:00:00 +0000';
let dir: string;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents;
let nc: NatsConnection;
let engine: Engine | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-ruby-tools-'));
  nats = await startNatsServer();
  cc = await startFakeCC({ apps: [{ guid: 'app-a', version: 'v', instances: 2, updated_at: UPDATED_AT }] });
  agents = await SimAgents.start(nats.url, 1_000);
  await agents.respond('cloudcontroller.bulk.credentials.default', { user: cc.user, password: cc.password });
  agents.agent('dea-1').run('app-a', 0, { version: 'v', instance: 'a0' });
  nc = await connect({ servers: nats.url });
});

afterEach(async () => {
  await engine?.stop();
  engine = undefined;
  await nc.drain().catch(() => undefined);
  await agents.stop();
  await cc.stop();
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

async function start(lines: string[]): Promise<void> {
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'extends: ruby-hm',
      'heartbeat_interval: 1s',
      'analyze_interval: 1s',
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      `  desired: { url: "${cc.url}", poll_interval: 3s }`,
      'intervals: { droplet_lost: 3s }',
      ...lines,
      '',
    ].join('\n'),
  );
  engine = new Engine(await loadConfig(file, { env: {} }), { loggers: createLoggerFactory({ foundation: 'ruby-tools', level: 'silent' }) });
  await engine.start();
}

const expected = '{"droplet":"app-a","last_updated":1375308000,"version":"v","indices":[1],"running":{"v":1},"flapping":false}';

it('shadow mode sends nothing and pairs its requests with the running health manager’s at GET /v1/shadow', async () => {
  const port = await freePort();
  await start(['dispatch: { mode: shadow, shadow: { window: 5s } }', `api: { listen: "127.0.0.1:${port}", password: pw }`]);
  const ours = await SubjectRecorder.start(nats.url, ['health.start', 'health.stop']);
  // The other health manager: the same start for the missing index, and a stop hmgate would not send.
  const other = setInterval(() => {
    nc.publish('health.start', new TextEncoder().encode(expected));
    nc.publish('health.stop', new TextEncoder().encode('{"droplet":"app-a","last_updated":1375308000,"instances":{"a0":"v"},"running":{"v":1},"version":"v"}'));
  }, 3_000);
  try {
    const auth = { authorization: `Basic ${Buffer.from('thin:pw').toString('base64')}` };
    const shadow = async () =>
      (await (await fetch(`http://127.0.0.1:${port}/v1/shadow`, { headers: auth })).json()) as {
        counts: Record<string, number>;
        recent: { outcome: string; subject: string }[];
      };
    await waitFor(async () => (await shadow()).counts.matched >= 1 && (await shadow()).counts.only_theirs >= 1, {
      what: 'a matched start and a stop only theirs',
      timeoutMs: 20_000,
    });
    const s = await shadow();
    expect(s.recent.find((e) => e.outcome === 'matched')?.subject).toBe('health.start');
    expect(s.recent.find((e) => e.outcome === 'only_theirs')?.subject).toBe('health.stop');
    expect(s.counts.only_ours).toBe(0);
    // nothing of hmgate's reached the wire: every message seen is one of the other's
    expect(ours.messages.every((m) => m.raw === expected || m.subject === 'health.stop')).toBe(true);
    expect((await fetch(`http://127.0.0.1:${port}/v1/shadow`)).status).toBe(401);
    // The app's record (what the Ruby rules remember) is shown with the app.
    const appDetail = (await (await fetch(`http://127.0.0.1:${port}/v1/apps/app-a`, { headers: auth })).json()) as {
      record?: { numInstances: number; versions: Record<string, Record<string, { guid: string | null; state: string }>> };
    };
    expect(appDetail.record?.numInstances).toBe(2);
    expect(appDetail.record?.versions.v?.['0']).toMatchObject({ guid: 'a0', state: 'RUNNING' });
  } finally {
    clearInterval(other);
    await ours.stop();
  }
});

it('with clock: manual, time moves only on healthmanager.advance_time, which is answered with the seconds', async () => {
  await start(['clock: manual', 'api: { password: pw, enabled: false }']);
  const recorder = await SubjectRecorder.start(nats.url, ['health.start']);
  try {
    const advance = async (seconds: number) =>
      JSON.parse(
        new TextDecoder().decode(
          (await nc.request('healthmanager.advance_time', new TextEncoder().encode(JSON.stringify({ seconds })), { timeout: 10_000 })).data,
        ),
      );
    // The next heartbeat of the running instance: virtual time is moved only right after one, so
    // index 0 is never older than droplet_lost on the virtual clock (the agents beat in real time).
    const nextHeartbeat = () =>
      new Promise<void>((resolve) => {
        nc.subscribe('dea.heartbeat', { max: 1, callback: () => resolve() });
      });
    // Real time passes, virtual time does not: no analysis, no start.
    await new Promise((r) => setTimeout(r, 2_500));
    expect(recorder.messages).toEqual([]);
    // The first walk ran at start; the grace (3 s) and the analysis tick pass in virtual seconds.
    for (let i = 0; i < 3; i++) {
      await nextHeartbeat();
      expect(await advance(1)).toEqual({ seconds: 1 });
    }
    await nextHeartbeat();
    expect(await advance(2)).toEqual({ seconds: 2 });
    await waitFor(() => recorder.messages.length >= 1, { what: 'the missing start after advancing', timeoutMs: 5_000 });
    expect(recorder.messages[0]!.raw).toBe(expected);
    nc.publish('healthmanager.advance_time', new TextEncoder().encode('{"seconds":"soon"}')); // refused, logged, nothing moves
    expect(await advance(0)).toEqual({ seconds: 0 });
  } finally {
    await recorder.stop();
  }
});
