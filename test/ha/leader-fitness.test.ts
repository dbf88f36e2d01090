/**
 * Leadership follows the ability to act, with real processes: three `hmgate run` daemons sharing a
 * real etcd and a real nats-server. A daemon whose NATS credentials are refused never leads, not
 * even when the leader resigns ahead of it; a leader cut off from NATS (but not from etcd) resigns
 * within leader.resign_after and a daemon that can act takes over and restarts what vanished.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { HmgateDaemon, statusReader } from '../helpers/hmgate-process.js';
import { freePort, startEtcd, startFakeCC, startNatsServer, waitFor, type EtcdHandle, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const HB = 500;
const LEASE_S = 2;
/** leader.resign_after's default (2hb): the daemons' configs leave it unset. */
const RESIGN_AFTER = 2 * HB;
const NATS_USER = 'hm';
const NATS_PASSWORD = 'right-password';

type Status = Record<string, any>;
interface Daemon {
  name: string;
  d: HmgateDaemon;
  /** This daemon's id in the election and in leader_id. */
  id: string;
  status: () => Promise<Status>;
}

let dir: string;
let etcd: EtcdHandle;
let cc: FakeCCHandle;
const natsServers: NatsServerHandle[] = [];
const daemons: HmgateDaemon[] = [];
const links: TcpLink[] = [];
const closers: (() => Promise<void>)[] = [];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A loopback TCP relay to one port that the test can cut (every connection closed, new ones
 * refused) and mend: a network path between one daemon and NATS, while etcd stays reachable.
 */
class TcpLink {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  static async open(targetPort: number): Promise<TcpLink> {
    const link = new TcpLink(await freePort(), targetPort);
    await link.listen();
    links.push(link);
    return link;
  }

  private listen(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect({ host: '127.0.0.1', port: this.targetPort });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  /** Closes every connection and refuses new ones. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise((r) => server.close(r));
  }

  /** Accepts connections again on the same port. */
  async mend(): Promise<void> {
    if (!this.server) await this.listen();
  }
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-fitness-'));
  [etcd, cc] = await Promise.all([startEtcd(), startFakeCC({ apps: [] })]);
});

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop('SIGKILL');
  for (const close of closers.splice(0)) await close();
  for (const link of links.splice(0)) await link.cut();
  await Promise.all([cc.stop(), etcd.stop(), ...natsServers.splice(0).map((n) => n.stop())]);
  await rm(dir, { recursive: true, force: true });
});

async function daemon(name: string, bus: { url: string; user?: string; password?: string }): Promise<Daemon> {
  const port = await freePort();
  const file = join(dir, `${name}.yaml`);
  const auth = bus.user ? `, user: ${bus.user}, password: ${bus.password}` : '';
  await writeFile(
    file,
    [
      'extends: hm9000',
      'foundation: fitness',
      `heartbeat_interval: ${HB}ms`,
      `leader: { ttl: ${LEASE_S}s }`,
      `store: { plugin: etcd, endpoints: ["${etcd.endpoint}"], prefix: /fitness }`,
      `bus: { servers: ["${bus.url}"]${auth}, connect_timeout: 1s }`,
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
  return { name, d, id: `${hostname()}:${d.child.pid}`, status };
}

/** Polls every daemon's status until stopped; remembers each one that ever said it leads. */
function watchLeaders(all: Daemon[]): { ledOnce: Set<string>; stop: () => Promise<void> } {
  const ledOnce = new Set<string>();
  let on = true;
  const loop = (async () => {
    while (on) {
      for (const x of all) {
        if (!x.d.running) continue;
        const s = await x.status().catch(() => null);
        if (s?.leader) ledOnce.add(x.name);
      }
      await sleep(50);
    }
  })();
  return {
    ledOnce,
    stop: async () => {
      on = false;
      await loop;
    },
  };
}

const messages = (d: Daemon): string[] => d.d.logs().map((l) => String(l.msg));

it('a daemon whose NATS credentials are refused never leads: when the leader resigns, the healthy standby takes over', async () => {
  const nats = await startNatsServer({ user: NATS_USER, password: NATS_PASSWORD });
  natsServers.push(nats);
  const good = { url: nats.url, user: NATS_USER, password: NATS_PASSWORD };

  const a = await daemon('a', good);
  await waitFor(async () => (await a.status()).leader, { what: 'a leads', timeoutMs: 15_000 });
  // Started second, so its place in the election would come right after the leader's.
  const refused = await daemon('refused', { ...good, password: 'wrong-password' });
  await waitFor(async () => /authorization/.test(String((await refused.status()).stages.bus.last_error)), {
    what: 'NATS refusing the credentials',
    timeoutMs: 10_000,
  });
  await sleep(RESIGN_AFTER + 500);
  const b = await daemon('b', good);
  await waitFor(async () => (await b.status()).stages.bus.healthy, { what: 'b connected to NATS', timeoutMs: 10_000 });
  await sleep(1_000);
  const watch = watchLeaders([a, refused, b]);
  closers.push(watch.stop);

  const stoppedAt = Date.now();
  expect((await a.d.stop('SIGTERM')).code).toBe(0);
  await waitFor(async () => (await b.status()).leader, { what: 'b leads', timeoutMs: LEASE_S * 1000 + HB + 5_000, intervalMs: 50 });
  const takeoverMs = Date.now() - stoppedAt;
  console.log(`refused credentials: b led ${takeoverMs} ms after the leader was stopped`);
  expect(takeoverMs).toBeLessThanOrEqual(LEASE_S * 1000 + HB);

  // It stays that way, and everyone agrees who leads.
  await sleep(3 * RESIGN_AFTER + LEASE_S * 1000);
  await watch.stop();
  expect(watch.ledOnce.has('refused')).toBe(false);
  const rs = await refused.status();
  expect(rs.leader).toBe(false);
  expect(rs.leader_id).toBe(b.id);
  expect(rs.candidate).toBe(false);
  expect(String(rs.not_candidate_because)).toMatch(/not connected to NATS \(authorization refused/);
  expect(await b.status()).toMatchObject({ leader: true, leader_id: b.id, candidate: true, not_candidate_because: null });
  expect(messages(refused).some((m) => m.startsWith('this daemon leads'))).toBe(false);
  expect(messages(refused).filter((m) => m.startsWith('not a candidate for leadership: not connected to NATS'))).toHaveLength(1);
}, 90_000);

it('a leader cut off from NATS but not from etcd resigns within resign_after, and a daemon that can act leads and restarts what vanished', async () => {
  const nats = await startNatsServer();
  natsServers.push(nats);
  const agents = await SimAgents.start(nats.url, HB);
  closers.push(() => agents.stop());
  const recorder = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
  closers.push(() => recorder.stop());
  cc.setApps([{ guid: 'app-f', version: 'v1', instances: 2 }]);
  const dea = agents.agent('dea-1');
  dea.run('app-f', 0);
  const vanishing = dea.run('app-f', 1);
  agents.obey('dea-2');

  // a reaches NATS only through a link the test can cut; the others reach it directly.
  const link = await TcpLink.open(nats.port);
  const a = await daemon('a', { url: `nats://127.0.0.1:${link.port}` });
  await waitFor(
    async () => {
      const s = await a.status();
      return s.leader && s.actual.fresh && s.desired.fresh;
    },
    { what: 'a leads, fresh', timeoutMs: 20_000 },
  );
  const b = await daemon('b', { url: nats.url });
  const c = await daemon('c', { url: nats.url });
  for (const x of [b, c]) await waitFor(async () => (await x.status()).stages.bus.healthy, { what: `${x.name} connected to NATS`, timeoutMs: 10_000 });
  await sleep(4 * HB);
  expect(recorder.messages).toEqual([]);

  const cutAt = Date.now();
  await link.cut();
  dea.remove(vanishing.instance);
  await waitFor(async () => !(await a.status()).leader, { what: 'a resigns', timeoutMs: RESIGN_AFTER + LEASE_S * 1000 + 5_000, intervalMs: 50 });
  const resignMs = Date.now() - cutAt;
  const next = await waitFor(
    async () => {
      for (const x of [b, c]) if ((await x.status()).leader) return x;
      return null;
    },
    { what: 'b or c leads', timeoutMs: LEASE_S * 1000 + HB + 5_000, intervalMs: 50 },
  );
  const takeoverMs = Date.now() - cutAt;
  console.log(`NATS cut off: a resigned after ${resignMs} ms, ${next.name} led after ${takeoverMs} ms`);
  // resign_after, plus a check interval, a status poll and slack; well below the lease.
  expect(resignMs).toBeLessThanOrEqual(RESIGN_AFTER + LEASE_S * 1000);
  expect(takeoverMs).toBeLessThanOrEqual(RESIGN_AFTER + LEASE_S * 1000 + HB);
  // One line says why, naming NATS.
  const why = messages(a).filter((m) => m.startsWith('this daemon no longer leads'));
  expect(why).toHaveLength(1);
  expect(why[0]).toMatch(/not connected to NATS .* longer than leader\.resign_after/);

  // The new leader acts: the vanished index is started, once.
  await waitFor(() => recorder.on('hm9000.start').length >= 1, { what: 'the start of the vanished index', timeoutMs: 20_000 });
  await sleep(6 * HB);
  expect(recorder.on('hm9000.start').map((m) => [m.body.droplet, m.body.instance_index])).toEqual([['app-f', 1]]);
  expect(recorder.on('hm9000.stop')).toEqual([]);

  // a stays out while it cannot reach NATS and campaigns again once it can, behind the leader.
  const out = await a.status();
  expect(out).toMatchObject({ leader: false, candidate: false, leader_id: next.id });
  expect(String(out.not_candidate_because)).toMatch(/not connected to NATS/);
  await link.mend();
  await waitFor(async () => (await a.status()).candidate === true, { what: 'a a candidate again', timeoutMs: 15_000 });
  await sleep(LEASE_S * 1000);
  expect((await a.status()).leader).toBe(false);
  expect((await next.status()).leader).toBe(true);
}, 120_000);
