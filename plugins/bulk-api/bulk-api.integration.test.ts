/**
 * The bulk-api source in the real engine (config file, RealClock, NATS, HTTP API) against the fake
 * Cloud Controller: a good fetch makes desired state fresh; every failure leaves the desired state
 * as it was and says why in /v1/status.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { StatusBody } from '../../src/api/routes/status.js';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { appKey } from '../../src/sdk/app-key.js';
import {
  freePort,
  makeSelfSignedCert,
  startFakeCC,
  startNatsServer,
  waitFor,
  type FakeApp,
  type FakeCCHandle,
  type NatsServerHandle,
} from '../../test/helpers/index.js';

const apps: FakeApp[] = [
  { guid: 'app-a', version: 'va', instances: 2 },
  { guid: 'app-b', version: 'vb', state: 'STOPPED' },
  { guid: 'app-c', version: 'vc', package_state: 'PENDING' },
];
const KEPT = [appKey('app-a', 'va'), appKey('app-c', 'vc')];

let nats: NatsServerHandle;
let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];
let configs = 0;

beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.stop();
});
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-bulk-it-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

async function fakeCC(opts: Parameters<typeof startFakeCC>[0] = {}): Promise<FakeCCHandle> {
  const cc = await startFakeCC({ apps, ...opts });
  cleanups.push(() => cc.stop());
  return cc;
}

interface Running {
  engine: Engine;
  status(): Promise<StatusBody>;
  desiredKeys(): Promise<string[]>;
  logs: string[];
  stop(): Promise<void>;
}

/**
 * An engine from a config file whose `sources.desired` is bulk-api with `source` options. Heartbeat
 * 100 ms, so the default poll interval (6hb) is 600 ms and desired freshness (3hb) lapses 300 ms
 * after the last good fetch.
 */
async function engineWith(source: string[]): Promise<Running> {
  const port = await freePort();
  const file = join(dir, `hmgate-${++configs}.yaml`);
  await writeFile(
    file,
    [
      'foundation: it-bulk',
      'heartbeat_interval: 100ms',
      'freshness: { desired_ttl: 3hb }',
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  desired:',
      '    plugin: bulk-api',
      ...source.map((l) => `    ${l}`),
      `api: { listen: "127.0.0.1:${port}", password: pw }`,
      '',
    ].join('\n'),
  );
  const loaded = await loadConfig(file, { env: {} });
  const logs: string[] = [];
  const loggers = createLoggerFactory({ foundation: 'it-bulk', level: 'debug', destination: { write: (s: string) => void logs.push(s) } });
  const engine = new Engine(loaded, { loggers });
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= engine.stop());
  cleanups.push(stop);
  await engine.start();
  const auth = `Basic ${Buffer.from('magnet:pw').toString('base64')}`;
  return {
    engine,
    logs,
    stop,
    async status() {
      const res = await fetch(`http://127.0.0.1:${port}/v1/status`, { headers: { authorization: auth } });
      expect(res.status).toBe(200);
      return (await res.json()) as StatusBody;
    },
    desiredKeys: async () => [...(await engine.stateStore!.getDesired()).keys()].sort(),
  };
}

/** Waits until /v1/status says desired state is stale for a reason matching `reason`. */
async function staleBecause(run: Running, reason: RegExp): Promise<StatusBody> {
  return waitFor(
    async () => {
      const s = await run.status();
      return !s.desired.fresh && reason.test(s.desired.reason ?? '') ? s : undefined;
    },
    { what: `desired.reason matching ${reason}`, timeoutMs: 10_000 },
  );
}

async function fresh(run: Running): Promise<StatusBody> {
  return waitFor(
    async () => {
      const s = await run.status();
      return s.desired.fresh ? s : undefined;
    },
    { what: 'desired state fresh', timeoutMs: 10_000 },
  );
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('bulk-api in the engine', () => {
  it('a good fetch makes desired fresh; 401, 500, bad JSON and a hang leave it untouched and say why', async () => {
    const cc = await fakeCC();
    const run = await engineWith([`url: ${cc.url}`, `user: ${cc.user}`, `password: ${cc.password}`, 'network_timeout: 300ms']);

    const ok = await fresh(run);
    expect(ok.desired.reason).toBeNull();
    expect(ok.stages.desired).toEqual({ kind: 'source', plugin: 'bulk-api', healthy: true, last_error: null });
    expect(await run.desiredKeys()).toEqual(KEPT);
    expect(cc.requestsTo('/bulk/apps')[0]!.url).toBe('/bulk/apps?batch_size=500&bulk_token={}');
    const metrics = await (await fetch(`http://127.0.0.1:${run.engine.apiAddress!.port}/metrics`)).text();
    expect(metrics).toMatch(/hmgate_desired_fetches_total\{result="ok",foundation="it-bulk"\} [1-9]/);
    expect(metrics).toMatch(/hmgate_desired_apps\{foundation="it-bulk"\} 2/);

    // From here a fetch that got through would replace the desired state with this.
    cc.setApps([{ guid: 'other', version: 'vo' }]);
    const url = escape(cc.url);
    const failures: [Parameters<FakeCCHandle['fail']>[0], RegExp][] = [
      ['401', new RegExp(`^CC bulk API at ${url} answered 401: check sources\\.desired\\.user / password$`)],
      ['500', new RegExp(`^CC bulk API at ${url} answered 500 on page 1`)],
      ['bad-json', new RegExp(`^CC bulk API at ${url} sent a body that is not JSON`)],
      ['hang', new RegExp(`^timed out: the CC bulk API at ${url} did not answer within 300ms \\(sources\\.desired\\.network_timeout\\)$`)],
    ];
    for (const [mode, reason] of failures) {
      cc.fail(mode);
      const s = await staleBecause(run, reason);
      expect(s.stages.desired!.healthy).toBe(false);
      expect(s.stages.desired!.last_error).toMatch(reason);
      expect(await run.desiredKeys()).toEqual(KEPT);
    }

    cc.fail(null);
    await fresh(run);
    await waitFor(async () => (await run.desiredKeys()).join() === appKey('other', 'vo'), { what: 'the new desired state' });
    expect((await run.status()).stages.desired).toMatchObject({ healthy: true, last_error: null });
    await run.stop();
    expect(run.logs.join('')).not.toContain(cc.password);
  });

  it('a self-signed CC is refused until ca_file names its certificate, or skip_cert_verify is set', async () => {
    const pair = await makeSelfSignedCert('127.0.0.1');
    const cc = await fakeCC({ tls: pair });
    const base = [`url: ${cc.url}`, `user: ${cc.user}`, `password: ${cc.password}`];

    const untrusted = await engineWith(base);
    const s = await staleBecause(
      untrusted,
      new RegExp(
        `^the CC certificate for 127\\.0\\.0\\.1:${cc.port} is not trusted \\([A-Z_]+\\): set sources\\.desired\\.ca_file, or sources\\.desired\\.skip_cert_verify: true$`,
      ),
    );
    expect(s.desired.reason).toMatch(/DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN/);
    expect(await untrusted.desiredKeys()).toEqual([]);
    await untrusted.stop();

    await writeFile(join(dir, 'cc-ca.pem'), pair.cert);
    const withCa = await engineWith([...base, 'ca_file: cc-ca.pem']);
    await fresh(withCa);
    expect(await withCa.desiredKeys()).toEqual(KEPT);
    await withCa.stop();

    const skipping = await engineWith([...base, 'skip_cert_verify: true']);
    await fresh(skipping);
    expect(await skipping.desiredKeys()).toEqual(KEPT);
  });

  it('a wrong port names connection refused and the url', async () => {
    const port = await freePort();
    const run = await engineWith([`url: http://127.0.0.1:${port}`, 'user: u', 'password: p']);
    const s = await staleBecause(
      run,
      new RegExp(
        `^connection refused by http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\): check sources\\.desired\\.url — it must be the Cloud Controller's domain or IP$`,
      ),
    );
    expect(s.stages.desired!.last_error).toBe(s.desired.reason);
  });
});

describe('bulk-api credentials over NATS', () => {
  let nc: NatsConnection;
  beforeEach(async () => {
    nc = await connect({ servers: nats.url, name: 'fake-cloud-controller' });
  });
  afterEach(async () => {
    await nc.close();
  });

  it('asks the CC on cloudcontroller.bulk.credentials.default before each fetch', async () => {
    const cc = await fakeCC();
    let asked = 0;
    nc.subscribe('cloudcontroller.bulk.credentials.default', {
      callback: (_err, msg) => {
        asked++;
        msg.respond(JSON.stringify({ user: cc.user, password: cc.password }));
      },
    });
    await nc.flush();
    const run = await engineWith([`url: ${cc.url}`, 'credentials: nats']);
    await fresh(run);
    expect(await run.desiredKeys()).toEqual(KEPT);
    await waitFor(() => cc.requestsTo('/bulk/apps').length >= 4, { what: 'a second fetch' });
    expect(asked).toBeGreaterThanOrEqual(2);
    expect(cc.requestsTo('/bulk/apps')[0]!.headers.authorization).toBe(`Basic ${Buffer.from(`${cc.user}:${cc.password}`).toString('base64')}`);
    await run.stop();
    expect(run.logs.join('')).not.toContain(cc.password);
  });

  it('no answer on the subject skips the fetch with a reason', async () => {
    const cc = await fakeCC();
    const run = await engineWith([
      `url: ${cc.url}`,
      'credentials: nats',
      'credentials_subject: cloudcontroller.bulk.credentials.ng',
      'credentials_timeout: 200ms',
    ]);
    await staleBecause(run, /^Failed to request auth info on cloudcontroller\.bulk\.credentials\.ng: /);
    expect(cc.requests).toHaveLength(0);
  });
});
