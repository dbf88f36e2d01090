/**
 * High availability with real processes: two `hmgate run` daemons sharing an etcd store, a real
 * nats-server, simulated agents that carry out the orders, and a fake Cloud Controller. The leader
 * is killed with SIGKILL: the standby must lead within the lease TTL plus one heartbeat, act only
 * after its own freshness window, and send every order exactly once.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { HmgateDaemon, statusReader } from '../helpers/hmgate-process.js';
import { freePort, startEtcd, startFakeCC, startNatsServer, waitFor, type EtcdHandle, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const HB = 500;
const LEASE_S = 2;
let dir: string;
let etcd: EtcdHandle;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents;
let recorder: SubjectRecorder;
const daemons: HmgateDaemon[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-ha-'));
  [etcd, nats, cc] = await Promise.all([startEtcd(), startNatsServer(), startFakeCC({ apps: [] })]);
  agents = await SimAgents.start(nats.url, HB);
  recorder = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop('SIGKILL');
  await agents.stop();
  await recorder.stop();
  await Promise.all([cc.stop(), nats.stop(), etcd.stop()]);
  await rm(dir, { recursive: true, force: true });
});

async function daemon(name: string): Promise<{ d: HmgateDaemon; port: number; status: () => Promise<Record<string, any>> }> {
  const port = await freePort();
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      'extends: hm9000',
      `foundation: ha`,
      `heartbeat_interval: ${HB}ms`,
      `leader: { ttl: ${LEASE_S}s }`,
      `store: { plugin: etcd, endpoints: ["${etcd.endpoint}"], prefix: /ha }`,
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  heartbeats: { sync_interval: 100ms }',
      `  desired: { url: "${cc.url}", user: bulk_api, password: bulk-password }`,
      `api: { listen: "127.0.0.1:${port}", password: pw }`,
      '',
    ].join('\n'),
  );
  const d = HmgateDaemon.start(file);
  daemons.push(d);
  const status = statusReader(port);
  await waitFor(status, { what: `${name} status`, timeoutMs: 20_000 });
  return { d, port, status };
}

it('leader killed with SIGKILL: the standby leads within the lease + 1 hb, and every start is sent once', async () => {
  cc.setApps([{ guid: 'app-ha', version: 'v1', instances: 3 }]);
  agents.agent('dea-1').run('app-ha', 0, { version: 'v1' });
  agents.obey('dea-2');
  const a = await daemon('a');
  const b = await daemon('b');
  const leaderOf = async () => ((await a.status()).leader ? 'a' : (await b.status()).leader ? 'b' : null);
  const first = await waitFor(leaderOf, { what: 'a leader', timeoutMs: 15_000 });
  const [leader, standby] = first === 'a' ? [a, b] : [b, a];
  expect((await standby.status()).leader).toBe(false);
  expect((await standby.status()).leader_id).toBe((await leader.status()).leader_id);

  // Kill the leader once it has enqueued the MISSING starts, before they are due (after the grace period).
  const auth = { Authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` };
  const decisionsOf = async (port: number) =>
    (
      (await (await fetch(`http://127.0.0.1:${port}/v1/decisions?limit=100`, { headers: auth })).json()) as {
        decisions: { outcome: string; index?: number; message_id: string }[];
      }
    ).decisions;
  // (enqueued in its audit, and written to etcd: a decision the leader dies before writing is
  // simply decided again by the next leader)
  const pendingOf = async (port: number) =>
    (
      (await (await fetch(`http://127.0.0.1:${port}/v1/apps/app-ha`, { headers: auth })).json()) as {
        versions?: { pending_starts: { message_id: string }[] }[];
      }
    ).versions?.flatMap((v) => v.pending_starts.map((p) => p.message_id)) ?? [];
  const audited = async () => {
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      return Object.values(await client.getAll().prefix('/ha/audit/').strings()).map((v) => (JSON.parse(v) as { message_id: string }).message_id);
    } finally {
      client.close();
    }
  };
  const enqueued = await waitFor(
    async () => {
      const e = (await decisionsOf(leader.port)).filter((d) => d.outcome === 'enqueued');
      const stored = new Set(await pendingOf(standby.port));
      const inAudit = new Set(await audited());
      return e.length >= 2 && e.every((d) => stored.has(d.message_id) && inAudit.has(d.message_id)) ? e : undefined;
    },
    { what: 'the leader enqueues the starts and they are in etcd, with their decision records', timeoutMs: 15_000, intervalMs: 50 },
  );
  expect(recorder.messages).toEqual([]);
  const killedAt = Date.now();
  leader.d.child.kill('SIGKILL');
  await waitFor(async () => (await standby.status()).leader, { what: 'standby leads', timeoutMs: 15_000, intervalMs: 50 });
  expect(Date.now() - killedAt).toBeLessThanOrEqual(LEASE_S * 1000 + HB + 1000);

  await waitFor(() => recorder.on('hm9000.start').length >= 2, { what: 'the two starts', timeoutMs: 20_000 });
  await new Promise((r) => setTimeout(r, 8 * HB));
  const starts = recorder.on('hm9000.start');
  expect(starts.map((m) => m.body.instance_index).sort()).toEqual([1, 2]);
  expect(new Set(starts.map((m) => m.body.message_id)).size).toBe(2);
  // the new leader acted only after a freshness window of its own heartbeats
  expect(Math.min(...starts.map((m) => m.at)) - killedAt).toBeGreaterThanOrEqual(3 * HB);
  expect(recorder.on('hm9000.stop')).toEqual([]);
  // the new leader sent the starts its predecessor enqueued (same message ids), and took in the
  // decisions its predecessor wrote to etcd
  expect(starts.map((m) => m.body.message_id).sort()).toEqual(enqueued.map((d) => d.message_id).sort());
  const adopted = (await decisionsOf(standby.port)).filter((d) => d.outcome === 'enqueued');
  // (its own later decisions may follow: a start sent with keep-alive 0 is proposed again while the
  // instance has not yet reported)
  expect(adopted.map((d) => d.message_id)).toEqual(expect.arrayContaining(enqueued.map((d) => d.message_id)));
});

it('a leader stopped with SIGTERM resigns at once and the standby takes over without waiting for the lease', async () => {
  cc.setApps([{ guid: 'app-ha', version: 'v1', instances: 1 }]);
  agents.agent('dea-1').run('app-ha', 0, { version: 'v1' });
  const a = await daemon('a');
  const b = await daemon('b');
  const first = await waitFor(async () => ((await a.status()).leader ? 'a' : (await b.status()).leader ? 'b' : null), { what: 'a leader', timeoutMs: 15_000 });
  const [leader, standby] = first === 'a' ? [a, b] : [b, a];
  const stoppedAt = Date.now();
  expect((await leader.d.stop('SIGTERM')).code).toBe(0);
  await waitFor(async () => (await standby.status()).leader, { what: 'standby leads', timeoutMs: 10_000, intervalMs: 50 });
  expect(Date.now() - stoppedAt).toBeLessThan(LEASE_S * 1000);
});
