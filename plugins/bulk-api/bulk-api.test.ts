/**
 * The bulk-api source on a virtual clock, against the fake Cloud Controller on 127.0.0.1: the HTTP
 * part is real, the poll loop and every deadline run on the virtual clock.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { BusNotConnectedError, type Bus, type BusMessage } from '../../src/sdk/bus.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { DropletRegistry } from '../../src/sdk/droplets.js';
import type { PolicyEvent } from '../../src/sdk/events.js';
import { FreshnessBoard } from '../../src/pipeline/freshness/board.js';
import { isPluginDefinition, type StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { type DesiredApp } from '../../src/sdk/state.js';
import { freePort, makeSelfSignedCert, startFakeCC, waitFor, type FakeApp, type FakeCCHandle } from '../../test/helpers/index.js';
import { MemoryStore } from '../memory-store/memory-store.js';
import { BulkApiSource, type Transport } from './bulk-api.js';
import plugin from './index.js';
import type { BulkApiOptions } from './options.js';
import { bulkAppsPath, describeTransportError, parseBulkPage, parseCredentials } from './page.js';

const T0 = 1_700_000_000_000;
const HB = 10_000;
const DESIRED_TTL = 12 * HB;

/** What BulkApiSource takes: the validated options with the credentials subject resolved. */
type SourceOptions = ConstructorParameters<typeof BulkApiSource>[0];

/** The plugin's defaults at a 10 s heartbeat, in ms. */
function options(over: Partial<BulkApiOptions> & { url: string }): SourceOptions {
  return {
    user: 'bulk_api',
    password: 'bulk-password',
    batch_size: 500,
    poll_interval: 6 * HB,
    timeout: 60 * HB,
    network_timeout: 10_000,
    skip_cert_verify: false,
    credentials: 'static',
    cc_partition: 'default',
    credentials_subject: 'cloudcontroller.bulk.credentials.default',
    credentials_timeout: 5_000,
    walk: 'hm9000',
    user_counts: false,
    forget_unseen: false,
    ...over,
  };
}

/** A bus that answers requests with a scripted responder (NatsBus's contract, in memory). */
class FakeBus implements Bus {
  connected = true;
  readonly requests: { subject: string; data: string; timeoutMs: number; at: number }[] = [];
  responder: (subject: string) => Promise<BusMessage> = () => Promise.reject(new Error('no responder'));
  constructor(private readonly clock: VirtualClock) {}
  subscribe(): () => void {
    return () => undefined;
  }
  publish(): void {}
  async flush(): Promise<void> {}
  request(subject: string, data: string | Uint8Array, timeoutMs: number): Promise<BusMessage> {
    this.requests.push({ subject, data: typeof data === 'string' ? data : new TextDecoder().decode(data), timeoutMs, at: this.clock.now() });
    return this.responder(subject);
  }
}

const reply = (subject: string, body: string): BusMessage => ({ subject, data: new TextEncoder().encode(body) });

const apps: FakeApp[] = [
  { guid: 'app-a', version: 'va', instances: 2, updated_at: '2024-02-01T10:00:00Z' },
  { guid: 'app-b', version: 'vb', state: 'STOPPED' },
  { guid: 'app-c', version: 'vc', package_state: 'FAILED' },
  { guid: 'app-d', version: 'vd', package_state: 'PENDING', instances: 3 },
  { guid: 'app-e', version: 've', instances: 1 },
];

let clock: VirtualClock;
let store: MemoryStore;
let bus: FakeBus;
let freshness: FreshnessBoard;
let registry: Registry;
let lines: Record<string, unknown>[];
let emitted: PolicyEvent[];
let dir: string;
let cc: FakeCCHandle;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  clock = new VirtualClock(T0);
  store = new MemoryStore(clock);
  bus = new FakeBus(clock);
  freshness = new FreshnessBoard(() => clock.now(), 3 * HB, DESIRED_TTL);
  registry = new Registry();
  lines = [];
  emitted = [];
  dir = await mkdtemp(join(tmpdir(), 'hmgate-bulk-'));
  cc = await startFakeCC({ apps });
  cleanups.push(() => cc.stop());
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

function context(): StageContext {
  const loggers = createLoggerFactory({ foundation: 'unit', level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  return {
    id: 'desired',
    kind: 'source',
    foundation: 'unit',
    logger: loggers.component('desired'),
    clock,
    heartbeatMs: HB,
    configDir: dir,
    metrics: registry,
    bus,
    store,
    freshness,
    isLeader: () => true,
    events: { emit: (e) => void emitted.push(e), wants: () => true, droplets: new DropletRegistry() },
  };
}

/** A started source; stopped after the test. */
async function source(over: Partial<BulkApiOptions> = {}, transport?: Transport): Promise<BulkApiSource> {
  const src = new BulkApiSource(options({ url: cc.url, ...over }), context(), transport ? { transport } : {});
  await src.start();
  cleanups.push(() => src.stop());
  return src;
}

/** Lets due timers fire (the poll loop's among them) and waits for the fetch they started. */
async function tick(src: BulkApiSource, ms = 0): Promise<void> {
  await clock.advanceAsync(ms);
  await src.whenIdle();
}

const desiredKeys = async () => [...(await store.getDesired()).keys()].sort();
const errorLines = () => lines.filter((l) => l.level === 'error');

async function metricValue(name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const m = registry.getSingleMetric(name);
  if (!m) return undefined;
  const data = await m.get();
  return data.values.find(
    (v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val) && (v as { metricName?: string }).metricName !== `${name}_bucket`,
  )?.value;
}

describe('bulk-api plugin definition', () => {
  it('is a source named bulk-api whose options validate with the defaults of HM9000 (hb-scaled)', async () => {
    expect(isPluginDefinition(plugin)).toBe(true);
    expect(plugin.name).toBe('bulk-api');
    expect(plugin.kind).toBe('source');
    const props = (plugin.optionsSchema as unknown as { properties: Record<string, { description?: string }> }).properties;
    for (const [key, s] of Object.entries(props)) expect(s.description, key).toMatch(/\S/);
    expect(props.url!.description).toContain('cc_base_url');
    expect(props.skip_cert_verify!.description).toContain('default_config.json had true');

    const file = join(dir, 'hmgate.yaml');
    await writeFile(
      file,
      ['heartbeat_interval: 2s', 'api: { password: pw }', 'sources:', '  desired: { plugin: bulk-api, url: "https://cc.example.com" }', ''].join('\n'),
    );
    const loaded = await loadConfig(file, { env: {} });
    const stage = loaded.stages.find((s) => s.id === 'desired')!;
    expect(stage.options).toEqual({
      url: 'https://cc.example.com',
      batch_size: 500,
      poll_interval: 12_000,
      timeout: 120_000,
      network_timeout: 10_000,
      skip_cert_verify: false,
      credentials: 'static',
      cc_partition: 'default',
      credentials_timeout: 5_000,
      walk: 'hm9000',
      user_counts: false,
      forget_unseen: false,
    });
  });

  it('refuses options it cannot work with', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(
      file,
      ['api: { password: pw }', 'sources:', '  desired: { plugin: bulk-api, batch_size: 0, credentials: carrier-pigeon, colour: red }', ''].join('\n'),
    );
    const err = await loadConfig(file, { env: {} }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(String(err?.message)).toMatch(/url/);
    expect(String(err?.message)).toMatch(/batch_size/);
    expect(String(err?.message)).toMatch(/credentials/);
    expect(String(err?.message)).toMatch(/colour/);
    expect(() => new BulkApiSource(options({ url: 'http://cc.example.com/?x=1' }), context())).toThrow(/without \?query/);
  });
});

describe('the walk (docs/hm9000.md#desired-state)', () => {
  it('pages with a raw JSON bulk_token, starting at {}, with batch_size and basic auth, until an empty page', async () => {
    const src = await source({ batch_size: 2 });
    await tick(src);
    const got = cc.requestsTo('/bulk/apps');
    expect(got.map((r) => r.url)).toEqual([
      '/bulk/apps?batch_size=2&bulk_token={}',
      '/bulk/apps?batch_size=2&bulk_token={"id":2}',
      '/bulk/apps?batch_size=2&bulk_token={"id":4}',
      '/bulk/apps?batch_size=2&bulk_token={"id":5}',
    ]);
    for (const r of got) {
      expect(r.method).toBe('GET');
      expect(r.headers.authorization).toBe(`Basic ${Buffer.from('bulk_api:bulk-password').toString('base64')}`);
    }
    expect(bulkAppsPath('/prefix', 7, '{"id":5}')).toBe('/prefix/bulk/apps?batch_size=7&bulk_token={"id":5}');
  });

  it('keeps STARTED apps whose package is STAGED or PENDING, with updated_at, and drops STOPPED and FAILED', async () => {
    const src = await source({ batch_size: 2 });
    await tick(src);
    const desired = await store.getDesired();
    expect([...desired.keys()].sort()).toEqual([appKey('app-a', 'va'), appKey('app-d', 'vd'), appKey('app-e', 've')]);
    expect(desired.get(appKey('app-a', 'va'))).toEqual<DesiredApp>({
      guid: 'app-a',
      version: 'va',
      instances: 2,
      state: 'STARTED',
      packageState: 'STAGED',
      updatedAt: '2024-02-01T10:00:00Z',
    });
    expect(desired.get(appKey('app-d', 'vd'))).toMatchObject({ packageState: 'PENDING', instances: 3 });
    expect(await store.getFreshness('desired')).toEqual({ timestamp: T0, expiresAt: T0 + DESIRED_TTL });
    expect(freshness.reason('desired')).toBeUndefined();
    expect(src.health()).toEqual({ healthy: true, last_error: null });
    const info = lines.filter((l) => l.level === 'info');
    // the first fetch shows its progress page by page at info, then one line when complete
    expect(info.map((l) => l.msg)).toEqual([
      expect.stringMatching(/^desired state page 1: \d+ apps, \d+ kept, \d+ desired so far$/),
      expect.stringMatching(/^desired state page 2: /),
      expect.stringMatching(/^desired state page 3: /),
      'desired state page 4: 0 apps, 0 kept, 3 desired so far',
      'desired state fetched: 3 apps (4 pages, 0ms)',
    ]);
    expect(info[4]).toMatchObject({ apps: 3, pages: 4, component: 'desired' });
    expect(await metricValue('hmgate_desired_fetches_total', { result: 'ok' })).toBe(1);
    expect(await metricValue('hmgate_desired_apps')).toBe(3);
  });

  it('counts one app in the singular', async () => {
    cc.setApps([{ guid: 'app-a', version: 'va', instances: 2 }]);
    const src = await source({ batch_size: 1 });
    await tick(src);
    expect(lines.filter((l) => l.level === 'info').map((l) => l.msg)).toEqual([
      'desired state page 1: 1 app, 1 kept, 1 desired so far',
      'desired state page 2: 0 apps, 0 kept, 1 desired so far',
      'desired state fetched: 1 app (2 pages, 0ms)',
    ]);
  });

  it('replaces the desired state only after the final empty page, and bumps freshness after the replace', async () => {
    const events: string[] = [];
    store.onChange((c) => {
      if (c.kind === 'desired' || c.kind === 'freshness') events.push(`${c.kind}@${cc.requestsTo('/bulk/apps').length}`);
    });
    await store.replaceDesired([{ guid: 'old', version: 'v0', instances: 1, state: 'STARTED', packageState: 'STAGED' }]);
    events.length = 0;
    const src = await source({ batch_size: 1 });
    await tick(src);
    // 5 apps one per page, then the empty page: nothing written before the 6th answer.
    expect(events).toEqual(['desired@6', 'freshness@6']);
    expect(await desiredKeys()).toEqual([appKey('app-a', 'va'), appKey('app-d', 'vd'), appKey('app-e', 've')]);
  });

  it('an empty first page is a complete fetch of nothing (every app undesired), as in HM9000', async () => {
    cc.setApps([]);
    await store.replaceDesired([{ guid: 'old', version: 'v0', instances: 1, state: 'STARTED', packageState: 'STAGED' }]);
    const src = await source();
    await tick(src);
    expect(await desiredKeys()).toEqual([]);
    expect(await store.getFreshness('desired')).toBeDefined();
  });

  it('ends on an empty page, not on a null token, and fails rather than loop on a repeated token', async () => {
    const bodies = [
      JSON.stringify({ results: { g1: { id: 'g1', version: 'v', instances: 1, state: 'STARTED', package_state: 'STAGED' } }, bulk_token: { id: 1 } }),
      JSON.stringify({ results: { g2: { id: 'g2', version: 'v', instances: 1, state: 'STARTED', package_state: 'STAGED' } }, bulk_token: { id: 2 } }),
      JSON.stringify({ results: {}, bulk_token: null }),
    ];
    const paths: string[] = [];
    const src = await source({}, async (path) => {
      paths.push(path);
      return { status: 200, body: bodies[paths.length - 1] ?? '{"results":{}}' };
    });
    expect(await src.fetchOnce()).toEqual({ result: 'ok', apps: 2, pages: 3 });
    expect(paths).toEqual([
      '/bulk/apps?batch_size=500&bulk_token={}',
      '/bulk/apps?batch_size=500&bulk_token={"id":1}',
      '/bulk/apps?batch_size=500&bulk_token={"id":2}',
    ]);

    const stuck = await source({}, async () => ({ status: 200, body: bodies[0]! }));
    const outcome = await stuck.fetchOnce();
    expect(outcome).toEqual({ result: 'failed', reason: expect.stringContaining('sent bulk_token {"id":1} again on page 2') });
  });

  it('appends /bulk/apps to the path of the base URL (without its trailing slash)', async () => {
    const paths: string[] = [];
    const src = await source({ url: 'http://cc.example.com/cc/' }, async (path) => {
      paths.push(path);
      return { status: 200, body: '{"results":{}}' };
    });
    await src.fetchOnce();
    expect(paths).toEqual(['/cc/bulk/apps?batch_size=500&bulk_token={}']);
  });

  it('masks a password in the URL everywhere', async () => {
    const port = await freePort();
    const src = await source({ url: `http://someone:url-s3cret@127.0.0.1:${port}/cc/` });
    await tick(src);
    const reason = src.health().last_error!;
    expect(reason).toBe(
      `connection refused by http://someone:***@127.0.0.1:${port}/cc/ (ECONNREFUSED): check sources.desired.url — it must be the Cloud Controller's domain or IP`,
    );
    expect(JSON.stringify(lines)).not.toContain('url-s3cret');
  });
});

describe('failures leave the previous desired state untouched', () => {
  /** A good fetch, then new apps at the CC (so a replace would show), then `breakIt`, then a fetch. */
  async function afterGoodFetch(src: BulkApiSource, breakIt: () => void | Promise<void>, run: () => Promise<void> = () => tick(src, 6 * HB)) {
    await tick(src);
    const before = await store.getDesired();
    const marker = await store.getFreshness('desired');
    expect(before.size).toBe(3);
    cc.setApps([{ guid: 'new-app', version: 'vn' }]);
    lines.length = 0;
    await breakIt();
    await run();
    expect(await store.getDesired()).toBe(before); // the very same snapshot: not even re-written
    expect(await store.getFreshness('desired')).toEqual(marker); // not bumped
    const reason = freshness.reason('desired')?.reason;
    expect(src.health()).toEqual({ healthy: false, last_error: reason });
    expect(errorLines()).toHaveLength(1);
    expect(errorLines()[0]).toMatchObject({ msg: `desired-state fetch failed: ${reason}`, reason });
    expect(await metricValue('hmgate_desired_fetches_total', { result: 'failed' })).toBe(1);
    expect(await metricValue('hmgate_desired_apps')).toBe(3);
    return reason!;
  }

  it('401 names the user / password options', async () => {
    const src = await source();
    const reason = await afterGoodFetch(src, () => cc.fail('401'));
    expect(reason).toBe(`CC bulk API at ${cc.url} answered 401: check sources.desired.user / password`);
  });

  it('wrong credentials are a 401 too', async () => {
    const src = await source({ password: 'nope' });
    await tick(src);
    expect(src.health().last_error).toBe(`CC bulk API at ${cc.url} answered 401: check sources.desired.user / password`);
    expect(await store.getFreshness('desired')).toBeUndefined();
  });

  it('500 gives the code (and CC error text)', async () => {
    const src = await source();
    const reason = await afterGoodFetch(src, () => cc.fail('500'));
    expect(reason).toBe(`CC bulk API at ${cc.url} answered 500 on page 1 (CF-ServerError: An unknown error occurred.)`);
  });

  it('bad JSON', async () => {
    const src = await source();
    const reason = await afterGoodFetch(src, () => cc.fail('bad-json'));
    expect(reason).toMatch(new RegExp(`^CC bulk API at ${cc.url} sent a body that is not JSON \\(.+\\) \\(page 1\\)$`));
  });

  it('a page of the wrong shape, even after good pages', async () => {
    const src = await source({ batch_size: 1 });
    const reason = await afterGoodFetch(src, () =>
      cc.setApps([{ guid: 'ok-1' }, { guid: 'ok-2' }, { guid: 'bad', extra: { instances: 'three' } }, { guid: 'ok-3' }]),
    );
    expect(reason).toBe(`CC bulk API at ${cc.url} sent a page of the wrong shape: results["bad"].instances must be a whole number, not a string (page 3)`);
    expect(cc.requestsTo('/bulk/apps').at(-1)!.url).toBe('/bulk/apps?batch_size=1&bulk_token={"id":2}');
  });

  it('a CC that does not answer: the per-request deadline (network_timeout) on the clock', async () => {
    const src = await source({ network_timeout: 3_000 });
    const reason = await afterGoodFetch(
      src,
      () => cc.fail('hang'),
      async () => {
        const n = cc.requests.length;
        await clock.advanceAsync(6 * HB);
        await waitFor(() => cc.requests.length > n, { what: 'the hung request' });
        await tick(src, 3_000);
      },
    );
    expect(reason).toBe(`timed out: the CC bulk API at ${cc.url} did not answer within 3000ms (sources.desired.network_timeout)`);
  });

  it('a fetch longer than timeout is abandoned', async () => {
    const src = await source({ timeout: 2_000 });
    const reason = await afterGoodFetch(
      src,
      () => cc.fail('hang'),
      async () => {
        const n = cc.requests.length;
        await clock.advanceAsync(6 * HB);
        await waitFor(() => cc.requests.length > n, { what: 'the hung request' });
        await tick(src, 2_000);
      },
    );
    expect(reason).toBe(`timed out: the desired-state fetch from ${cc.url} took longer than 2000ms (sources.desired.timeout) and was abandoned on page 1`);
  });

  it('connection refused names the URL', async () => {
    const src = await source();
    const reason = await afterGoodFetch(src, () => cc.stop());
    expect(reason).toBe(`connection refused by ${cc.url} (ECONNREFUSED): check sources.desired.url — it must be the Cloud Controller's domain or IP`);
  });

  it('a store that fails to sync', async () => {
    const src = await source();
    await tick(src);
    const real = store.replaceDesired.bind(store);
    store.replaceDesired = () => Promise.reject(new Error('disk on fire'));
    lines.length = 0;
    await tick(src, 6 * HB);
    store.replaceDesired = real;
    expect(src.health().last_error).toBe('Failed to sync desired state to the store: disk on fire');
  });

  it('recovers on the next good fetch and clears the reason', async () => {
    const src = await source();
    await afterGoodFetch(src, () => cc.fail('500'));
    cc.fail(null);
    await tick(src, 6 * HB);
    expect(await desiredKeys()).toEqual([appKey('new-app', 'vn')]);
    expect(freshness.reason('desired')).toBeUndefined();
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });
});

describe('TLS', () => {
  async function httpsCC() {
    const pair = await makeSelfSignedCert('127.0.0.1');
    const secure = await startFakeCC({ apps, tls: pair });
    cleanups.push(() => secure.stop());
    return { secure, pair };
  }

  it('an untrusted certificate names the host and the fix, and the store stays untouched', async () => {
    const { secure } = await httpsCC();
    const src = await source({ url: secure.url });
    await tick(src);
    expect(src.health().last_error).toMatch(
      new RegExp(
        `^the CC certificate for 127\\.0\\.0\\.1:${secure.port} is not trusted \\((DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN)\\): set sources\\.desired\\.ca_file, or sources\\.desired\\.skip_cert_verify: true$`,
      ),
    );
    expect(await store.getDesired()).toEqual(new Map());
    expect(await store.getFreshness('desired')).toBeUndefined();
  });

  it('ca_file (relative to the config directory) makes it trusted, the system CAs still included', async () => {
    const { secure, pair } = await httpsCC();
    await writeFile(join(dir, 'cc-ca.pem'), pair.cert);
    const src = await source({ url: secure.url, ca_file: 'cc-ca.pem' });
    await tick(src);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
    expect(await desiredKeys()).toHaveLength(3);
  });

  it('skip_cert_verify accepts it', async () => {
    const { secure } = await httpsCC();
    const src = await source({ url: secure.url, skip_cert_verify: true });
    await tick(src);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });

  it('an unreadable ca_file fails start with the path', async () => {
    const src = new BulkApiSource(options({ url: cc.url, ca_file: 'missing.pem' }), context());
    await expect(src.start()).rejects.toThrow(`sources.desired.ca_file: cannot read ${join(dir, 'missing.pem')}`);
    await writeFile(join(dir, 'empty.pem'), 'not a certificate');
    const src2 = new BulkApiSource(options({ url: cc.url, ca_file: 'empty.pem' }), context());
    await expect(src2.start()).rejects.toThrow(/holds no PEM certificate/);
  });
});

describe('transport errors in words', () => {
  const t = { id: 'desired', url: 'https://api.example.com', host: 'api.example.com', networkTimeoutMs: 10_000 };
  it.each([
    [
      { code: 'ENOTFOUND' },
      "cannot resolve the host of https://api.example.com (DNS ENOTFOUND): check sources.desired.url — it must be the Cloud Controller's domain or IP",
    ],
    [{ code: 'EAI_AGAIN' }, /DNS EAI_AGAIN/],
    [Object.assign(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })]), {}), /^connection refused by https:\/\/api\.example\.com/],
    [{ code: 'UND_ERR_CONNECT_TIMEOUT' }, /^timed out connecting to https:\/\/api\.example\.com after 10000ms/],
    [
      { code: 'CERT_HAS_EXPIRED' },
      'the CC certificate for api.example.com is not trusted (CERT_HAS_EXPIRED): set sources.desired.ca_file, or sources.desired.skip_cert_verify: true',
    ],
    [{ code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, /not valid for api\.example\.com/],
    [
      Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }),
      'HTTP request to the CC bulk API at https://api.example.com failed (ECONNRESET: socket hang up)',
    ],
  ])('%o', (err, expected) => {
    const text = describeTransportError(err, t);
    if (typeof expected === 'string') expect(text).toBe(expected);
    else expect(text).toMatch(expected);
  });
});

describe('page parsing', () => {
  const app = { id: 'g', version: 'v', instances: 1, state: 'STARTED', package_state: 'STAGED' };
  it.each([
    ['[]', /the body must be an object with results and bulk_token, not an array/],
    ['{}', /results must be an object of apps keyed by guid, not nothing/],
    ['{"results":null}', /results must be an object .* not null/],
    ['{"results":[],"bulk_token":{"id":1}}', /results must be an object .* not an array/],
    ['{"results":{},"bulk_token":"x"}', /bulk_token must be an object like \{"id":5\}, not a string/],
    [JSON.stringify({ results: { g: app }, bulk_token: { id: 1.5 } }), /bulk_token\.id must be an integer, not the number 1\.5/],
    [JSON.stringify({ results: { g: app } }), /a page with results must carry bulk_token/],
    [JSON.stringify({ results: { g: app }, bulk_token: {} }), /a page with results must carry bulk_token/],
    [JSON.stringify({ results: { g: 7 }, bulk_token: { id: 1 } }), /results\["g"\] must be an app object, not the number 7/],
    [JSON.stringify({ results: { g: { ...app, state: 1 } }, bulk_token: { id: 1 } }), /results\["g"\]\.state must be a string/],
    [JSON.stringify({ results: { g: { ...app, instances: -1 } }, bulk_token: { id: 1 } }), /instances must be a whole number/],
    [JSON.stringify({ results: { g: { ...app, id: undefined } }, bulk_token: { id: 1 } }), /results\["g"\]\.id \(the app guid\) is missing/],
    ['not json', /^a body that is not JSON \(/],
  ])('%s fails', (body, reason) => {
    const r = parseBulkPage(body);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(reason);
  });

  it('re-serialises the token as {"id":N}, ignores unknown fields, tolerates missing fields of dropped apps', () => {
    const r = parseBulkPage(
      JSON.stringify({
        results: { g: { ...app, memory: 256, whatever: [1] }, s: { id: 's', state: 'STOPPED' }, n: {} },
        bulk_token: { id: 17, extra: 'dropped' },
      }),
    );
    expect(r).toEqual({
      ok: true,
      done: false,
      results: 3,
      kept: [{ guid: 'g', version: 'v', instances: 1, state: 'STARTED', packageState: 'STAGED' }],
      nextToken: '{"id":17}',
    });
    expect(parseBulkPage('{"results":{},"bulk_token":{"id":null}}')).toEqual({ ok: true, done: true, results: 0, kept: [], nextToken: null });
  });

  it('credentials replies never quote the reply', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(parseCredentials(enc('{"user":"u","password":"p"}'))).toEqual({ ok: true, user: 'u', password: 'p' });
    for (const bad of ['{"user":"u","password":"s3cret"', '{"user":"u"}', '{"user":"u","password":42}', '["s3cret"]']) {
      const r = parseCredentials(enc(bad));
      expect(r.ok).toBe(false);
      expect(JSON.stringify(r)).not.toContain('s3cret');
    }
  });
});

describe('the poll loop', () => {
  it('start() does not wait for the first fetch, which runs at once; then every poll_interval', async () => {
    const src = await source();
    expect(cc.requests).toHaveLength(0);
    expect(clock.nextDue()).toBe(T0);
    await tick(src);
    expect(cc.requestsTo('/bulk/apps')).toHaveLength(2);
    await tick(src, 6 * HB - 1);
    expect(cc.requestsTo('/bulk/apps')).toHaveLength(2);
    await tick(src, 1);
    expect(cc.requestsTo('/bulk/apps')).toHaveLength(4);
    await tick(src, 6 * HB);
    expect(cc.requestsTo('/bulk/apps')).toHaveLength(6);
  });

  it('measures the interval from the start of a fetch, and never overlaps a slow one', async () => {
    let delay = 2_000;
    bus.responder = async (subject) => {
      await clock.sleep(delay);
      return reply(subject, '{"user":"bulk_api","password":"bulk-password"}');
    };
    const src = await source({ credentials: 'nats' });
    const requestsAt = () => bus.requests.map((r) => r.at - T0);
    /** Fires what is due now, again and again, until `done` (the HTTP part takes real time). */
    const settle = (done: () => boolean) =>
      waitFor(async () => {
        await clock.advanceAsync(0);
        return done();
      });
    await clock.advanceAsync(0); // fetch 1 starts at T0 and waits for credentials ...
    await clock.advanceAsync(2_000); // ... which arrive at T0 + 2 s
    await settle(() => cc.requestsTo('/bulk/apps').length === 2);
    await src.whenIdle();
    expect(src.health()).toEqual({ healthy: true, last_error: null });
    expect(clock.nextDue()).toBe(T0 + 6 * HB); // not T0 + 2 s + 60 s

    delay = 90_000; // longer than the interval
    await clock.advanceAsync(6 * HB - 2_000); // fetch 2 starts at T0 + 60 s
    await clock.advanceAsync(60_000); // T0 + 120 s: fetch 2 still waiting; no second fetch meanwhile
    expect(requestsAt()).toEqual([0, 60_000]);
    await clock.advanceAsync(30_000); // fetch 2 gets its credentials at T0 + 150 s ...
    await settle(() => bus.requests.length === 3); // ... and the next starts once it is done
    expect(requestsAt()).toEqual([0, 60_000, 150_000]);
    expect(cc.requestsTo('/bulk/apps')).toHaveLength(4);
  });

  it('stop() aborts a fetch in flight without counting it as a failure, and stops the loop', async () => {
    const src = new BulkApiSource(options({ url: cc.url }), context());
    await src.start();
    cc.fail('hang');
    await clock.advanceAsync(0);
    await waitFor(() => cc.requests.length === 1, { what: 'the hung request' });
    const t = Date.now();
    await src.stop();
    expect(Date.now() - t).toBeLessThan(2_000);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
    expect(errorLines()).toEqual([]);
    expect(freshness.reason('desired')).toBeUndefined();
    await clock.advanceAsync(60 * 60_000);
    expect(cc.requests).toHaveLength(1);
  });
});

describe('credentials over NATS (HM9000 2013, docs/hm9000.md#bulk-credentials-over-nats)', () => {
  it('asks on the subject before each fetch and uses the reply as basic auth', async () => {
    bus.responder = async (subject) => reply(subject, '{"user":"bulk_api","password":"bulk-password"}');
    const src = await source({ credentials: 'nats', user: undefined, password: undefined, credentials_timeout: 1_234 });
    await tick(src);
    await tick(src, 6 * HB);
    expect(bus.requests.map(({ subject, timeoutMs, data }) => ({ subject, timeoutMs, data }))).toEqual([
      { subject: 'cloudcontroller.bulk.credentials.default', timeoutMs: 1_234, data: '' },
      { subject: 'cloudcontroller.bulk.credentials.default', timeoutMs: 1_234, data: '' },
    ]);
    expect(cc.requestsTo('/bulk/apps')[0]!.headers.authorization).toBe(`Basic ${Buffer.from('bulk_api:bulk-password').toString('base64')}`);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });

  it.each([
    [
      'a timeout',
      () => Promise.reject(Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' })),
      'Failed to request auth info on cloudcontroller.bulk.credentials.default: no reply within 5000ms (sources.desired.credentials_timeout)',
    ],
    ['no responder', () => Promise.reject(Object.assign(new Error('503'), { code: '503' })), /^Failed to request auth info on .*: no one answers that subject/],
    [
      'NATS down',
      () => Promise.reject(new BusNotConnectedError()),
      'Failed to request auth info on cloudcontroller.bulk.credentials.default: NATS is not connected',
    ],
    [
      'a reply that is not JSON',
      (s: string) => Promise.resolve(reply(s, 'user=bulk_api password=p4ss-s3cret')),
      'Failed to parse authentication info from JSON on cloudcontroller.bulk.credentials.default: the reply is not JSON',
    ],
    [
      'a reply without password',
      (s: string) => Promise.resolve(reply(s, '{"user":"bulk_api","pass":"p4ss-s3cret"}')),
      /^Failed to parse authentication info from JSON on .*: the reply's password must be a string, not missing$/,
    ],
  ])('%s skips the fetch with a reason', async (_what, responder, expected) => {
    bus.responder = responder;
    await store.replaceDesired([{ guid: 'old', version: 'v0', instances: 1, state: 'STARTED', packageState: 'STAGED' }]);
    const before = await store.getDesired();
    const src = await source({ credentials: 'nats' });
    await tick(src);
    expect(cc.requests).toHaveLength(0);
    expect(await store.getDesired()).toBe(before);
    const reason = src.health().last_error!;
    if (typeof expected === 'string') expect(reason).toBe(expected);
    else expect(reason).toMatch(expected);
    expect(freshness.reason('desired')?.reason).toBe(reason);
    expect(JSON.stringify(lines)).not.toContain('p4ss-s3cret');
  });

  it('a reply that never comes is cut off by the fetch timeout on the clock', async () => {
    bus.responder = () => new Promise(() => undefined);
    const src = await source({ credentials: 'nats', timeout: 7_000 });
    await clock.advanceAsync(0);
    await tick(src, 7_000);
    expect(src.health().last_error).toMatch(/took longer than 7000ms \(sources\.desired\.timeout\)/);
  });

  it('never logs the password', async () => {
    bus.responder = async (subject) => reply(subject, '{"user":"bulk_api","password":"bulk-password"}');
    const src = await source({ credentials: 'nats' });
    await tick(src);
    cc.fail('401');
    await tick(src, 6 * HB);
    expect(src.health().last_error).toBe(
      `CC bulk API at ${cc.url} answered 401: it refused the credentials received on cloudcontroller.bulk.credentials.default`,
    );
    expect(JSON.stringify(lines)).not.toContain('bulk-password');
    expect(JSON.stringify(lines)).not.toContain(Buffer.from('bulk_api:bulk-password').toString('base64'));
  });
});

describe('metrics', () => {
  it('counts fetches by result, times them, and gauges the apps of the last complete fetch', async () => {
    const src = await source();
    await tick(src);
    cc.fail('500');
    await tick(src, 6 * HB);
    expect(await metricValue('hmgate_desired_fetches_total', { result: 'ok' })).toBe(1);
    expect(await metricValue('hmgate_desired_fetches_total', { result: 'failed' })).toBe(1);
    expect(await metricValue('hmgate_desired_apps')).toBe(3);
    const hist = await registry.getSingleMetric('hmgate_desired_fetch_duration_seconds')!.get();
    expect(hist.values.find((v) => (v as { metricName?: string }).metricName === 'hmgate_desired_fetch_duration_seconds_count')?.value).toBe(2);
    // A second stage on the same registry shares the series instead of failing to register.
    expect(() => new BulkApiSource(options({ url: cc.url }), context())).not.toThrow();
  });
});
