/**
 * The etcd store against a real etcd (one per file, a fresh key prefix per test): the store
 * contract on a virtual clock, then what only etcd has — the key layout and its write volume,
 * leases shared between agents, two daemons sharing state, an etcd restart, errors while etcd does
 * not answer.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { isPluginDefinition, type StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { startKey, type AgentRecord, type InstanceHeartbeat, type StoreChange } from '../../src/sdk/state.js';
import { startEtcd, waitFor, type EtcdHandle } from '../../test/helpers/index.js';
import { crashCount, describeStoreContract, desiredApp, heartbeat, instance, pendingStart } from '../../test/store-contract.js';
import type { EtcdStoreOptions } from './etcd-store.js';
import etcdPlugin, { dumpRaw, EtcdStore } from './index.js';
import { LeasePool } from './leases.js';

const TTL = 30_000;

let etcd: EtcdHandle;
let seq = 0;
const opened: EtcdStore[] = [];
const clients: Etcd3[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterAll(async () => {
  await etcd?.stop();
});

afterEach(async () => {
  if (etcd?.paused) etcd.resume();
  for (const s of opened.splice(0)) await s.stop();
  for (const c of clients.splice(0)) c.close();
});

function freshPrefix(): string {
  return `/hmgate-test-${process.pid}-${++seq}`;
}

function newStore(clock: VirtualClock, prefix = freshPrefix(), timeoutMs = 2_000, options: EtcdStoreOptions = {}): EtcdStore {
  return new EtcdStore({ endpoints: [etcd.endpoint], prefix, timeoutMs }, clock, {
    onListenerError: (err) =>
      setImmediate(() => {
        throw err;
      }),
    ...options,
  });
}

async function started(clock: VirtualClock, prefix?: string, timeoutMs?: number, options?: EtcdStoreOptions): Promise<EtcdStore> {
  const store = newStore(clock, prefix, timeoutMs, options);
  opened.push(store);
  await store.start();
  return store;
}

function rawClient(): Etcd3 {
  const c = new Etcd3({ hosts: etcd.endpoint });
  clients.push(c);
  return c;
}

async function modRevision(key: string): Promise<number> {
  const res = await rawClient().get(key).exec();
  return Number(res.kvs[0]?.mod_revision ?? 0);
}

describeStoreContract('etcd', async (clock) => {
  const store = newStore(clock);
  return { store };
});

describe('etcd store plugin definition', () => {
  it('is a store plugin named etcd whose options have defaults and reject unknown keys', () => {
    expect(isPluginDefinition(etcdPlugin)).toBe(true);
    expect(etcdPlugin.name).toBe('etcd');
    expect(etcdPlugin.kind).toBe('store');
    const validator = makeValidator({ heartbeatMs: 10_000, convertDurations: true });
    const check = (data: Record<string, unknown>) => ({ problems: validator.validate(etcdPlugin.optionsSchema, data).map((p) => p.message), data });
    expect(check({})).toEqual({
      problems: [],
      data: { endpoints: ['http://127.0.0.1:2379'], prefix: '/hmgate', dial_timeout: 5_000, max_request_bytes: 1_572_864 },
    });
    expect(
      check({ endpoints: ['https://user:pw@e:2379'], prefix: '/x', dial_timeout: '250ms', username: 'u', password: 'p', ca_file: 'ca.pem' }).problems,
    ).toEqual([]);
    expect(check({ nope: 1 }).problems).toHaveLength(1);
    expect(check({ endpoints: ['e:2379'] }).problems).toHaveLength(1);
    expect(check({ prefix: '/x/' }).problems).toHaveLength(1);
    expect(check({ dial_timeout: '1hb' }).problems).toHaveLength(1);
    for (const key of Object.keys(etcdPlugin.optionsSchema.properties)) {
      expect((etcdPlugin.optionsSchema.properties as Record<string, { description?: string }>)[key]?.description, key).toMatch(/\S/);
    }
  });

  it('creates an EtcdStore on the context clock, and names a missing certificate file', async () => {
    const clock = new VirtualClock(42);
    const ctx = { clock, logger: { error: vi.fn(), warn: vi.fn(), info: vi.fn(), debug: vi.fn() }, configDir: '/nonexistent-dir' } as unknown as StageContext;
    const store = await etcdPlugin.create({ endpoints: [etcd.endpoint], prefix: freshPrefix(), dial_timeout: 2_000, max_request_bytes: 1_572_864 }, ctx);
    expect(store).toBeInstanceOf(EtcdStore);
    opened.push(store);
    await store.start();
    await store.bumpFreshness('actual', 1_000);
    expect((await store.snapshot()).freshness.actual).toEqual({ timestamp: 42, expiresAt: 1_042 });
    expect(() =>
      etcdPlugin.create({ endpoints: [etcd.endpoint], prefix: '/x', dial_timeout: 2_000, max_request_bytes: 1_572_864, ca_file: 'ca.pem' }, ctx),
    ).toThrow(/ca_file \/nonexistent-dir\/ca\.pem/);
  });
});

describe('records too large for one request', () => {
  it('two refused agents name the first "and 1 more agent"', async () => {
    const clock = new VirtualClock(1_000_000);
    const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: freshPrefix(), timeoutMs: 2_000, maxRequestBytes: 65_536 }, clock);
    opened.push(store);
    await store.start();
    const big = (agent: string) =>
      heartbeat(
        agent,
        Array.from({ length: 2_000 }, (_, i) => instance(agent, `app-${i}`, i)),
      );
    await expect(store.saveHeartbeats([big('dea-1'), big('dea-2')], TTL)).rejects.toThrow(
      /is too large for .* \(and 1 more agent\): its heartbeats are not saved$/,
    );
  });
});

describe('etcd layout', () => {
  it('keeps one key per agent, all agents of a save on one shared lease, and prints the raw layout', async () => {
    const clock = new VirtualClock(1_000_000);
    const prefix = freshPrefix();
    const store = await started(clock, prefix);
    const batch = Array.from({ length: 50 }, (_, i) => heartbeat(`dea-${i}`, [instance(`dea-${i}`, 'app-a', i), instance(`dea-${i}`, 'app-b', i)]));
    await store.saveHeartbeats(batch, TTL);
    await store.putPendingStarts([pendingStart('app-a', 3)]);
    await store.bumpFreshness('actual', TTL);

    const lines = await dumpRaw(store);
    const agentLines = lines.filter((l) => l.startsWith(`${prefix}/agents/`));
    expect(agentLines).toHaveLength(50);
    // 100 instances, 50 keys: no key per instance.
    expect(agentLines.filter((l) => l.includes('"app-a-v1-')).length).toBe(50);
    const leases = new Set(agentLines.map((l) => /\(lease ([0-9a-f]+) ttl \d+s\)$/.exec(l)?.[1]));
    expect(leases.size).toBe(1);
    expect([...leases][0]).toBeDefined();
    // ttl 30 s: a record's lease lives 12 × 30 s + a 45 s bucket (its deltas vouch 3 × 30 s ahead on it).
    expect(agentLines[0]).toMatch(/ttl (40[0-5]|3[6-9]\d)s\)$/);
    expect(lines.find((l) => l.startsWith(`${prefix}/starts/${startKey({ app: 'app-a', version: 'v1', index: 3 })}  `))).toMatch(/\(no lease\)$/);
    expect(lines.find((l) => l.startsWith(`${prefix}/fresh/actual  `))).toMatch(
      /^\S+ {2}\{"timestamp":1000000,"expiresAt":1030000\} {2}\(lease [0-9a-f]+ ttl \d+s\)$/,
    );
    // Agents (360 s) and the marker (30 s) are two lease classes.
    expect(store.stats.leaseGrants).toBe(2);
  });

  it('writes an agent only when its instances change, and renews an unchanged one once per 2 × ttl', async () => {
    const clock = new VirtualClock(1_000_000);
    const prefix = freshPrefix();
    const store = await started(clock, prefix);
    const key = `${prefix}/agents/dea-1`;
    const hb = heartbeat('dea-1', [instance('dea-1', 'app-a', 0), instance('dea-1', 'app-a', 1)]);
    await store.saveHeartbeats([hb], TTL);
    const first = await modRevision(key);
    const putsAfterFirst = store.stats.puts;
    expect(first).toBeGreaterThan(0);

    // Heartbeats every 10 s (HM9000: ttl = 3 heartbeats) for 2 minutes, nothing changing.
    let renewals = 0;
    let last = first;
    for (let t = 10_000; t <= 120_000; t += 10_000) {
      await clock.advanceToAsync(1_000_000 + t);
      expect((await store.saveHeartbeats([hb], TTL)).changed).toEqual([]);
      const rev = await modRevision(key);
      if (rev !== last) renewals++;
      last = rev;
      expect((await store.getAgents()).get('dea-1')?.expiresAt).toBe(1_000_000 + t + TTL);
    }
    // 12 heartbeats after the first save, one put: at 70 s, the first save whose deadline (t + 30 s)
    // is past the 90 s the first write vouched for. The next would come at 130 s.
    expect(renewals).toBe(1);
    expect(store.stats.puts - putsAfterFirst).toBe(1);

    // A change is one put.
    const before = store.stats.puts;
    const changed = await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0, 'CRASHED'), instance('dea-1', 'app-a', 1)])], TTL);
    expect(changed.changed).toEqual(['dea-1']);
    expect(store.stats.puts - before).toBe(1);
    expect(await modRevision(key)).toBeGreaterThan(last);
  });

  it('deletes the key of an expired agent (the TTL rule on the store clock), unless it was rewritten', async () => {
    const clock = new VirtualClock(1_000_000);
    const prefix = freshPrefix();
    const store = await started(clock, prefix);
    await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)]), heartbeat('dea-2', [])], TTL);
    await clock.advanceAsync(20_000);
    await store.saveHeartbeats([heartbeat('dea-2', [])], TTL);
    await clock.advanceAsync(10_000);
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-2']);
    await waitFor(async () => (await rawClient().get(`${prefix}/agents/dea-1`).string()) === null, { what: 'the expired key to be deleted' });
    expect(await rawClient().get(`${prefix}/agents/dea-2`).string()).not.toBeNull();
  });

  it('keeps the desired state in a few chunks replaced in one transaction, rewriting only changed chunks', async () => {
    const clock = new VirtualClock(1_000_000);
    const prefix = freshPrefix();
    const store = await started(clock, prefix);
    const apps = Array.from({ length: 3_000 }, (_, i) =>
      desiredApp(`app-${String(i).padStart(5, '0')}-5f0c2a7e-1b1d-4c53-9d0b-3c2e6f1a2b3c`, 'v1', 1 + (i % 4)),
    );
    const txns = store.stats.txns;
    await store.replaceDesired(apps);
    expect(store.stats.txns - txns).toBe(1);
    const meta = JSON.parse((await rawClient().get(`${prefix}/desired/meta`).string())!) as { chunks: number; apps: number };
    expect(meta.apps).toBe(3_000);
    expect(meta.chunks).toBeGreaterThan(1);
    expect(meta.chunks).toBeLessThanOrEqual(64);
    const keys = await rawClient().getAll().prefix(`${prefix}/desired/`).keys();
    expect(keys).toHaveLength(meta.chunks + 1);

    // One app changes: one chunk and the meta are written.
    const puts = store.stats.puts;
    await store.replaceDesired(apps.map((a, i) => (i === 7 ? { ...a, instances: 9 } : a)));
    expect(store.stats.puts - puts).toBe(2);
    expect((await store.getDesired()).get(appKey(apps[7]!.guid, 'v1'))?.instances).toBe(9);
    // The same set again: nothing written, still reported.
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    const txns2 = store.stats.txns;
    await store.replaceDesired(apps.map((a, i) => (i === 7 ? { ...a, instances: 9 } : a)));
    expect(store.stats.txns).toBe(txns2);
    expect(changes).toEqual([{ kind: 'desired' }]);

    // Another daemon reads the same set.
    const other = await started(new VirtualClock(1_000_000), prefix);
    expect((await other.getDesired()).size).toBe(3_000);
    expect((await other.getDesired()).get(appKey(apps[7]!.guid, 'v1'))?.instances).toBe(9);
  });

  it('groups leases by lifetime and time bucket', async () => {
    let now = 0;
    const ttls: number[] = [];
    let id = 0;
    const pool = new LeasePool(
      async (ttl) => {
        ttls.push(ttl);
        return String(++id);
      },
      () => now,
    );
    expect((await pool.leaseFor(90_000)).id).toBe('1');
    now = 11_999;
    expect((await pool.leaseFor(89_001)).id).toBe('1');
    expect((await pool.leaseFor(30_000)).id).toBe('2');
    now = 12_001;
    expect((await pool.leaseFor(90_000)).id).toBe('3');
    expect(ttls).toEqual([90 + 12, 30 + 4, 90 + 12]);
    expect((await pool.leaseFor(1)).ttlSeconds).toBe(2);
  });
});

/** An agent of `n` instances over four apps (a record of ~4.7 KB at 100), with some of them changed. */
function bigHeartbeat(agent: string, changed: Record<number, Partial<InstanceHeartbeat>> = {}, n = 100) {
  return heartbeat(
    agent,
    Array.from({ length: n }, (_, i) => ({ ...instance(agent, `app-${i % 4}`, i), ...changed[i] })),
  );
}

const CRASHED = { state: 'CRASHED', stateTimestamp: 1_700_000_100 };

/** Indices of the agent's instances that are not RUNNING, sorted. */
function notRunning(record: AgentRecord | undefined): number[] | undefined {
  return record?.instances
    .filter((i) => i.state !== 'RUNNING')
    .map((i) => i.index)
    .sort((a, b) => a - b);
}

function byInstance(list: readonly InstanceHeartbeat[]): InstanceHeartbeat[] {
  return [...list].sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
}

async function rawKey(key: string): Promise<{ value: string; mod: number; lease: string } | undefined> {
  const kv = (await rawClient().get(key).exec()).kvs[0];
  return kv && { value: kv.value.toString(), mod: Number(kv.mod_revision), lease: kv.lease };
}

describe('agent records and deltas', () => {
  it('a state-only change puts only the agent’s delta, on its record’s lease; the writer, a watching store and one started later read the merged instances', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    const b = await started(new VirtualClock(1_000_000), prefix);
    const seenByB: StoreChange[] = [];
    b.onChange((c) => seenByB.push(c));
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    expect(record.value.length).toBeGreaterThan(4_000);

    const puts = a.stats.puts;
    const bytes = a.stats.putBytes;
    const hb = bigHeartbeat('dea-1', { 3: CRASHED, 42: { ...CRASHED, index: 7 } });
    expect((await a.saveHeartbeats([hb], TTL)).changed).toEqual(['dea-1']);
    expect(a.stats.puts - puts).toBe(1);
    // Key and value of two rows, against the record's 4.7 KB.
    expect(a.stats.putBytes - bytes).toBeLessThan(200);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(record.mod);
    const delta = (await rawKey(`${prefix}/agents/dea-1/d`))!;
    expect(JSON.parse(delta.value)).toEqual({
      b: record.mod,
      x: 1_000_000 + 3 * TTL,
      i: [
        [3, 'CRASHED', 1_700_000_100],
        [42, 'CRASHED', 1_700_000_100, 7],
      ],
    });
    expect(delta.lease).toBe(record.lease);

    expect(byInstance((await a.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(hb.instances));
    await waitFor(async () => notRunning((await b.getAgents()).get('dea-1'))?.length === 2, { what: 'b to see the delta' });
    expect(byInstance((await b.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(hb.instances));
    expect((await b.snapshot()).instances.get(appKey('app-3', 'v1'))?.find((i) => i.index === 3)?.state).toBe('CRASHED');
    // One event per write: the record, then the delta naming the two apps that changed.
    const agentEvents = seenByB.filter((c) => c.kind === 'agent');
    expect(agentEvents).toHaveLength(2);
    expect([...(agentEvents[1] as { apps: string[] }).apps].sort()).toEqual([appKey('app-2', 'v1'), appKey('app-3', 'v1')]);

    const c = await started(new VirtualClock(1_000_000), prefix);
    expect(byInstance((await c.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(hb.instances));
    const lines = await dumpRaw(c);
    const merged = lines.find((l) => l.startsWith(`${prefix}/agents/dea-1 (merged)  `));
    expect(merged).toBeDefined();
    expect(merged!.match(/"CRASHED"/g)).toHaveLength(2);
    expect(lines.indexOf(merged!)).toBe(lines.findIndex((l) => l.startsWith(`${prefix}/agents/dea-1/d  `)) + 1);
  });

  it('a set change (an instance restarted under a new guid, one gone, one added) is a delta too; a change back leaves an empty delta', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    const b = await started(new VirtualClock(1_000_000), prefix);
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 5: CRASHED })], TTL);
    // Back to the record's states: an empty delta (it still vouches), the record untouched.
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    expect(JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value).i).toEqual([]);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(record.mod);
    expect(notRunning((await a.getAgents()).get('dea-1'))).toEqual([]);
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 5: CRASHED })], TTL);
    await waitFor(async () => notRunning((await b.getAgents()).get('dea-1'))?.[0] === 5, { what: 'b to see instance 5 crash' });

    // Instance 7 restarted under a new guid, 9 gone, a 101st added: one delta put, the record kept.
    const seenByB: StoreChange[] = [];
    b.onChange((c) => seenByB.push(c));
    const [puts, bytes] = [a.stats.puts, a.stats.putBytes];
    const changed = bigHeartbeat('dea-1', { 5: CRASHED, 7: { instance: 'restarted-7', state: 'STARTING' } }, 101);
    changed.instances.splice(9, 1);
    await a.saveHeartbeats([changed], TTL);
    expect(a.stats.puts - puts).toBe(1);
    expect(a.stats.putBytes - bytes).toBeLessThan(400);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(record.mod);
    const delta = JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value);
    expect(delta).toMatchObject({
      b: record.mod,
      i: [[5, 'CRASHED', 1_700_000_100]],
      r: [7, 9],
      p: [
        ['app-3', 'v1'],
        ['app-0', 'v1'],
      ],
    });
    expect(delta.a.map((row: unknown[]) => row[1])).toEqual(['restarted-7', 'app-0-v1-100@dea-1']);
    expect(byInstance((await a.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(changed.instances));
    await waitFor(async () => (await b.getAgents()).get('dea-1')?.instances.some((i) => i.instance === 'restarted-7') === true, {
      what: 'b to see the restart',
    });
    expect(byInstance((await b.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(changed.instances));
    // One event naming the apps of the instances gone and added.
    expect(seenByB).toHaveLength(1);
    expect([...(seenByB[0] as { apps: string[] }).apps].sort()).toEqual([appKey('app-0', 'v1'), appKey('app-1', 'v1'), appKey('app-3', 'v1')]);
    // A daemon starting now reads the record and its delta as one.
    const c = await started(new VirtualClock(1_000_000), prefix);
    expect(byInstance((await c.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(changed.instances));
    expect(
      (await c.snapshot()).instances
        .get(appKey('app-1', 'v1'))
        ?.map((i) => i.index)
        .sort((x, y) => x - y),
    ).toContain(9 - 4 * 2);

    // The next state change is a delta of the same record, the restarted instance still among its additions.
    const running = bigHeartbeat('dea-1', { 6: CRASHED, 7: { instance: 'restarted-7' } }, 101);
    running.instances.splice(9, 1);
    await a.saveHeartbeats([running], TTL);
    expect(JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value)).toMatchObject({ b: record.mod, i: [[6, 'CRASHED', 1_700_000_100]], r: [7, 9] });
    await waitFor(async () => notRunning((await b.getAgents()).get('dea-1'))?.join() === '6', { what: 'b to see the second delta' });
    expect(byInstance((await b.getAgents()).get('dea-1')!.instances)).toEqual(byInstance(running.instances));
  });

  it('folds a delta that would exceed an eighth of its record into a new record', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    const ten = Object.fromEntries(Array.from({ length: 10 }, (_, i) => [i * 10, CRASHED]));
    await a.saveHeartbeats([bigHeartbeat('dea-1', ten)], TTL);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(record.mod);
    expect(JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value).i).toHaveLength(10);

    // 40 rows of ~26 bytes > 4.7 KB / 8.
    const forty = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [i * 2, CRASHED]));
    await a.saveHeartbeats([bigHeartbeat('dea-1', forty)], TTL);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBeGreaterThan(record.mod);
    expect(await rawKey(`${prefix}/agents/dea-1/d`)).toBeUndefined();
    expect(notRunning((await a.getAgents()).get('dea-1'))).toHaveLength(40);

    // Restarts fold too: 20 new guids (~80 bytes each) pass an eighth of the record; the record and the
    // delete of its delta go in one transaction.
    const base = (await rawKey(`${prefix}/agents/dea-1`))!;
    const restarts = (k: number) => {
      const c: Record<number, Partial<InstanceHeartbeat>> = { ...forty };
      for (let i = 0; i < k; i++) c[i * 3] = { ...forty[i * 3], instance: `restarted-${i}` };
      return c;
    };
    await a.saveHeartbeats([bigHeartbeat('dea-1', restarts(2))], TTL);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(base.mod);
    expect(JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value).a).toHaveLength(2);
    const [txns, deletes] = [a.stats.txns, a.stats.deletes];
    await a.saveHeartbeats([bigHeartbeat('dea-1', restarts(20))], TTL);
    expect(a.stats.txns - txns).toBe(1);
    expect(a.stats.deletes - deletes).toBe(1);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBeGreaterThan(base.mod);
    expect(await rawKey(`${prefix}/agents/dea-1/d`)).toBeUndefined();
    expect((await a.getAgents()).get('dea-1')!.instances.filter((i) => i.instance.startsWith('restarted-'))).toHaveLength(20);
  });

  it('vouches for an unchanged agent again with an empty delta, not by rewriting its record', async () => {
    const prefix = freshPrefix();
    const clock = new VirtualClock(1_000_000);
    const a = await started(clock, prefix);
    const b = await started(new VirtualClock(1_000_000), prefix);
    const hb = bigHeartbeat('dea-1');
    await a.saveHeartbeats([hb], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    // Unchanged for 70 s: the first save whose deadline the record's x (90 s) does not cover puts an empty delta.
    const puts = a.stats.puts;
    for (let t = 10_000; t <= 70_000; t += 10_000) {
      await clock.advanceToAsync(1_000_000 + t);
      await a.saveHeartbeats([hb], TTL);
    }
    expect(a.stats.puts - puts).toBe(1);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(record.mod);
    expect(JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value)).toEqual({ b: record.mod, x: 1_070_000 + 3 * TTL, i: [] });
    // Another daemon counts the agent present as far as the delta vouches.
    await waitFor(async () => (await b.getAgents()).get('dea-1')?.expiresAt === 1_070_000 + 3 * TTL, { what: 'b to see the new x' });
  });

  it('rewrites each record once per 8 × ttl of real time, each agent at its own phase', async () => {
    const prefix = freshPrefix();
    const clock = new VirtualClock(1_000_000);
    let real = Date.now();
    const a = await started(clock, prefix, undefined, { realNow: () => real });
    const b = await started(new VirtualClock(1_000_000), prefix);
    const names = Array.from({ length: 8 }, (_, i) => `dea-${i}`);
    await a.saveHeartbeats(
      names.map((n) => bigHeartbeat(n)),
      TTL,
    );
    const records = a.stats.recordPuts;
    const deltas = a.stats.deltaPuts;
    const rewrites = new Map<string, number[]>(names.map((n) => [n, []]));
    // Two periods of heartbeats every 10 s (clock and real time alike), instance 1 flipping each time.
    for (let step = 1; step <= 48; step++) {
      real += 10_000;
      await clock.advanceAsync(10_000);
      const before = await Promise.all(names.map((n) => rawKey(`${prefix}/agents/${n}`)));
      await a.saveHeartbeats(
        names.map((n) => bigHeartbeat(n, step % 2 ? { 1: CRASHED } : {})),
        TTL,
      );
      const after = await Promise.all(names.map((n) => rawKey(`${prefix}/agents/${n}`)));
      names.forEach((n, i) => {
        if (after[i]!.mod !== before[i]!.mod) rewrites.get(n)!.push(step);
      });
    }
    for (const [n, steps] of rewrites) {
      expect(steps, n).toHaveLength(2);
      expect(steps[1]! - steps[0]!, n).toBe(24);
    }
    // At different phases: not all in the same save.
    expect(new Set([...rewrites.values()].map((s) => s[0])).size).toBeGreaterThan(1);
    expect(a.stats.recordPuts - records).toBe(16);
    expect(a.stats.deltaPuts - deltas).toBe(8 * 48 - 16);
    await waitFor(async () => notRunning((await b.getAgents()).get('dea-7'))?.length === 0, { what: 'b to follow' });
    expect(byInstance((await b.getAgents()).get('dea-3')!.instances)).toEqual(byInstance(bigHeartbeat('dea-3').instances));
  });

  it('writes a record, not a delta, when the record’s lease might end before what the delta would vouch for', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    // ttl 30 s: the record's lease lives at least 12 × 30 s = 360 s.
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    // A ttl of 100 s vouches 300 s ahead: the lease covers it.
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 1: CRASHED })], 100_000);
    expect((await rawKey(`${prefix}/agents/dea-1`))!.mod).toBe(record.mod);
    expect(await rawKey(`${prefix}/agents/dea-1/d`)).toBeDefined();
    // 200 s vouches 600 s ahead: it does not.
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 1: CRASHED, 2: CRASHED })], 200_000);
    const rewritten = (await rawKey(`${prefix}/agents/dea-1`))!;
    expect(rewritten.mod).toBeGreaterThan(record.mod);
    expect(rewritten.lease).not.toBe(record.lease);
    expect(await rawKey(`${prefix}/agents/dea-1/d`)).toBeUndefined();
    expect(notRunning((await a.getAgents()).get('dea-1'))).toEqual([1, 2]);
  });

  it('etcd’s lease expiry takes the record and its delta at once, and watching stores drop the agent', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    const b = await started(new VirtualClock(1_000_000), prefix);
    // ttl 100 ms: the record's lease is granted for 2 s (1 s + a 1 s bucket). The clocks stand still,
    // so neither store's TTL rule removes the agent: only etcd's lease does.
    await a.saveHeartbeats([bigHeartbeat('dea-1')], 100);
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 7: CRASHED })], 100);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    const delta = (await rawKey(`${prefix}/agents/dea-1/d`))!;
    expect(delta.lease).toBe(record.lease);
    await waitFor(async () => notRunning((await b.getAgents()).get('dea-1'))?.join() === '7', { what: 'b to see the delta' });
    const seenByB: StoreChange[] = [];
    b.onChange((c) => seenByB.push(c));

    await waitFor(async () => (await rawKey(`${prefix}/agents/dea-1`)) === undefined && (await rawKey(`${prefix}/agents/dea-1/d`)) === undefined, {
      what: 'etcd to expire the lease',
      timeoutMs: 10_000,
    });
    await waitFor(async () => !(await b.getAgents()).has('dea-1'), { what: 'b to drop the agent' });
    await waitFor(async () => !(await a.getAgents()).has('dea-1'), { what: 'a to drop the agent' });
    expect((await b.snapshot()).instances.size).toBe(0);
    expect(seenByB).toEqual([{ kind: 'agent', agent: 'dea-1', apps: expect.arrayContaining([appKey('app-0', 'v1'), appKey('app-3', 'v1')]) }]);
  });

  it('ignores a delta of another record revision, in the cache and in dump --raw, and applies one of the record it holds', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    const raw = rawClient();
    const seen: StoreChange[] = [];
    a.onChange((c) => seen.push(c));
    await raw.put(`${prefix}/agents/dea-1/d`).value(JSON.stringify({ b: record.mod - 1, x: 1_000_000, i: [[0, 'CRASHED', 1]] }));
    await waitFor(async () => (await dumpRaw(a)).some((l) => l.startsWith(`${prefix}/agents/dea-1/d (ignored)  `)), { what: 'dump --raw to flag the delta' });
    expect(notRunning((await a.getAgents()).get('dea-1'))).toEqual([]);
    expect(seen).toEqual([]);
    await raw.put(`${prefix}/agents/dea-1/d`).value(JSON.stringify({ b: record.mod, x: 1_000_000, i: [[0, 'CRASHED', 1]] }));
    await waitFor(async () => notRunning((await a.getAgents()).get('dea-1'))?.join() === '0', { what: 'a to apply the delta' });
    expect(seen).toEqual([{ kind: 'agent', agent: 'dea-1', apps: [appKey('app-0', 'v1')] }]);
  });

  it('writes a record, not a delta, over a record another store wrote (only the writer knows its lease)', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 1: CRASHED })], TTL);
    const record = (await rawKey(`${prefix}/agents/dea-1`))!;
    const next = await started(new VirtualClock(1_000_000), prefix);
    expect(notRunning((await next.getAgents()).get('dea-1'))).toEqual([1]);
    await next.saveHeartbeats([bigHeartbeat('dea-1', { 1: CRASHED, 2: CRASHED })], TTL);
    const rewritten = (await rawKey(`${prefix}/agents/dea-1`))!;
    expect(rewritten.mod).toBeGreaterThan(record.mod);
    expect(JSON.parse(rewritten.value).w).toBe(next.writerId);
    expect(await rawKey(`${prefix}/agents/dea-1/d`)).toBeUndefined();
    // From then on its own deltas.
    await next.saveHeartbeats([bigHeartbeat('dea-1', { 2: CRASHED })], TTL);
    expect(JSON.parse((await rawKey(`${prefix}/agents/dea-1/d`))!.value).b).toBe(rewritten.mod);
    await waitFor(async () => notRunning((await a.getAgents()).get('dea-1'))?.join() === '2', { what: 'a to read next’s delta' });
  });

  it('escapes / and % in agent names, so an agent named x/d is not the delta of x', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    await a.saveHeartbeats([bigHeartbeat('x'), heartbeat('x/d', [instance('x/d', 'app-s', 0)]), heartbeat('p%2Fq', [instance('p%2Fq', 'app-p', 0)])], TTL);
    await a.saveHeartbeats([bigHeartbeat('x', { 0: CRASHED })], TTL);
    const keys = (await rawClient().getAll().prefix(`${prefix}/agents/`).keys()).sort();
    expect(keys).toEqual([`${prefix}/agents/p%252Fq`, `${prefix}/agents/x`, `${prefix}/agents/x%2Fd`, `${prefix}/agents/x/d`]);
    const other = await started(new VirtualClock(1_000_000), prefix);
    const agents = await other.getAgents();
    expect([...agents.keys()].sort()).toEqual(['p%2Fq', 'x', 'x/d']);
    expect(notRunning(agents.get('x'))).toEqual([0]);
    expect(agents.get('x/d')?.instances.map((i) => i.app)).toEqual(['app-s']);
    await a.removeAgent('x');
    expect(await rawKey(`${prefix}/agents/x/d`)).toBeUndefined();
    await waitFor(async () => !(await other.getAgents()).has('x'), { what: 'x to go' });
    expect((await other.getAgents()).has('x/d')).toBe(true);
  });

  it('deletes an expired agent’s record and its delta, and keeps those of a present agent', async () => {
    const prefix = freshPrefix();
    const clock = new VirtualClock(1_000_000);
    const a = await started(clock, prefix);
    await a.saveHeartbeats([bigHeartbeat('dea-1'), bigHeartbeat('dea-2')], TTL);
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 1: CRASHED }), bigHeartbeat('dea-2', { 1: CRASHED })], TTL);
    await clock.advanceAsync(20_000);
    await a.saveHeartbeats([bigHeartbeat('dea-2', { 2: CRASHED })], TTL);
    await clock.advanceAsync(10_000);
    expect([...(await a.getAgents()).keys()]).toEqual(['dea-2']);
    await waitFor(async () => (await rawKey(`${prefix}/agents/dea-1`)) === undefined && (await rawKey(`${prefix}/agents/dea-1/d`)) === undefined, {
      what: 'dea-1’s keys to be deleted',
    });
    expect(await rawKey(`${prefix}/agents/dea-2/d`)).toBeDefined();
  });

  it('gets a new lease when etcd lost the pooled one, and saves on it', async () => {
    const prefix = freshPrefix();
    const a = await started(new VirtualClock(1_000_000), prefix);
    await a.saveHeartbeats([bigHeartbeat('dea-1')], TTL);
    const lost = (await rawKey(`${prefix}/agents/dea-1`))!.lease;
    await rawClient().leaseClient.leaseRevoke({ ID: lost });
    await waitFor(async () => !(await a.getAgents()).has('dea-1'), { what: 'the revoke to take dea-1' });
    const grants = a.stats.leaseGrants;
    await a.saveHeartbeats([bigHeartbeat('dea-1'), bigHeartbeat('dea-2')], TTL);
    expect(a.stats.leaseGrants - grants).toBe(1);
    expect((await rawKey(`${prefix}/agents/dea-2`))!.lease).not.toBe(lost);
    await a.saveHeartbeats([bigHeartbeat('dea-1', { 3: CRASHED })], TTL);
    expect((await rawKey(`${prefix}/agents/dea-1/d`))!.lease).toBe((await rawKey(`${prefix}/agents/dea-1`))!.lease);
    expect(notRunning((await a.getAgents()).get('dea-1'))).toEqual([3]);
  });
});

describe('two daemons on one prefix', () => {
  it('each sees the other’s writes, with change events, through its watch', async () => {
    const prefix = freshPrefix();
    const clockA = new VirtualClock(1_000_000);
    const clockB = new VirtualClock(1_000_000);
    const a = await started(clockA, prefix);
    const b = await started(clockB, prefix);
    const seen: StoreChange[] = [];
    b.onChange((c) => seen.push(c));

    await a.replaceDesired([desiredApp('app-a', 'v1', 2)]);
    await a.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
    await a.putPendingStarts([pendingStart('app-a', 1)]);
    await a.putCrashCounts([crashCount('app-a', 0, 2)], TTL);
    await a.bumpFreshness('actual', TTL);
    await waitFor(() => seen.some((c) => c.kind === 'freshness'), { what: 'b to see a’s writes' });
    expect(seen).toEqual([
      { kind: 'desired' },
      { kind: 'agent', agent: 'dea-1', apps: [appKey('app-a', 'v1')] },
      { kind: 'start', key: startKey({ app: 'app-a', version: 'v1', index: 1 }), app: appKey('app-a', 'v1') },
      { kind: 'crash', key: 'app-a,v1/0', app: appKey('app-a', 'v1') },
      { kind: 'freshness', which: 'actual' },
    ]);
    const snap = await b.snapshot();
    expect(snap.desired.get(appKey('app-a', 'v1'))?.instances).toBe(2);
    expect(snap.instances.get(appKey('app-a', 'v1'))?.map((i) => i.instance)).toEqual(['app-a-v1-0@dea-1']);
    expect(snap.freshness.actual).toEqual({ timestamp: 1_000_000, expiresAt: 1_000_000 + TTL });
    // b did not receive dea-1's heartbeats: it counts the agent present while a vouches for it.
    expect((await b.getAgents()).get('dea-1')?.expiresAt).toBe(1_000_000 + 3 * TTL);

    // b's write reaches a the same way; an unchanged heartbeat from b writes nothing.
    const seenByA: StoreChange[] = [];
    a.onChange((c) => seenByA.push(c));
    const puts = b.stats.puts;
    await b.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
    expect(b.stats.puts).toBe(puts);
    await b.deletePendingStarts([startKey({ app: 'app-a', version: 'v1', index: 1 })]);
    await waitFor(() => seenByA.some((c) => c.kind === 'start'), { what: 'a to see b’s delete' });
    expect((await a.getPendingStarts()).size).toBe(0);

    // a stops hearing dea-1: it drops it at its own deadline and deletes the key; b follows.
    seen.length = 0;
    await clockA.advanceAsync(TTL);
    expect((await a.getAgents()).has('dea-1')).toBe(false);
    await waitFor(async () => !(await b.getAgents()).has('dea-1'), { what: 'b to see dea-1 go' });
    // (a's crash count expired at the same time and went the same way.)
    expect(seen).toContainEqual({ kind: 'agent', agent: 'dea-1', apps: [appKey('app-a', 'v1')] });
  });
});

describe('etcd failures', () => {
  it('re-syncs the cache after an etcd restart, with change events for what changed meanwhile', async () => {
    const prefix = freshPrefix();
    const store = await started(new VirtualClock(1_000_000), prefix);
    await store.putPendingStarts([pendingStart('app-a', 0), pendingStart('app-a', 1)]);
    const seen: StoreChange[] = [];
    store.onChange((c) => seen.push(c));

    await etcd.restart();
    // Written by someone else right after the restart, while the store reconnects.
    const other = rawClient();
    await other.put(`${prefix}/starts/${startKey({ app: 'app-b', version: 'v1', index: 0 })}`).value(JSON.stringify(pendingStart('app-b', 0)));
    await other.delete().key(`${prefix}/starts/${startKey({ app: 'app-a', version: 'v1', index: 0 })}`);

    await waitFor(async () => (await store.getPendingStarts()).has(startKey({ app: 'app-b', version: 'v1', index: 0 })), {
      what: 'the store to see the new start',
    });
    await waitFor(async () => !(await store.getPendingStarts()).has(startKey({ app: 'app-a', version: 'v1', index: 0 })), {
      what: 'the store to see the delete',
    });
    expect(seen).toEqual(
      expect.arrayContaining([
        { kind: 'start', key: startKey({ app: 'app-b', version: 'v1', index: 0 }), app: appKey('app-b', 'v1') },
        { kind: 'start', key: startKey({ app: 'app-a', version: 'v1', index: 0 }), app: appKey('app-a', 'v1') },
      ]),
    );
    expect(seen).toHaveLength(2);
    await waitFor(() => store.health().healthy, { what: 'the store to be healthy again' });
    // And it writes again.
    await store.putPendingStops([{ messageId: 'm', sendOn: 0, sentOn: 0, keepAlive: 0, app: 'app-a', version: 'v1', instance: 'i-1', reason: 'extra' }]);
    expect((await store.getPendingStops()).size).toBe(1);
  });

  it('rejects writes naming etcd while it does not answer, keeps the cache as etcd has it, and recovers', async () => {
    const clock = new VirtualClock(1_000_000);
    const store = await started(clock, freshPrefix(), 500);
    await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
    expect(store.health()).toEqual({ healthy: true, last_error: null });

    etcd.pause();
    const t0 = Date.now();
    await expect(store.putPendingStarts([pendingStart('app-a', 1)])).rejects.toThrow(
      new RegExp(`^etcd at ${etcd.endpoint.replace(/[.]/g, '\\.')} is unreachable: no answer within 500ms`),
    );
    expect(Date.now() - t0).toBeLessThan(2_000);
    await expect(store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0, 'CRASHED')])], TTL)).rejects.toThrow(
      /etcd at http:\/\/127\.0\.0\.1:\d+/,
    );
    const health = store.health();
    expect(health.healthy).toBe(false);
    expect(health.last_error).toMatch(/^etcd at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
    // Nothing was applied that etcd did not take.
    expect((await store.getPendingStarts()).size).toBe(0);
    expect((await store.getAgents()).get('dea-1')?.instances[0]?.state).toBe('RUNNING');

    etcd.resume();
    await store.putPendingStarts([pendingStart('app-a', 1)]);
    expect((await store.getPendingStarts()).size).toBe(1);
    await waitFor(() => store.health().healthy, { what: 'healthy again' });
  });

  it('starts when nothing listens, unhealthy naming etcd, refusing writes and trying again in the background', async () => {
    const warn = vi.fn();
    const store = new EtcdStore({ endpoints: ['http://user:secret@127.0.0.1:1'], prefix: '/x', timeoutMs: 500 }, new VirtualClock(), {
      logger: { warn, info: vi.fn(), debug: vi.fn(), error: vi.fn() },
    });
    opened.push(store);
    await store.start();
    const health = store.health();
    expect(health.healthy).toBe(false);
    expect(health.last_error).toMatch(/^etcd at http:\/\/user:\*\*\*@127\.0\.0\.1:1 is unreachable while reading the state: /);
    expect(JSON.stringify(warn.mock.calls)).not.toContain('secret');
    await expect(
      store.putPendingStops([{ app: 'a', version: 'v', instance: 'i', messageId: 'm', sendOn: 0, sentOn: 0, keepAlive: 0, reason: 'EXTRA' }]),
    ).rejects.toThrow(/is unreachable: the state has not been read from it yet/);
  });
});
