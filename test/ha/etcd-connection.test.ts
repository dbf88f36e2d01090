/**
 * The etcd store's connection against a real etcd: one call that fails, a watch the client ends
 * itself (a campaign elected after a failover) or a record too large for etcd must not drop the
 * other streams on the connection — the store's watch, the election's lease keepalive — and a
 * watch that breaks and comes back on the next read is not reported as etcd being unreachable.
 */
import type { Logger } from 'pino';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { EtcdStore } from '../../plugins/etcd-store/etcd-store.js';
import { RealClock } from '../../src/sdk/clock.js';
import type { Leadership } from '../../src/sdk/leadership.js';
import type { InstanceHeartbeat } from '../../src/sdk/state.js';
import { startEtcd, waitFor, type EtcdHandle } from '../helpers/index.js';
import { TcpProxy } from './tcp-proxy.js';

let etcd: EtcdHandle;
let n = 0;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  await etcd?.stop();
});

interface Line {
  level: string;
  msg: string;
}

function captureLogger(lines: Line[], onLine?: (line: Line) => void): Logger {
  const at = (level: string) => (obj: unknown, msg?: string) => {
    const line = { level, msg: typeof obj === 'string' ? obj : (msg ?? '') };
    lines.push(line);
    onLine?.(line);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } as unknown as Logger;
}

async function openStore(prefix: string, opts: { endpoint?: string; lines?: Line[]; onLine?: (l: Line) => void } = {}): Promise<EtcdStore> {
  const store = new EtcdStore({ endpoints: [opts.endpoint ?? etcd.endpoint], prefix, timeoutMs: 2_000 }, new RealClock(), {
    logger: captureLogger(opts.lines ?? [], opts.onLine),
  });
  await store.start();
  cleanups.push(() => store.stop());
  return store;
}

function elect(store: EtcdStore, id: string, lines: Line[]): Leadership {
  const election = store.leaderElection({ id, ttlSeconds: 2, logger: captureLogger(lines) });
  election.start();
  cleanups.push(() => election.stop());
  return election;
}

/** Puts a pending start through `writer` and waits until `reader` has it from its watch. */
async function seenThroughWatch(writer: EtcdStore, reader: EtcdStore): Promise<void> {
  const index = ++n;
  await writer.putPendingStarts([
    {
      app: 'probe',
      version: 'v1',
      index,
      messageId: `probe-${index}`,
      sendOn: 0,
      sentOn: 0,
      keepAlive: 0,
      priority: 1,
      skipVerification: false,
      reason: 'MISSING',
    },
  ]);
  await waitFor(async () => (await reader.getPendingStarts()).has(`probe-v1-${index}`), { what: `pending start ${index} seen through the watch` });
}

function instance(agent: string, i: number): InstanceHeartbeat {
  return {
    app: `app-${i % 50}`,
    version: 'v1',
    instance: `${agent}-instance-${i}-${'x'.repeat(40)}`,
    index: i,
    state: 'RUNNING',
    stateTimestamp: 1_700_000_000 + i,
    agent,
  };
}

const broke = (lines: Line[]) => lines.filter((l) => /watch .* broke/.test(l.msg));

/** A proxy in front of etcd that the test stops: it counts the connections a store opens. */
async function proxy(): Promise<TcpProxy> {
  const p = await TcpProxy.start(etcd.clientPort);
  cleanups.push(() => p.stop());
  return p;
}

// Each store holds ONE connection to etcd for all its calls and streams. Before, a failed call
// made the etcd3 client close it: its streams ended at the next keepalive ping on the closed
// connection ("14 UNAVAILABLE: Connection dropped"), and the next call opened a new one.

it('after a failover the new leader keeps its connection: the campaign ending its own wait drops no other stream', async () => {
  const prefix = `/conn-failover-${process.pid}`;
  const linesA: Line[] = [];
  const linesB: Line[] = [];
  const viaB = await proxy();
  const a = await openStore(prefix, { lines: linesA });
  const b = await openStore(prefix, { lines: linesB, endpoint: viaB.endpoint });
  const leaderA = elect(a, 'a', linesA);
  await waitFor(() => leaderA.isLeader, { what: 'a leads' });
  const leaderB = elect(b, 'b', linesB);
  await waitFor(() => leaderB.leaderId() === 'a', { what: 'b sees a lead' });

  // a vanishes without resigning (as after kill -9): b is elected when a's lease expires.
  a.client.close();
  await waitFor(() => leaderB.isLeader, { what: 'b leads after a vanished', timeoutMs: 15_000 });
  const c = await openStore(prefix);
  await seenThroughWatch(c, b);
  await seenThroughWatch(b, c);

  expect(viaB.accepted).toBe(1);
  expect(broke(linesB)).toEqual([]);
  expect(b.watchBreaks).toBe(0);
  expect(linesB.filter((l) => /campaign failed|no longer leads/.test(l.msg))).toEqual([]);
  expect(leaderB.isLeader).toBe(true);
});

it('a call that fails on its deadline drops no other stream', async () => {
  const prefix = `/conn-deadline-${process.pid}`;
  const lines: Line[] = [];
  const viaA = await proxy();
  const a = await openStore(prefix, { lines, endpoint: viaA.endpoint });
  const b = await openStore(prefix);
  await seenThroughWatch(b, a);

  await expect(a.client.kv.range({ key: Buffer.from(`${prefix}/x`) }, { deadline: Date.now() - 1 })).rejects.toThrow(/deadline/i);
  await seenThroughWatch(b, a);
  await seenThroughWatch(a, b);

  expect(viaA.accepted).toBe(1);
  expect(broke(lines)).toEqual([]);
  expect(a.watchBreaks).toBe(0);
});

it('a record larger than etcd accepts is refused by the store, named and counted; the other agents are saved and the watch stays', async () => {
  const prefix = `/conn-huge-${process.pid}`;
  const lines: Line[] = [];
  const viaA = await proxy();
  const a = await openStore(prefix, { lines, endpoint: viaA.endpoint });
  const b = await openStore(prefix);
  // About 2.5 MB: past etcd's --max-request-bytes (1.5 MiB) and past the 2 MiB its gRPC server reads.
  const huge = Array.from({ length: 18_000 }, (_, i) => instance('agent-huge', i));
  const small = [instance('agent-small', 1)];

  await expect(
    a.saveHeartbeats(
      [
        { agent: 'agent-small', instances: small },
        { agent: 'agent-huge', instances: huge },
      ],
      30_000,
    ),
  ).rejects.toThrow(/agent "agent-huge" is too large for etcd at .*: its record is \d+ bytes, more than one etcd request may carry/);
  await waitFor(async () => (await b.getAgents()).has('agent-small'), { what: 'the small agent saved' });
  expect((await b.getAgents()).has('agent-huge')).toBe(false);
  expect(a.stats.refusedRecords).toBe(1);
  expect(lines.filter((l) => l.level === 'warn' && /agent-huge/.test(l.msg))).toHaveLength(1);

  // Refused again: counted again, logged once.
  await expect(a.saveHeartbeats([{ agent: 'agent-huge', instances: huge }], 30_000)).rejects.toThrow(/too large/);
  expect(a.stats.refusedRecords).toBe(2);
  expect(lines.filter((l) => l.level === 'warn' && /agent-huge/.test(l.msg))).toHaveLength(1);

  await seenThroughWatch(b, a);
  await seenThroughWatch(a, b);
  expect(viaA.accepted).toBe(1);
  expect(broke(lines)).toEqual([]);
  expect(a.watchBreaks).toBe(0);
  expect(a.health()).toEqual({ healthy: true, last_error: null });
});

it('a watch that breaks and is back on the next read is not reported: the store stays healthy', async () => {
  const prefix = `/conn-drop-${process.pid}`;
  const via = await proxy();
  const lines: Line[] = [];
  const healthAtBreak: ReturnType<EtcdStore['health']>[] = [];
  let store: EtcdStore | undefined;
  const a = (store = await openStore(prefix, {
    endpoint: via.endpoint,
    lines,
    onLine: (l) => {
      if (/watch .* broke/.test(l.msg)) healthAtBreak.push(store!.health());
    },
  }));
  const b = await openStore(prefix);
  await seenThroughWatch(b, a);

  via.dropConnections();
  await waitFor(() => broke(lines).length >= 1, { what: 'the watch broke' });
  await seenThroughWatch(b, a);

  expect(healthAtBreak.length).toBeGreaterThanOrEqual(1);
  expect(healthAtBreak.every((h) => h.healthy)).toBe(true);
  expect(broke(lines).every((l) => l.level === 'info')).toBe(true);
  expect(a.health()).toEqual({ healthy: true, last_error: null });
});
