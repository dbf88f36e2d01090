/**
 * The heartbeat source in the real engine on the real clock: agents heartbeating over a real
 * nats-server, /v1/status over HTTP, and the HTTPS endpoint with client certificates.
 */
import { request as httpsRequest } from 'node:https';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { freePort, makeCA, makeSignedCert, startFakeCC, startNatsServer, waitFor, type NatsServerHandle, type PemPair } from '../../test/helpers/index.js';
import { SimAgents, SubjectRecorder } from '../../test/helpers/agents.js';

const HB_MS = 200;
const WINDOW_MS = 3 * HB_MS; // freshness.actual_ttl and heartbeat_ttl default to 3hb
const PASSWORD = 'it-password';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
});

interface Running {
  engine: Engine;
  nats: NatsServerHandle;
  apiPort: number;
  dir: string;
  lines: Record<string, any>[];
}

/** A temp dir, a nats-server and an engine with one heartbeat stage; all stopped after the test. */
async function startEngine(sourceLines: string[] = [], prepare?: (dir: string) => Promise<void>): Promise<Running> {
  const dir = await mkdtemp(join(tmpdir(), 'hmgate-heartbeat-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const nats = await startNatsServer();
  cleanups.push(() => nats.stop());
  await prepare?.(dir);
  const apiPort = await freePort();
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'foundation: it-heartbeat',
      `heartbeat_interval: ${HB_MS}ms`,
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  heartbeats:',
      '    plugin: heartbeat',
      '    sync_interval: 0.25hb',
      ...sourceLines.map((l) => `    ${l}`),
      'api:',
      `  listen: 127.0.0.1:${apiPort}`,
      `  password: ${PASSWORD}`,
      '',
    ].join('\n'),
  );
  const loaded = await loadConfig(file, { env: {} });
  const lines: Record<string, any>[] = [];
  const loggers = createLoggerFactory({ foundation: 'it-heartbeat', level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const engine = new Engine(loaded, { loggers });
  cleanups.push(() => engine.stop());
  await engine.start();
  return { engine, nats, apiPort, dir, lines };
}

async function status(apiPort: number): Promise<Record<string, any>> {
  const res = await fetch(`http://127.0.0.1:${apiPort}/v1/status`, {
    headers: { Authorization: `Basic ${Buffer.from(`magnet:${PASSWORD}`).toString('base64')}` },
  });
  if (res.status !== 200) throw new Error(`/v1/status answered ${res.status}`);
  return (await res.json()) as Record<string, any>;
}

function heartbeat(dea: string, instances = 2): string {
  return JSON.stringify({
    dea,
    droplets: Array.from({ length: instances }, (_, i) => ({
      cc_partition: 'default',
      droplet: `app-${dea}`,
      version: 'v1',
      instance: `${dea}-instance-${i}`,
      index: i,
      state: 'RUNNING',
      state_timestamp: 1_700_000_000.5,
    })),
  });
}

async function natsClient(url: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url });
  cleanups.push(() => nc.close());
  return nc;
}

/** Agents that heartbeat every HB_MS until stopped; records when each last published. */
function simulateAgents(nc: NatsConnection, agents: string[]) {
  const lastPublished = new Map<string, number>();
  let firstPublished: number | undefined;
  const timers = new Map<string, NodeJS.Timeout>();
  const beat = (dea: string) => {
    nc.publish('dea.heartbeat', new TextEncoder().encode(heartbeat(dea)));
    const now = Date.now();
    firstPublished ??= now;
    lastPublished.set(dea, now);
  };
  for (const dea of agents) {
    beat(dea);
    timers.set(
      dea,
      setInterval(() => beat(dea), HB_MS),
    );
  }
  const stop = (dea: string) => {
    clearInterval(timers.get(dea));
    timers.delete(dea);
  };
  cleanups.push(async () => agents.forEach(stop));
  return { stop, lastPublished, firstPublished: () => firstPublished! };
}

describe('heartbeat source over NATS in the engine', () => {
  it('turns actual fresh only a full freshness window after the first save, and forgets a silent agent after its TTL', async () => {
    const { engine, nats, apiPort } = await startEngine();
    const store = engine.stateStore!;
    const initial = await status(apiPort);
    expect(initial.actual.fresh).toBe(false);
    expect(initial.stages.heartbeats).toMatchObject({ kind: 'source', plugin: 'heartbeat', healthy: true, last_error: null });

    const nc = await natsClient(nats.url);
    const agents = simulateAgents(nc, ['dea-1', 'dea-2', 'dea-3']);

    // Poll /v1/status and the marker until actual has been fresh for a while.
    const polls: { sent: number; answered: number; fresh: boolean; since: string | null }[] = [];
    let firstMarker: number | undefined;
    const deadline = Date.now() + WINDOW_MS + 3_000;
    while (Date.now() < deadline) {
      const marker = await store.getFreshness('actual');
      firstMarker ??= marker?.timestamp;
      const sent = Date.now();
      const s = await status(apiPort);
      polls.push({ sent, answered: Date.now(), fresh: s.actual.fresh, since: s.actual.since });
      if (polls.filter((p) => p.fresh).length >= 5) break;
      await new Promise((r) => setTimeout(r, 15));
    }
    expect(firstMarker).toBeDefined();
    const bumpedAt = firstMarker!;
    expect(bumpedAt).toBeGreaterThanOrEqual(agents.firstPublished());
    // The streak never broke: the marker still carries the first save's time.
    expect((await store.getFreshness('actual'))?.timestamp).toBe(bumpedAt);

    const fresh = polls.filter((p) => p.fresh);
    expect(fresh.length).toBeGreaterThan(0);
    // Never fresh before the window: every fresh answer came at least WINDOW_MS after the first bump.
    for (const p of fresh) expect(p.answered - bumpedAt).toBeGreaterThanOrEqual(WINDOW_MS);
    expect(fresh[0]!.since).toBe(new Date(bumpedAt).toISOString());
    // It was observed stale while heartbeats were already saved, so "never before" was checked...
    expect(polls.filter((p) => !p.fresh && p.sent >= bumpedAt).length).toBeGreaterThan(3);
    // ...and it turned fresh soon after the window.
    expect(fresh[0]!.sent - bumpedAt).toBeLessThan(WINDOW_MS + 1_000);

    const agentsNow = await store.getAgents();
    expect([...agentsNow.keys()].sort()).toEqual(['dea-1', 'dea-2', 'dea-3']);
    expect((await store.snapshot()).instances.size).toBe(3);

    // dea-3 falls silent: its instances go once its presence TTL has passed, not before.
    agents.stop('dea-3');
    const silentSince = agents.lastPublished.get('dea-3')!;
    const goneAt = await waitFor(async () => ((await store.getAgents()).has('dea-3') ? false : Date.now()), {
      timeoutMs: 5_000,
      intervalMs: 5,
      what: 'dea-3 to lapse',
    });
    expect(goneAt - silentSince).toBeGreaterThanOrEqual(WINDOW_MS - 1);
    expect(goneAt - silentSince).toBeLessThan(WINDOW_MS + 1_500);
    const snap = await store.snapshot();
    const reporting = [...snap.instances.values()].flat().map((i) => i.agent);
    expect(new Set(reporting)).toEqual(new Set(['dea-1', 'dea-2']));
    expect([...(await store.getAgents()).keys()].sort()).toEqual(['dea-1', 'dea-2']);

    const after = await status(apiPort);
    expect(after.actual.fresh).toBe(true);
    expect(after.counters.heartbeats_received).toBeGreaterThanOrEqual(9);
    expect(after.counters.heartbeats_saved).toBeGreaterThanOrEqual(6);
    expect(after.counters.heartbeat_save_failures).toBe(0);
  });
});

describe('dea.advertise with the hm9000 preset', () => {
  /** A nats-server, a fake CC with `apps`, agents, a recorder of hm9000.start/stop and hmgate on the preset; all stopped after the test. */
  async function startPreset(apps: { guid: string; instances: number }[]) {
    const dir = await mkdtemp(join(tmpdir(), 'hmgate-advertise-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const cc = await startFakeCC({ apps: apps.map((a) => ({ ...a, version: 'v1' })) });
    cleanups.push(() => cc.stop());
    const agents = await SimAgents.start(nats.url, HB_MS);
    cleanups.push(() => agents.stop());
    const recorder = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
    cleanups.push(() => recorder.stop());
    const file = join(dir, 'hmgate.yaml');
    await writeFile(
      file,
      [
        'extends: hm9000',
        'foundation: it-advertise',
        `heartbeat_interval: ${HB_MS}ms`,
        `bus: { servers: ["${nats.url}"] }`,
        'sources:',
        '  heartbeats: { sync_interval: 50ms }',
        `  desired: { url: "${cc.url}", user: bulk_api, password: bulk-password }`,
        'api: { password: pw, enabled: false }',
        '',
      ].join('\n'),
    );
    const lines: Record<string, any>[] = [];
    const loggers = createLoggerFactory({ foundation: 'it-advertise', level: 'warn', destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
    const engine = new Engine(await loadConfig(file, { env: {} }), { loggers });
    cleanups.push(() => engine.stop());
    await engine.start();
    const nc = await natsClient(nats.url);
    const dropped = async (reason: string) => {
      const m = engine.metrics.getSingleMetric('hmgate_dropped_messages_total');
      return ((await m?.get())?.values ?? [])
        .filter((v) => v.labels.subject === 'dea.advertise' && v.labels.reason === reason)
        .reduce((n, v) => n + v.value, 0);
    };
    /** Publishes `payloads()` on dea.advertise every quarter heartbeat until the test ends. */
    const advertise = (payloads: () => string[]) => {
      const timer = setInterval(() => {
        for (const p of payloads()) nc.publish('dea.advertise', new TextEncoder().encode(p));
      }, HB_MS / 4);
      cleanups.push(async () => clearInterval(timer));
    };
    return { engine, agents, recorder, lines, dropped, advertise };
  }

  const advertiseOf = (id: string, apps: Record<string, number>) =>
    JSON.stringify({ id, stacks: ['lucid64'], available_memory: 4096, available_disk: 8192, app_id_to_count: apps, placement_properties: { zone: 'default' } });

  it('keeps an empty foundation fresh from advertises alone', async () => {
    const { engine, advertise, recorder } = await startPreset([]);
    advertise(() => [advertiseOf('dea-1', {}), advertiseOf('dea-2', {})]);
    await waitFor(async () => (await engine.status()).actual.fresh, { what: 'actual fresh from advertises', timeoutMs: 10_000 });
    expect((await engine.stateStore!.getAgents()).size).toBe(0);
    expect(recorder.messages).toEqual([]);
  });

  it('agents silent, garbage and their own advertises on dea.advertise: actual state goes stale, the garbage is counted, nothing is started', async () => {
    const { engine, agents, recorder, lines, dropped, advertise } = await startPreset([{ guid: 'app-a', instances: 2 }]);
    agents.agent('dea-1').run('app-a', 0);
    agents.agent('dea-2').run('app-a', 1);
    await waitFor(
      async () => {
        const s = await engine.status();
        return s.actual.fresh && s.desired.fresh;
      },
      { what: 'fresh state', timeoutMs: 10_000 },
    );

    // The heartbeats are lost; the agents still advertise what they run, and four bytes of garbage arrive.
    let garbage = 0;
    advertise(() => {
      garbage++;
      return ['abcd', advertiseOf('dea-1', { 'app-a': 1 }), advertiseOf('dea-2', { 'app-a': 1 })];
    });
    for (const a of agents.agents.values()) a.silent = true;

    await waitFor(async () => !(await engine.status()).actual.fresh, { what: 'actual state stale', timeoutMs: 10_000 });
    await waitFor(async () => (await engine.stateStore!.getAgents()).size === 0, { what: 'the silent agents to lapse', timeoutMs: 10_000 });
    await waitFor(async () => garbage >= 30 && (await dropped('bad_json')) >= 30, { what: '30 garbage messages dropped', timeoutMs: 10_000 });
    expect((await engine.status()).actual.fresh).toBe(false);
    const lost = /^agent dea-[12] advertises 1 instance but no heartbeat arrived within the actual freshness TTL \(600ms\): its heartbeats are missing/;
    expect(lines.some((l) => l.component === 'heartbeats' && l.level === 'warn' && lost.test(l.msg))).toBe(true);
    expect(lines.some((l) => l.component === 'heartbeats' && l.msg.startsWith('dropped a message on dea.advertise: bad_json '))).toBe(true);
    expect(await dropped('invalid')).toBe(0);
    expect(recorder.on('hm9000.start')).toEqual([]);
  });
});

describe('cc_partition in the engine', () => {
  it('agents of another partition are named in /v1/status with both values and the key, once in the log, until they stop', async () => {
    const { nats, apiPort, lines } = await startEngine(['cc_partition: default', 'cc_partition_filter: true']);
    const nc = await natsClient(nats.url);
    const ours = simulateAgents(nc, ['dea-1']);
    const theirs = setInterval(() => {
      const beat = JSON.parse(heartbeat('dea-ng')) as { droplets: { cc_partition: string }[] };
      for (const d of beat.droplets) d.cc_partition = 'ng';
      nc.publish('dea.heartbeat', new TextEncoder().encode(JSON.stringify(beat)));
    }, HB_MS);
    cleanups.push(async () => clearInterval(theirs));

    const named = await waitFor(
      async () => ((await status(apiPort)).problems as { code: string; message: string; fix: string }[]).find((p) => p.code === 'CC_PARTITION_IGNORED'),
      {
        what: 'the partition problem',
      },
    );
    expect(named.message).toBe(
      'cc_partition of the agents: agents report cc_partition "ng" but this daemon is on "default" (`sources.heartbeats.cc_partition`): their heartbeats, exits and updates are ignored',
    );
    expect(named.fix).toBe('set `sources.heartbeats.cc_partition: ng`');

    clearInterval(theirs);
    await waitFor(async () => !((await status(apiPort)).problems as { code: string }[]).some((p) => p.code === 'CC_PARTITION_IGNORED'), {
      what: 'the problem cleared',
    });
    expect(lines.filter((l) => l.problem === 'CC_PARTITION_IGNORED' && l.level === 'warn')).toHaveLength(1);
    expect(lines.filter((l) => l.problem === 'CC_PARTITION_IGNORED' && /^cleared: /.test(l.msg))).toHaveLength(1);
    ours.stop('dea-1');
  });
});

describe('heartbeat source over HTTPS in the engine', () => {
  let ca: PemPair;
  let serverCert: PemPair;
  let clientCert: PemPair;
  let strangerCert: PemPair;

  beforeAll(async () => {
    ca = await makeCA('hmgate heartbeat test CA');
    serverCert = await makeSignedCert(ca, '127.0.0.1');
    clientCert = await makeSignedCert(ca, 'dea-over-https');
    strangerCert = await makeSignedCert(await makeCA('some other CA'), 'stranger');
  });

  async function writeTls(dir: string): Promise<void> {
    await mkdir(join(dir, 'tls'));
    await writeFile(join(dir, 'tls', 'ca.pem'), ca.cert);
    await writeFile(join(dir, 'tls', 'server.pem'), serverCert.cert);
    await writeFile(join(dir, 'tls', 'server.key'), serverCert.key, { mode: 0o600 });
  }

  function post(port: number, body: string, opts: { path?: string; method?: string; client?: PemPair } = {}): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port,
          path: opts.path ?? '/dea/heartbeat',
          method: opts.method ?? 'POST',
          ca: ca.cert,
          ...(opts.client ? { cert: opts.client.cert, key: opts.client.key } : {}),
          agent: false,
          timeout: 5_000,
          headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('timed out')));
      req.on('error', reject);
      req.end(body);
    });
  }

  it('accepts heartbeats from clients with a certificate of the CA, refuses the others, and answers 400 to bad bodies', async () => {
    const httpsPort = await freePort();
    const { engine, apiPort } = await startEngine(
      ['http_listener:', `  listen: 127.0.0.1:${httpsPort}`, '  cert_file: tls/server.pem', '  key_file: tls/server.key', '  ca_file: tls/ca.pem'],
      writeTls,
    );
    const store = engine.stateStore!;

    const ok = await post(httpsPort, heartbeat('dea-https', 3), { client: clientCert });
    expect(ok).toEqual({ status: 202, body: '' });
    await waitFor(async () => (await store.getAgents()).get('dea-https')?.instances.length === 3, {
      timeoutMs: 3_000,
      what: 'the HTTPS heartbeat in the store',
    });
    expect(await store.getFreshness('actual')).toBeDefined();

    // No client certificate, or one from another CA: the TLS handshake is refused.
    await expect(post(httpsPort, heartbeat('dea-anonymous'))).rejects.toThrow(/certificate required/);
    await expect(post(httpsPort, heartbeat('dea-stranger'), { client: strangerCert })).rejects.toMatchObject({
      code: expect.stringMatching(/ECONNRESET|ERR_SSL/),
    });

    const invalid = await post(httpsPort, '{"dea": "dea-https", "droplets": [', { client: clientCert });
    expect(invalid.status).toBe(400);
    expect((await post(httpsPort, '', { client: clientCert })).status).toBe(400);
    expect((await post(httpsPort, JSON.stringify({ dea: 'dea-https', droplets: [{ droplet: 'a' }] }), { client: clientCert })).status).toBe(400);
    expect((await post(httpsPort, heartbeat('dea-x'), { client: clientCert, path: '/elsewhere' })).status).toBe(404);
    expect((await post(httpsPort, '', { client: clientCert, method: 'GET' })).status).toBe(405);

    await new Promise((r) => setTimeout(r, 3 * 50));
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-https']);
    expect((await store.getAgents()).get('dea-https')?.instances).toHaveLength(3);

    const s = await status(apiPort);
    expect(s.stages.heartbeats).toMatchObject({ healthy: true, last_error: null });
    expect(s.counters.dropped_messages).toBe(3);
    expect(s.counters.heartbeats_received).toBe(1);
  });

  it('refuses a heartbeat with a field over its bound with 400 and its reason, counted, never stored', async () => {
    const httpsPort = await freePort();
    const { engine, apiPort } = await startEngine(
      ['http_listener:', `  listen: 127.0.0.1:${httpsPort}`, '  cert_file: tls/server.pem', '  key_file: tls/server.key', '  ca_file: tls/ca.pem'],
      writeTls,
    );
    const huge = await post(httpsPort, JSON.stringify({ dea: 'd'.repeat(900_000), droplets: [] }), { client: clientCert });
    expect(huge).toEqual({ status: 400, body: 'too_long: /dea must NOT have more than 128 characters\n' });
    const longGuid = JSON.parse(heartbeat('dea-https', 2)) as { droplets: { droplet: string }[] };
    longGuid.droplets[1]!.droplet = 'a'.repeat(129);
    expect(await post(httpsPort, JSON.stringify(longGuid), { client: clientCert })).toEqual({
      status: 400,
      body: 'too_long: /droplets/1/droplet must NOT have more than 128 characters\n',
    });
    // A good one after them is taken: the store holds only it.
    expect((await post(httpsPort, heartbeat('dea-https', 1), { client: clientCert })).status).toBe(202);
    const store = engine.stateStore!;
    await waitFor(async () => (await store.getAgents()).has('dea-https'), { what: 'the good heartbeat in the store' });
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-https']);
    expect((await store.getAgents()).get('dea-https')?.instances).toHaveLength(1);
    const m = engine.metrics.getSingleMetric('hmgate_dropped_messages_total');
    expect(((await m?.get())?.values ?? []).filter((v) => v.value > 0).map((v) => [v.labels.subject, v.labels.reason, v.value])).toEqual([
      ['https:/dea/heartbeat', 'too_long', 2],
    ]);
    expect((await status(apiPort)).counters.dropped_messages).toBe(2);
  });

  it('fails start with a clear message when the listener cannot listen or a file is missing', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const busy = (blocker.address() as net.AddressInfo).port;
    await expect(
      startEngine(
        ['http_listener:', `  listen: 127.0.0.1:${busy}`, '  cert_file: tls/server.pem', '  key_file: tls/server.key', '  ca_file: tls/ca.pem'],
        writeTls,
      ),
    ).rejects.toThrow(
      `stage "heartbeats" (heartbeat) failed to start: cannot listen on 127.0.0.1:${busy} for HTTPS heartbeats (sources.heartbeats.http_listener.listen): address already in use`,
    );
    await expect(
      startEngine(['http_listener:', '  listen: 127.0.0.1:0', '  cert_file: tls/missing.pem', '  key_file: tls/server.key', '  ca_file: tls/ca.pem'], writeTls),
    ).rejects.toThrow(/sources\.heartbeats\.http_listener\.cert_file: cannot read \/.*\/tls\/missing\.pem: no such file/);
  });
});
