/**
 * `hmgate run` with etcd not up yet, as a real process: the daemon starts anyway, serves its API,
 * names ETCD_UNREACHABLE with its fix in the log and in /v1/status — and no problem that is only a
 * consequence of the store being down (the CC's, the agents') — then leads once etcd comes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { SimAgents } from '../helpers/agents.js';
import { HmgateDaemon } from '../helpers/hmgate-process.js';
import { freePort, startEtcd, startFakeCC, startNatsServer, waitFor, type EtcdHandle, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';
import { TcpProxy } from './tcp-proxy.js';

const HB = 500;
let dir: string;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents;
let etcd: EtcdHandle | undefined;
let proxy: TcpProxy | undefined;
let daemon: HmgateDaemon | undefined;

type Status = Record<string, any>;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-etcd-down-'));
  [nats, cc] = await Promise.all([startNatsServer(), startFakeCC({ apps: [{ guid: 'app-1', version: 'v1', instances: 1 }] })]);
  agents = await SimAgents.start(nats.url, HB);
});

afterEach(async () => {
  await daemon?.stop('SIGKILL');
  await agents.stop();
  await proxy?.stop();
  await Promise.all([cc.stop(), nats.stop(), etcd?.stop()]);
  daemon = etcd = proxy = undefined;
  await rm(dir, { recursive: true, force: true });
});

it('starts with etcd unreachable: API up, ETCD_UNREACHABLE with its fix and no consequence shown as the CC or the agents; leads once etcd comes', async () => {
  agents.agent('dea-1').run('app-1', 0);
  // Nothing listens on the etcd port yet: connections are refused.
  const etcdPort = await freePort();
  const apiPort = await freePort();
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'extends: hm9000',
      'foundation: etcd-down',
      `heartbeat_interval: ${HB}ms`,
      'leader: { ttl: 2s }',
      `store: { plugin: etcd, endpoints: ["http://127.0.0.1:${etcdPort}"], prefix: /etcd-down, dial_timeout: 1s }`,
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  heartbeats: { sync_interval: 100ms }',
      `  desired: { url: "${cc.url}", user: ${cc.user}, password: ${cc.password} }`,
      `api: { listen: "127.0.0.1:${apiPort}", password: pw }`,
      '',
    ].join('\n'),
  );
  daemon = HmgateDaemon.start(file);
  const d = daemon;
  const api = `http://127.0.0.1:${apiPort}`;
  const status = async (): Promise<Status> => {
    const res = await fetch(`${api}/v1/status`, {
      headers: { Authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` },
      signal: AbortSignal.timeout(3_000),
    });
    if (!res.ok) throw new Error(`status ${res.status}`);
    return (await res.json()) as Status;
  };
  const heartbeatsReceived = async (): Promise<number> => {
    const text = await (await fetch(`${api}/metrics`, { signal: AbortSignal.timeout(3_000) })).text();
    return Number(/^hmgate_heartbeats_received_total(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? 0);
  };

  const healthz = await waitFor(
    async () => {
      if (!d.running) throw new Error(`hmgate exited: ${d.stdout}\n${d.stderr}`);
      const res = await fetch(`${api}/healthz`, { signal: AbortSignal.timeout(1_000) });
      return res.ok ? res.json() : null;
    },
    { what: '/healthz with etcd down', timeoutMs: 20_000 },
  );
  expect(healthz).toEqual({ status: 'ok' });

  const down = await waitFor(
    async () => {
      const s = await status();
      return s.problems.some((p: Status) => p.code === 'ETCD_UNREACHABLE') ? s : null;
    },
    { what: 'ETCD_UNREACHABLE in /v1/status', timeoutMs: 15_000 },
  );
  expect(down.leader).toBe(false);
  const problem = down.problems.find((p: Status) => p.code === 'ETCD_UNREACHABLE');
  expect(problem.message).toContain(`etcd at http://127.0.0.1:${etcdPort}: not reachable`);
  expect(problem.fix).toContain('store.endpoints');

  // Past the window in which no heartbeat would be NO_HEARTBEATS (3 hb + sync), heartbeats arriving.
  await waitFor(async () => (await heartbeatsReceived()) >= 10, { what: '10 heartbeats received', timeoutMs: 20_000 });
  const during = await status();
  const codes = during.problems.map((p: Status) => p.code);
  expect(codes).toContain('ETCD_UNREACHABLE');
  expect(codes).not.toContain('CC_BAD_ANSWER');
  expect(codes).not.toContain('NO_HEARTBEATS');
  expect(codes).not.toContain('STAGE_UNHEALTHY');
  const warned = d.logs().filter((l) => l.problem === 'ETCD_UNREACHABLE' && l.level === 'warn');
  expect(warned).toHaveLength(1);
  expect(String(warned[0]!.fix)).toContain('store.endpoints');
  expect(d.stdout).not.toMatch(/"level":"(error|fatal)".*StageStartError|Error: 14 UNAVAILABLE/);

  // etcd comes up behind the configured address: the daemon reads the state, campaigns and leads.
  etcd = await startEtcd();
  proxy = await TcpProxy.start(etcd.clientPort, etcdPort);
  const leading = await waitFor(
    async () => {
      const s = await status();
      return s.leader && s.stages.store.healthy && !s.problems.some((p: Status) => p.code === 'ETCD_UNREACHABLE') ? s : null;
    },
    { what: 'the daemon leads, its store healthy, once etcd is up', timeoutMs: 30_000 },
  );
  expect(leading.stages.store.last_error).toBeNull();
  expect(d.logs().some((l) => l.problem === 'ETCD_UNREACHABLE' && l.level === 'info' && /^cleared: /.test(String(l.msg)))).toBe(true);
  expect(d.running).toBe(true);
}, 120_000);
