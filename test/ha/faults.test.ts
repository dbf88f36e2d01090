/**
 * Faults under high availability, with real processes: two `hmgate run` daemons sharing an etcd
 * store, a real nats-server, simulated agents that carry out the orders, and a fake Cloud
 * Controller. etcd unreachable, nats-server restarted, the CC bulk API failing: while a fault
 * lasts nothing is sent, the status says why, and afterwards every order is sent exactly once —
 * never a wrong or duplicate start or stop.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { SimAgents, SubjectRecorder, type Recorded } from '../helpers/agents.js';
import { HmgateDaemon, statusReader } from '../helpers/hmgate-process.js';
import { freePort, startEtcd, startFakeCC, startNatsServer, waitFor, type EtcdHandle, type FakeCCHandle, type NatsServerHandle } from '../helpers/index.js';

const HB = 500;
const LEASE_S = 2;
/** freshness.actual_ttl of the hm9000 preset (3hb) and desired_ttl (12hb). */
const ACTUAL_TTL = 3 * HB;
const DESIRED_TTL = 12 * HB;
let dir: string;
let etcd: EtcdHandle;
let nats: NatsServerHandle;
let cc: FakeCCHandle;
let agents: SimAgents;
let recorder: SubjectRecorder;
const daemons: HmgateDaemon[] = [];

type Status = Record<string, any>;
interface Daemon {
  name: string;
  d: HmgateDaemon;
  status: () => Promise<Status>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-faults-'));
  [etcd, nats, cc] = await Promise.all([startEtcd(), startNatsServer(), startFakeCC({ apps: [] })]);
  agents = await SimAgents.start(nats.url, HB);
  recorder = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
});

afterEach(async () => {
  etcd.resume();
  for (const d of daemons.splice(0)) await d.stop('SIGKILL');
  await agents.stop();
  await recorder.stop();
  await Promise.all([cc.stop(), nats.stop(), etcd.stop()]);
  await rm(dir, { recursive: true, force: true });
});

async function daemon(name: string): Promise<Daemon> {
  const port = await freePort();
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      'extends: hm9000',
      `foundation: faults`,
      `heartbeat_interval: ${HB}ms`,
      `leader: { ttl: ${LEASE_S}s }`,
      `store: { plugin: etcd, endpoints: ["${etcd.endpoint}"], prefix: /faults, dial_timeout: 1s }`,
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
  return { name, d, status };
}

/** Both daemons, once one of them leads and is fresh (actual and desired). */
async function foundation(): Promise<{ leader: Daemon; standby: Daemon; both: Daemon[] }> {
  const a = await daemon('a');
  const b = await daemon('b');
  const leaderOf = async () => ((await a.status()).leader ? a : (await b.status()).leader ? b : null);
  const leader = await waitFor(leaderOf, { what: 'a leader', timeoutMs: 15_000 });
  await waitFor(
    async () => {
      const s = await leader.status();
      return s.leader && s.actual.fresh && s.desired.fresh;
    },
    { what: 'leader fresh', timeoutMs: 15_000 },
  );
  return { leader, standby: leader === a ? b : a, both: [a, b] };
}

async function currentLeader(both: Daemon[]): Promise<Daemon | null> {
  for (const d of both) if ((await d.status().catch(() => ({}) as Status)).leader) return d;
  return null;
}

/** Messages recorded in [from, to). */
const between = (from: number, to: number): Recorded[] => recorder.messages.filter((m) => m.at >= from && m.at < to);

/** Every start sent once (no two with the same message id nor the same app/index). */
function expectNoDuplicateStarts(): void {
  const starts = recorder.on('hm9000.start');
  expect(new Set(starts.map((m) => m.body.message_id)).size).toBe(starts.length);
  const slots = starts.map((m) => `${m.body.droplet}/${m.body.version}/${m.body.instance_index}`);
  expect(new Set(slots).size).toBe(slots.length);
}

it('etcd unreachable for 3 hb: nothing is sent meanwhile, the status names etcd, and a missing instance is started once afterwards', async () => {
  cc.setApps([{ guid: 'app-e', version: 'v1', instances: 3 }]);
  const dea = agents.agent('dea-1');
  dea.run('app-e', 0);
  dea.run('app-e', 1);
  const gone = dea.run('app-e', 2);
  agents.obey('dea-2');
  const { leader, both } = await foundation();
  await sleep(4 * HB); // longer than the missing grace period: a wrongly seen gap would show now
  expect(recorder.messages).toEqual([]);

  // etcd stops answering (SIGSTOP keeps its data and its sockets); an instance goes missing meanwhile.
  const pausedAt = Date.now();
  etcd.pause();
  dea.remove(gone.instance);
  // The leader's status names etcd: its store stage's last error, and the reason actual state is not fresh.
  const seen = await waitFor(
    async () => {
      const s = await leader.status();
      const store = s.stages.store;
      return !store.healthy && /etcd/.test(String(store.last_error)) && s.actual.fresh === false && /etcd/.test(String(s.actual.reason)) ? s : null;
    },
    { what: 'the leader status naming etcd', timeoutMs: 10_000, intervalMs: 100 },
  );
  expect(seen.stages.store.last_error).toContain(etcd.endpoint.replace(/^http:\/\//, ''));
  const remaining = pausedAt + 3 * HB - Date.now();
  if (remaining > 0) await sleep(remaining);
  etcd.resume();
  const resumedAt = Date.now();
  expect(between(pausedAt, resumedAt)).toEqual([]);

  // Back: once a leader is fresh again (a full freshness window after etcd came back), the missing
  // index is started, once.
  await waitFor(() => recorder.on('hm9000.start').length >= 1, { what: 'the start of the missing index', timeoutMs: 20_000 });
  await sleep(8 * HB);
  const starts = recorder.on('hm9000.start');
  expect(starts.map((m) => [m.body.droplet, m.body.instance_index])).toEqual([['app-e', 2]]);
  expect(starts[0]!.at - resumedAt).toBeGreaterThanOrEqual(ACTUAL_TTL);
  expectNoDuplicateStarts();
  expect(recorder.on('hm9000.stop')).toEqual([]);
  // Leadership may have changed hands during the pause; a new leader first waits for its own
  // freshness window, so the leader of now becomes fresh and healthy within a few heartbeats.
  const s = await waitFor(
    async () => {
      const now = await currentLeader(both);
      const st = now ? await now.status() : undefined;
      return st && st.actual.fresh === true && st.stages.store.healthy === true ? st : undefined;
    },
    { what: 'a fresh, healthy leader after etcd is back', timeoutMs: 10_000, intervalMs: 100 },
  );
  expect(s.leader).toBe(true);
}, 60_000);

it('nats-server restarted on the same port: the daemons reconnect, freshness is lost and regained, and nothing wrong or duplicate is sent', async () => {
  cc.setApps([{ guid: 'app-n', version: 'v1', instances: 2 }]);
  const dea = agents.agent('dea-1');
  dea.run('app-n', 0);
  dea.run('app-n', 1);
  agents.obey('dea-2');
  const { both } = await foundation();
  await sleep(4 * HB);
  expect(recorder.messages).toEqual([]);

  // Watch every daemon's actual freshness through the restart.
  const observed = new Map<string, boolean[]>(both.map((d) => [d.name, []]));
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      for (const d of both) {
        const s = await d.status().catch(() => null);
        if (s?.leader) observed.get(d.name)!.push(Boolean(s.actual.fresh));
      }
      await sleep(50);
    }
  })();

  const restartedAt = Date.now();
  await nats.restart();
  // The daemons reconnect: their bus stage is healthy again and the leader is fresh again.
  // (fresh again after a loss was seen: a reconnect faster than the marker's TTL is still fresh
  // from before the restart for a moment)
  await waitFor(
    async () => {
      for (const d of both) if (!(await d.status()).stages.bus.healthy) return false;
      const l = await currentLeader(both);
      return l !== null && [...observed.values()].some((seen) => seen.includes(false)) && (await l.status()).actual.fresh;
    },
    { what: 'reconnected, and fresh again after freshness was lost', timeoutMs: 20_000, intervalMs: 100 },
  );
  const freshAgainAt = Date.now();
  // Let the missing/extras/duplicates grace periods pass on the regained state.
  await sleep(8 * HB);
  watching = false;
  await watcher;

  const seq = [...observed.values()].flat();
  // lost (a false after the restart) and regained (a true after that)
  const lostAt = seq.indexOf(false);
  expect(lostAt).toBeGreaterThanOrEqual(0);
  expect(seq.slice(lostAt).includes(true)).toBe(true);
  expect(freshAgainAt - restartedAt).toBeGreaterThanOrEqual(ACTUAL_TTL);

  // Nothing extra in the foundation: no stop at all; and nothing was missing: no start.
  expect(recorder.on('hm9000.stop')).toEqual([]);
  expect(recorder.on('hm9000.start')).toEqual([]);
  expectNoDuplicateStarts();
}, 60_000);

it('CC bulk API down: desired state goes stale after its TTL and nothing is sent when an instance goes missing after that', async () => {
  cc.setApps([{ guid: 'app-c', version: 'v1', instances: 2 }]);
  const dea = agents.agent('dea-1');
  dea.run('app-c', 0);
  const gone = dea.run('app-c', 1);
  agents.obey('dea-2');
  const { leader, both } = await foundation();
  await sleep(2 * HB);
  expect(recorder.messages).toEqual([]);

  const failedAt = Date.now();
  cc.fail('500');
  const stale = await waitFor(
    async () => {
      const l = await currentLeader(both);
      const s = l ? await l.status() : null;
      return s && s.desired.fresh === false ? s : null;
    },
    { what: 'desired state stale', timeoutMs: DESIRED_TTL + 8 * HB, intervalMs: 100 },
  );
  const staleAt = Date.now();
  // Not before its TTL: the last complete fetch keeps it fresh for desired_ttl.
  expect(staleAt - failedAt).toBeGreaterThanOrEqual(DESIRED_TTL - 6 * HB);
  expect(String(stale.desired.reason)).toMatch(/500/); // the failed fetch, in words
  expect(stale.actual.fresh).toBe(true);

  dea.remove(gone.instance);
  await sleep(10 * HB); // well past the missing grace period
  expect(recorder.messages).toEqual([]);
  const s = await leader.status();
  expect(s.desired.fresh).toBe(false);
  expect(s.counters.cycles_not_fresh).toBeGreaterThan(0);
  expect(cc.requests.some((r) => r.path.startsWith('/bulk'))).toBe(true);
}, 60_000);
