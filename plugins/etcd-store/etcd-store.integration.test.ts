/**
 * The real engine on the etcd store, in real time with short timings: agents heartbeat over a real
 * NATS server into etcd, the desired state comes from a fake Cloud Controller through bulk-api, and
 * a cycle reads both from the store's cache, enqueues the missing instance in etcd and hands it to
 * a sink — while a second daemon's store on the same prefix sees all of it through its watch.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { RealClock } from '../../src/sdk/clock.js';
import { Engine } from '../../src/pipeline/engine.js';
import { appKey } from '../../src/sdk/app-key.js';
import { type StoreChange } from '../../src/sdk/state.js';
import { SimAgents } from '../../test/helpers/agents.js';
import { startEtcd, startFakeCC, startNatsServer, waitFor, type EtcdHandle, type FakeCCHandle, type NatsServerHandle } from '../../test/helpers/index.js';
import { dumpRaw, EtcdStore } from './index.js';

const fixtures = resolve(__dirname, '../../test/fixtures/plugins');

let dir: string;
let etcd: EtcdHandle;
let nats: NatsServerHandle;
let cc: FakeCCHandle;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-etcd-engine-'));
  [etcd, nats, cc] = await Promise.all([startEtcd(), startNatsServer(), startFakeCC({ apps: [{ guid: 'app-1', instances: 2 }] })]);
});

afterAll(async () => {
  await Promise.all([etcd?.stop(), nats?.stop(), cc?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

describe('engine on the etcd store', () => {
  it('runs a cycle from state in etcd and shares that state with a second daemon', async () => {
    const prefix = `/hmgate-engine-${process.pid}`;
    const marker = join(dir, 'marker.jsonl');
    const file = join(dir, 'hmgate.yaml');
    await writeFile(
      file,
      [
        'foundation: etcd-itest',
        'heartbeat_interval: 200ms',
        `bus: { servers: ["${nats.url}"] }`,
        `store: { plugin: etcd, endpoints: ["${etcd.endpoint}"], prefix: "${prefix}", dial_timeout: 2s }`,
        'sources:',
        '  heartbeats: { plugin: heartbeat, subject: dea.heartbeat, sync_interval: 100ms, heartbeat_ttl: 3hb }',
        `  desired: { plugin: bulk-api, url: "${cc.url}", user: ${cc.user}, password: ${cc.password}, poll_interval: 2hb }`,
        'policies:',
        '  missing: { plugin: missing, grace_period: 1hb }',
        'sinks:',
        `  rec: { plugin: ${join(fixtures, 'recorder-sink.js')}, marker_file: ${marker} }`,
        'api: { password: pw, enabled: false }',
        '',
      ].join('\n'),
    );
    const loaded = await loadConfig(file, { env: {} });
    const loggers = createLoggerFactory({ foundation: 'etcd-itest', level: 'silent' });
    const engine = new Engine(loaded, { clock: new RealClock(), loggers });

    // Another daemon on the same prefix, which only watches.
    const other = new EtcdStore({ endpoints: [etcd.endpoint], prefix, timeoutMs: 2_000 }, new RealClock());
    await other.start();
    const seen: StoreChange[] = [];
    other.onChange((c) => seen.push(c));

    const agents = await SimAgents.start(nats.url, 100);
    agents.agent('dea-1').run('app-1', 0, { version: 'app-1-v1' });
    const sends = async () =>
      existsSync(marker)
        ? (await readFile(marker, 'utf8'))
            .trim()
            .split('\n')
            .map((l) => (JSON.parse(l) as { event: string }).event)
            .filter((e) => e.startsWith('send'))
        : [];

    await engine.start();
    try {
      expect(engine.stateStore).toBeInstanceOf(EtcdStore);
      // Index 1 is missing: once actual (3 hb of heartbeats) and desired are fresh, it is started.
      await waitFor(async () => (await sends()).includes('send:start:MISSING:1'), { timeoutMs: 15_000, what: 'the missing start to be sent' });
      expect(await sends()).not.toContain('send:start:MISSING:0');

      const status = await engine.status();
      expect(status.stages.store).toMatchObject({ plugin: 'etcd', healthy: true, last_error: null });
      expect(status.actual.fresh && status.desired.fresh).toBe(true);

      // What the engine wrote is in etcd, one key per agent, and the other daemon saw it.
      const lines = await dumpRaw(engine.stateStore as EtcdStore);
      expect(lines.filter((l) => l.startsWith(`${prefix}/agents/`)).map((l) => l.split('  ')[0])).toEqual([`${prefix}/agents/dea-1`]);
      expect(lines.some((l) => l.startsWith(`${prefix}/desired/meta  {"chunks":1,"apps":1}`))).toBe(true);
      expect(lines.some((l) => l.startsWith(`${prefix}/fresh/actual  `))).toBe(true);
      const key = appKey('app-1', 'app-1-v1');
      await waitFor(() => seen.some((c) => c.kind === 'start' && c.app === key), { what: 'the other daemon to see the pending start' });
      const snap = await other.snapshot();
      expect(snap.desired.get(key)?.instances).toBe(2);
      expect(snap.instances.get(key)?.map((i) => i.index)).toEqual([0]);
      expect(snap.freshness.actual).toBeDefined();
      expect(seen).toContainEqual({ kind: 'agent', agent: 'dea-1', apps: [key] });
      expect(seen).toContainEqual({ kind: 'desired' });
    } finally {
      await agents.stop();
      await engine.stop();
      await other.stop();
    }
  });
});
