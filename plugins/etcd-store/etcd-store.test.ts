/**
 * The etcd store against a real etcd (one per file, a fresh key prefix per test): the store
 * contract on a virtual clock, then what only etcd has — the key layout and its write volume,
 * leases shared between agents, two daemons sharing state, an etcd restart, errors while etcd does
 * not answer.
 */
import { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { VirtualClock } from '../../src/pipeline/clock.js';
import { isPluginDefinition, type StageContext } from '../../src/pipeline/plugin.js';
import { appKey, startKey, type StoreChange } from '../../src/pipeline/store.js';
import { startEtcd, waitFor, type EtcdHandle } from '../../test/helpers/index.js';
import { crashCount, describeStoreContract, desiredApp, heartbeat, instance, pendingStart } from '../../test/store-contract.js';
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

function newStore(clock: VirtualClock, prefix = freshPrefix(), timeoutMs = 2_000): EtcdStore {
  return new EtcdStore({ endpoints: [etcd.endpoint], prefix, timeoutMs }, clock, { onListenerError: (err) => setImmediate(() => { throw err; }) });
}

async function started(clock: VirtualClock, prefix?: string, timeoutMs?: number): Promise<EtcdStore> {
  const store = newStore(clock, prefix, timeoutMs);
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
    expect(check({})).toEqual({ problems: [], data: { endpoints: ['http://127.0.0.1:2379'], prefix: '/hmgate', dial_timeout: 5_000 } });
    expect(check({ endpoints: ['https://user:pw@e:2379'], prefix: '/x', dial_timeout: '250ms', username: 'u', password: 'p', ca_file: 'ca.pem' }).problems).toEqual([]);
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
    const store = await etcdPlugin.create({ endpoints: [etcd.endpoint], prefix: freshPrefix(), dial_timeout: 2_000 }, ctx);
    expect(store).toBeInstanceOf(EtcdStore);
    opened.push(store);
    await store.start();
    await store.bumpFreshness('actual', 1_000);
    expect((await store.snapshot()).freshness.actual).toEqual({ timestamp: 42, expiresAt: 1_042 });
    expect(() => etcdPlugin.create({ endpoints: [etcd.endpoint], prefix: '/x', dial_timeout: 2_000, ca_file: 'ca.pem' }, ctx)).toThrow(
      /ca_file \/nonexistent-dir\/ca\.pem/,
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
    // ttl 30 s, vouched for 3 × 30 s: a lease of 90 s + a 12 s bucket.
    expect(agentLines[0]).toMatch(/ttl (10[0-2]|9\d)s\)$/);
    expect(lines.find((l) => l.startsWith(`${prefix}/starts/${startKey({ app: 'app-a', version: 'v1', index: 3 })}  `))).toMatch(/\(no lease\)$/);
    expect(lines.find((l) => l.startsWith(`${prefix}/fresh/actual  `))).toMatch(/^\S+ {2}\{"timestamp":1000000,"expiresAt":1030000\} {2}\(lease [0-9a-f]+ ttl \d+s\)$/);
    // Agents (90 s) and the marker (30 s) are two lease classes.
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
    const apps = Array.from({ length: 3_000 }, (_, i) => desiredApp(`app-${String(i).padStart(5, '0')}-5f0c2a7e-1b1d-4c53-9d0b-3c2e6f1a2b3c`, 'v1', 1 + (i % 4)));
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
    const pool = new LeasePool(async (ttl) => {
      ttls.push(ttl);
      return String(++id);
    }, () => now);
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

    await waitFor(async () => (await store.getPendingStarts()).has(startKey({ app: 'app-b', version: 'v1', index: 0 })), { what: 'the store to see the new start' });
    await waitFor(async () => !(await store.getPendingStarts()).has(startKey({ app: 'app-a', version: 'v1', index: 0 })), { what: 'the store to see the delete' });
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
    await expect(store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0, 'CRASHED')])], TTL)).rejects.toThrow(/etcd at http:\/\/127\.0\.0\.1:\d+/);
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

  it('fails to start naming etcd when nothing listens', async () => {
    const store = new EtcdStore({ endpoints: ['http://user:secret@127.0.0.1:1'], prefix: '/x', timeoutMs: 500 }, new VirtualClock());
    await expect(store.start()).rejects.toThrow(/^etcd at http:\/\/user:\*\*\*@127\.0\.0\.1:1 is unreachable while reading the state: /);
    expect(store.health().healthy).toBe(false);
  });
});
