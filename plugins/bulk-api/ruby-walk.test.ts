/**
 * `walk: ruby`: the bulk-api source as the Ruby Health Manager's desired state, on a virtual clock
 * against the fake Cloud Controller on 127.0.0.1 (the HTTP part is real). Credentials come from a
 * scripted bus, so a timeout is an answer the test gives, not a wait.
 */
import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { createLoggerFactory } from '../../src/log.js';
import type { Bus, BusMessage } from '../../src/sdk/bus.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { DropletRegistry } from '../../src/sdk/droplets.js';
import type { EventKind, PolicyEvent } from '../../src/sdk/events.js';
import { FreshnessBoard } from '../../src/pipeline/freshness/board.js';
import type { StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { startFakeCC, waitFor, type FakeApp, type FakeCCHandle } from '../../test/helpers/index.js';
import { MemoryStore } from '../memory-store/memory-store.js';
import { BulkApiSource, MAX_CONSECUTIVE_ERRORS } from './bulk-api.js';
import plugin from './index.js';
import type { BulkApiOptions } from './options.js';
import { bulkBaseUrl, parseRubyPage, parseUserCount, percentEncode, rubyAppsPath } from './page.js';

const T0 = 1_700_000_000_000;
const HB = 10_000;
const SUBJECT = 'cloudcontroller.bulk.credentials.default';
const CREDS = '{"user":"bulk_api","password":"bulk-password"}';
const AUTH = `Basic ${Buffer.from('bulk_api:bulk-password').toString('base64')}`;

/** The bus side of NATS request/reply, answered by the test at once. */
class ScriptedBus implements Bus {
  connected = true;
  readonly requests: { subject: string; data: string; timeoutMs: number; at: number }[] = [];
  answer: 'reply' | 'timeout' | 'no-responders' = 'reply';
  constructor(private readonly clock: VirtualClock) {}
  subscribe(): () => void {
    return () => undefined;
  }
  publish(): void {}
  async flush(): Promise<void> {}
  request(subject: string, data: string | Uint8Array, timeoutMs: number): Promise<BusMessage> {
    this.requests.push({ subject, data: typeof data === 'string' ? data : new TextDecoder().decode(data), timeoutMs, at: this.clock.now() });
    if (this.answer === 'timeout') return Promise.reject(Object.assign(new Error('TIMEOUT'), { code: 'TIMEOUT' }));
    if (this.answer === 'no-responders') return Promise.reject(Object.assign(new Error('503'), { code: '503' }));
    return Promise.resolve({ subject: '_INBOX.1', data: new TextEncoder().encode(CREDS) });
  }
}

const apps: FakeApp[] = [
  { guid: 'app-a', version: 'va', instances: 2, memory: 256, updated_at: '2013-07-31 22:00:00 +0000' },
  { guid: 'app-b', version: 'vb', state: 'STOPPED', memory: 128 },
  { guid: 'app-c', version: 'vc', instances: 3, package_state: 'PENDING', memory: 64 },
];

let clock: VirtualClock;
let store: MemoryStore;
let bus: ScriptedBus;
let freshness: FreshnessBoard;
let registry: Registry;
let lines: Record<string, unknown>[];
let emitted: PolicyEvent[];
let cc: FakeCCHandle;
let leader: boolean;
let wanted: (kind: EventKind) => boolean;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  clock = new VirtualClock(T0);
  store = new MemoryStore(clock);
  bus = new ScriptedBus(clock);
  freshness = new FreshnessBoard(() => clock.now(), 3 * HB, 12 * HB);
  registry = new Registry();
  lines = [];
  emitted = [];
  leader = true;
  wanted = () => true;
  cc = await startFakeCC({ apps, userCount: 42 });
  cleanups.push(() => cc.stop());
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
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
    configDir: '/nonexistent',
    metrics: registry,
    bus,
    store,
    freshness,
    isLeader: () => leader,
    events: { emit: (e) => void emitted.push(e), wants: (k) => wanted(k), droplets: new DropletRegistry() },
  };
}

/** What BulkApiSource takes: the validated options with the credentials subject resolved. */
type SourceOptions = ConstructorParameters<typeof BulkApiSource>[0];

/** The Ruby presets' options: credentials over NATS, user counts, a 60 s update period. */
function options(over: Partial<BulkApiOptions> = {}): SourceOptions {
  return {
    url: cc.url,
    batch_size: 2,
    poll_interval: 60_000,
    timeout: 600_000,
    network_timeout: 10_000,
    skip_cert_verify: false,
    credentials: 'nats',
    cc_partition: 'default',
    credentials_subject: SUBJECT,
    credentials_timeout: 5_000,
    walk: 'ruby',
    user_counts: true,
    forget_unseen: false,
    ...over,
  };
}

async function source(over: Partial<BulkApiOptions> = {}): Promise<BulkApiSource> {
  const src = new BulkApiSource(options(over), context());
  await src.start();
  cleanups.push(() => src.stop());
  return src;
}

/** Fires what is due after `ms` and waits for every update it started. */
async function tick(src: BulkApiSource, ms = 0): Promise<void> {
  await clock.advanceAsync(ms);
  await src.whenIdle();
}

const appsRequests = () => cc.requestsTo('/bulk/apps').map((r) => r.url);
const countsRequests = () => cc.requestsTo('/bulk/counts').map((r) => r.url);
const kinds = () => emitted.map((e) => (e.kind === 'desired' ? `desired:${e.app.guid}` : e.kind === 'walk' ? `walk:${e.phase}` : e.kind));
const messages = () => lines.map((l) => String(l.msg));

describe('walk: ruby — one update', () => {
  it('asks for credentials twice (counts and walk), then counts and pages with a percent-encoded token', async () => {
    const src = await source();
    await tick(src);
    expect(bus.requests.map(({ subject, data, timeoutMs }) => ({ subject, data, timeoutMs }))).toEqual([
      { subject: SUBJECT, data: '', timeoutMs: 5_000 },
      { subject: SUBJECT, data: '', timeoutMs: 5_000 },
    ]);
    expect(countsRequests()).toEqual(['/bulk/counts?model=user']);
    expect(appsRequests()).toEqual([
      '/bulk/apps?batch_size=2&bulk_token=%7B%7D',
      '/bulk/apps?batch_size=2&bulk_token=%7B%22id%22%3A2%7D',
      '/bulk/apps?batch_size=2&bulk_token=%7B%22id%22%3A3%7D',
    ]);
    for (const r of cc.requests) expect(r.headers.authorization).toBe(AUTH);
    expect(src.desiredAvailable()).toBe(true);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });

  it('raises walk start, one desired per app of every state as its page arrives, then walk done', async () => {
    const src = await source();
    await tick(src);
    expect(kinds()).toEqual(['walk:start', 'desired:app-a', 'desired:app-b', 'desired:app-c', 'walk:done']);
    const a = emitted.find((e) => e.kind === 'desired' && e.app.guid === 'app-a');
    expect(a).toEqual({
      kind: 'desired',
      app: { guid: 'app-a', version: 'va', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000', memory: 256 },
    });
    expect(emitted.at(-1)).toEqual({ kind: 'walk', phase: 'done', users: 42 }); // no seen list without forget_unseen; the user count for varz
  });

  it('keeps in the store what should run, bumps desired freshness, and publishes the statistics', async () => {
    const src = await source();
    await tick(src);
    expect([...(await store.getDesired()).keys()].sort()).toEqual([appKey('app-a', 'va'), appKey('app-c', 'vc')]);
    expect(await store.getFreshness('desired')).toMatchObject({ expiresAt: T0 + 12 * HB });
    expect(src.desiredStats()).toEqual({
      totalUsers: 42,
      total: { apps: 3, started_apps: 2, instances: 6, started_instances: 5, memory: 2 * 256 + 128 + 3 * 64, started_memory: 2 * 256 + 3 * 64 },
      bulkUpdateLoopDurationS: 0,
    });
  });

  it('counts one app and one user in the singular', async () => {
    cc.setApps([{ guid: 'app-a', version: 'va', instances: 2 }]);
    cc.setUserCount(1);
    const src = await source({ batch_size: 1 });
    await tick(src);
    expect(messages()).toContain('user counts received: 1 user');
    expect(messages()).toContain('desired state page 1: 1 app, 1 so far');
    expect(messages()).toContain('desired state walked: 1 app reported, 1 should run (2 pages, 0ms)');
  });

  it('does not ask for /bulk/counts unless user_counts', async () => {
    const src = await source({ user_counts: false });
    await tick(src);
    expect(countsRequests()).toEqual([]);
    expect(bus.requests).toHaveLength(1);
    expect(src.desiredStats().totalUsers).toBeNull();
  });

  it('prepends http:// to a bare host[:port], as bulk_api.host', async () => {
    const src = await source({ url: `127.0.0.1:${cc.port}` });
    expect(src.url).toBe(`http://127.0.0.1:${cc.port}`);
    await tick(src);
    expect(appsRequests()).toHaveLength(3);
    expect(bulkBaseUrl('api.vcap.me')).toBe('http://api.vcap.me');
    expect(bulkBaseUrl('https://api.vcap.me')).toBe('https://api.vcap.me');
    const validator = makeValidator({ heartbeatMs: HB, convertDurations: true });
    expect(validator.validate(plugin.optionsSchema, { url: 'api.vcap.me:8181' })).toEqual([]);
    expect(validator.validate(plugin.optionsSchema, { url: 'ftp://api.vcap.me' })).not.toEqual([]);
    expect(() => new BulkApiSource(options({ url: 'ftp://api.vcap.me' }), context())).toThrow(/must start with http:\/\/ or https:\/\//);
  });

  it('forget_unseen puts every app guid the walk reported on walk done (skipped apps too)', async () => {
    cc.setApps([...apps, { guid: 'app-bad', version: 'vx', extra: { updated_at: null } }]);
    const src = await source({ forget_unseen: true });
    await tick(src);
    expect(emitted.at(-1)).toEqual({ kind: 'walk', phase: 'done', seen: ['app-a', 'app-b', 'app-c', 'app-bad'], users: 42 });
    expect(() => new BulkApiSource(options({ walk: 'hm9000', forget_unseen: true }), context())).toThrow(/forget_unseen needs walk: ruby/);
  });

  it('skips an app it cannot take, with the reason counted and logged, and takes the rest of the page', async () => {
    cc.setApps([apps[0]!, { guid: 'app-bad', version: 'vx', extra: { memory: null } }, apps[2]!]);
    const src = await source();
    await tick(src);
    expect(kinds()).toEqual(['walk:start', 'desired:app-a', 'desired:app-c', 'walk:done']);
    const dropped = (await registry.getSingleMetric('hmgate_dropped_messages_total')!.get()).values;
    expect(dropped.find((v) => v.labels.reason === 'invalid_app')).toMatchObject({ value: 1, labels: { subject: 'cc:/bulk/apps' } });
    expect(messages().some((m) => /app "app-bad" on page 1: memory must be a number, not null/.test(m))).toBe(true);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });

  it('an app missing from a later walk gets no event and leaves the store; its record is the engine’s to keep', async () => {
    const src = await source();
    await tick(src);
    cc.setApps([apps[0]!]);
    emitted.length = 0;
    await tick(src, 60_000);
    expect(kinds()).toEqual(['walk:start', 'desired:app-a', 'walk:done']);
    expect([...(await store.getDesired()).keys()]).toEqual([appKey('app-a', 'va')]);
  });

  it('raises no desired event when nobody wants it', async () => {
    wanted = (k) => k !== 'desired';
    const src = await source();
    await tick(src);
    expect(kinds()).toEqual(['walk:start', 'walk:done']);
  });
});

describe('walk: ruby — credentials', () => {
  it('are cached: the next update asks no one', async () => {
    const src = await source();
    await tick(src);
    await tick(src, 60_000);
    expect(bus.requests).toHaveLength(2);
    expect(countsRequests()).toHaveLength(2);
    expect(appsRequests()).toHaveLength(6);
  });

  it.each([
    ['a timeout', 'timeout' as const, /no reply within 5000ms \(sources\.desired\.credentials_timeout\)/],
    ['no responder', 'no-responders' as const, /no one answers that subject/],
  ])('%s skips the whole update, logged once per request, and nothing is asked of the CC', async (_what, answer, why) => {
    bus.answer = answer;
    const src = await source();
    await tick(src);
    expect(bus.requests).toHaveLength(2);
    expect(cc.requests).toHaveLength(0);
    const ignored = lines.filter((l) =>
      /^Failed to request auth info on cloudcontroller\.bulk\.credentials\.default: .*; request ignored until the next desired-state update$/.test(
        String(l.msg),
      ),
    );
    expect(ignored).toHaveLength(2);
    expect(String(ignored[0]!.msg)).toMatch(why);
    expect(ignored[0]!.level).toBe('error');
    expect(kinds()).toEqual(['walk:start']);
    expect(src.desiredAvailable()).toBe(false);
    expect(src.health().last_error).toMatch(why);
    expect(freshness.reason('desired')?.reason).toMatch(/Failed to request auth info/);
    // Asked again at the next update (nothing cached), and the CC then answers.
    bus.answer = 'reply';
    await tick(src, 60_000);
    expect(bus.requests).toHaveLength(4);
    expect(src.desiredAvailable()).toBe(true);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });

  it('never logs the password', async () => {
    const src = await source();
    await tick(src);
    cc.failRoute('/bulk/counts', '401');
    await tick(src, 60_000);
    expect(JSON.stringify(lines)).not.toContain('bulk-password');
    expect(JSON.stringify(lines)).not.toContain(AUTH.slice(6));
  });
});

describe('walk: ruby — availability and failures', () => {
  it('a non-200 of /bulk/apps: unavailable, the walk stops, the credentials are kept', async () => {
    const src = await source({ user_counts: false });
    cc.failRoute('/bulk/apps', '500');
    await tick(src);
    expect(appsRequests()).toHaveLength(1);
    expect(src.desiredAvailable()).toBe(false);
    expect(kinds()).toEqual(['walk:start']);
    expect(src.health().last_error).toBe(`CC bulk API at ${cc.url} answered 500 on page 1 (CF-ServerError: An unknown error occurred.)`);
    cc.failRoute('/bulk/apps', null);
    await tick(src, 60_000);
    expect(bus.requests).toHaveLength(1); // still cached
    expect(src.desiredAvailable()).toBe(true);
  });

  it('a non-200 of /bulk/counts drops the credentials; availability is whichever answer came last', async () => {
    const src = await source({ network_timeout: 600_000 });
    cc.failRoute('/bulk/counts', '500');
    cc.failRoute('/bulk/apps', 'hang', 1);
    await clock.advanceAsync(0);
    await waitFor(() => countsRequests().length === 1 && appsRequests().length === 1 && lines.some((l) => /user counts failed/.test(String(l.msg))));
    expect(src.desiredAvailable()).toBe(false);
    expect(src.health().last_error).toBe(
      `CC bulk API at ${cc.url} answered 500 to /bulk/counts (CF-ServerError: An unknown error occurred.); credentials dropped`,
    );
    // The next update asks for credentials again (twice: counts and walk), while the first walk still hangs.
    cc.failRoute('/bulk/counts', null);
    await clock.advanceAsync(60_000);
    await waitFor(() => emitted.some((e) => e.kind === 'walk' && e.phase === 'done'));
    expect(bus.requests).toHaveLength(4);
    expect(src.desiredAvailable()).toBe(true);
  });

  it('a 200 of /bulk/counts makes desired state available while the walk still pages', async () => {
    const src = await source();
    cc.failRoute('/bulk/apps', 'hang');
    await clock.advanceAsync(0);
    await waitFor(() => src.desiredAvailable());
    expect(src.desiredStats().totalUsers).toBe(42);
    expect(kinds()).toEqual(['walk:start']);
  });

  it('a transport error of /bulk/counts drops the credentials too, and is not retried', async () => {
    const src = await source();
    cc.failRoute('/bulk/counts', 'reset', 1);
    await tick(src);
    expect(countsRequests()).toHaveLength(1);
    expect(lines.some((l) => /user counts failed: .*\(on \/bulk\/counts; credentials dropped\)/.test(String(l.msg)))).toBe(true);
    await tick(src, 60_000);
    expect(bus.requests.length).toBeGreaterThanOrEqual(3); // asked again after the drop
  });

  it(`retries the same token at once; ${MAX_CONSECUTIVE_ERRORS} transport errors in a row make it unavailable and drop the credentials`, async () => {
    const src = await source({ user_counts: false });
    await tick(src); // available, credentials cached
    expect(src.desiredAvailable()).toBe(true);
    cc.clearRequests();
    emitted.length = 0;
    cc.failRoute('/bulk/apps', 'reset');
    await tick(src, 60_000);
    expect(appsRequests()).toEqual(Array(MAX_CONSECUTIVE_ERRORS).fill('/bulk/apps?batch_size=2&bulk_token=%7B%7D'));
    expect(src.desiredAvailable()).toBe(false);
    expect(src.health().last_error).toMatch(
      /^too many consecutive bulk API errors \(10\): desired state is unavailable and the credentials dropped; the last: /,
    );
    expect(lines.filter((l) => /^bulk API request failed \(\d in a row\)/.test(String(l.msg)))).toHaveLength(MAX_CONSECUTIVE_ERRORS - 1);
    expect(kinds()).toEqual(['walk:start']);

    // The count carries over to the next walk: one more error and it gives up at once.
    cc.clearRequests();
    await tick(src, 60_000);
    expect(bus.requests).toHaveLength(2); // credentials asked again
    expect(appsRequests()).toHaveLength(1);
    expect(src.health().last_error).toMatch(/^too many consecutive bulk API errors \(11\)/);

    // Only an answer resets it: then errors are retried again.
    cc.failRoute('/bulk/apps', null);
    await tick(src, 60_000);
    expect(src.desiredAvailable()).toBe(true);
    cc.failRoute('/bulk/apps', 'reset', 3);
    cc.clearRequests();
    await tick(src, 60_000);
    expect(appsRequests()).toHaveLength(3 + 3);
    expect(src.desiredAvailable()).toBe(true);
    expect(src.health()).toEqual({ healthy: true, last_error: null });
  });

  it('a 200 page that is not JSON ends the walk, desired state staying available', async () => {
    const src = await source({ user_counts: false, batch_size: 500 });
    cc.failRoute('/bulk/apps', 'bad-json', 1);
    await tick(src);
    expect(src.desiredAvailable()).toBe(true);
    expect(src.health().last_error).toMatch(/sent a body that is not JSON/);
    expect(kinds()).toEqual(['walk:start']);
  });
});

describe('walk: ruby — schedule', () => {
  it('an update at start, then every poll_interval, even while the last still pages', async () => {
    await source({ user_counts: false, network_timeout: 600_000 });
    cc.failRoute('/bulk/apps', 'hang', 1);
    await clock.advanceAsync(0);
    await waitFor(() => appsRequests().length === 1);
    await clock.advanceAsync(59_999);
    expect(appsRequests()).toHaveLength(1);
    await clock.advanceAsync(1);
    await waitFor(() => emitted.some((e) => e.kind === 'walk' && e.phase === 'done'));
    expect(kinds().filter((k) => k === 'walk:start')).toHaveLength(2);
    expect(clock.nextDue()).toBe(T0 + 120_000);
  });

  it('refreshDesired() starts a full update at once, beside the walk under way', async () => {
    const src = await source();
    cc.failRoute('/bulk/apps', 'hang', 1);
    await clock.advanceAsync(0);
    await waitFor(() => appsRequests().length === 1 && countsRequests().length === 1);
    const refreshed = src.refreshDesired();
    await waitFor(() => emitted.some((e) => e.kind === 'walk' && e.phase === 'done'));
    await refreshed;
    expect(countsRequests()).toHaveLength(2);
    expect(kinds().filter((k) => k === 'walk:start')).toHaveLength(2);
  });

  it('a standby asks nothing; stop() aborts the walks under way and the schedule', async () => {
    leader = false;
    const src = await source();
    await tick(src);
    expect(cc.requests).toHaveLength(0);
    await src.refreshDesired();
    expect(cc.requests).toHaveLength(0);
    leader = true;
    cc.failRoute('/bulk/apps', 'hang');
    await clock.advanceAsync(60_000);
    await waitFor(() => appsRequests().length === 1);
    const t = Date.now();
    await src.stop();
    expect(Date.now() - t).toBeLessThan(2_000);
    expect(clock.nextDue()).toBeUndefined();
    expect(lines.filter((l) => l.level === 'error')).toEqual([]);
  });
});

describe('the HM9000 walk raises events too, once the fetch is complete', () => {
  it('walk start, desired per kept app, walk done; a failed fetch raises no done', async () => {
    const src = new BulkApiSource(
      options({ walk: 'hm9000', credentials: 'static', user: 'bulk_api', password: 'bulk-password', user_counts: false }),
      context(),
    );
    await src.start();
    cleanups.push(() => src.stop());
    await clock.advanceAsync(0);
    await src.whenIdle();
    expect(kinds()).toEqual(['walk:start', 'desired:app-a', 'desired:app-c', 'walk:done']);
    expect(src.desiredAvailable()).toBe(true);
    emitted.length = 0;
    cc.fail('500');
    await clock.advanceAsync(60_000);
    await src.whenIdle();
    expect(kinds()).toEqual(['walk:start']);
    expect(src.desiredAvailable()).toBe(false);
  });
});

describe('Ruby page parsing', () => {
  const entry = { instances: 1, state: 'STARTED', version: 'v', package_state: 'STAGED', updated_at: '2013-07-31 22:00:00 +0000', memory: 128 };

  it('percent-encodes every byte outside A-Z a-z 0-9 _ . - in upper case', () => {
    expect(percentEncode('{}')).toBe('%7B%7D');
    expect(percentEncode('{"id":5}')).toBe('%7B%22id%22%3A5%7D');
    expect(percentEncode('a b~é/_.-')).toBe('a%20b%7E%C3%A9%2F_.-');
    expect(rubyAppsPath('/x', 500, '{"id":{"a":[1,2]}}')).toBe('/x/bulk/apps?batch_size=500&bulk_token=%7B%22id%22%3A%7B%22a%22%3A%5B1%2C2%5D%7D%7D');
  });

  it('ends on missing, null or empty results; keeps the token opaque; refuses what it cannot read', () => {
    for (const body of ['{}', '{"results":null}', '{"results":{}}', '{"results":[]}', '{"results":{},"bulk_token":{"id":null}}']) {
      expect(parseRubyPage(body), body).toMatchObject({ ok: true, done: true });
    }
    expect(parseRubyPage(JSON.stringify({ results: { a: entry }, bulk_token: 'opaque' }))).toMatchObject({ ok: true, done: false, nextToken: '"opaque"' });
    expect(parseRubyPage(JSON.stringify({ results: { a: entry } }))).toMatchObject({ ok: true, done: false, nextToken: null });
    expect(parseRubyPage('not json')).toMatchObject({ ok: false, reason: expect.stringMatching(/not JSON/) });
    expect(parseRubyPage('[1]')).toMatchObject({ ok: false, reason: expect.stringMatching(/body must be an object/) });
    expect(parseRubyPage('{"results":[1]}')).toMatchObject({ ok: false, reason: expect.stringMatching(/results must be an object/) });
  });

  it.each([
    ['state', { state: null }, /state must be a string/],
    ['instances', { instances: '2' }, /instances must be a whole number/],
    ['version', { version: undefined }, /version must be a string/],
    ['package_state', { package_state: 3 }, /package_state must be a string/],
    ['updated_at', { updated_at: 'yesterday' }, /updated_at "yesterday" is not a time/],
    ['memory', { memory: undefined }, /memory must be a number/],
  ])('skips an app without a usable %s', (_f, change, why) => {
    const page = parseRubyPage(JSON.stringify({ results: { bad: { ...entry, ...change }, good: entry }, bulk_token: { id: 2 } }));
    expect(page).toMatchObject({ ok: true, results: 2, apps: [{ guid: 'good' }], skipped: [{ app: 'bad', reason: expect.stringMatching(why) }] });
  });

  it('keeps instances 0 and any app state', () => {
    const page = parseRubyPage(JSON.stringify({ results: { s: { ...entry, instances: 0, state: 'STOPPED', package_state: 'FAILED' } }, bulk_token: {} }));
    expect(page).toMatchObject({ ok: true, apps: [{ guid: 's', instances: 0, state: 'STOPPED', packageState: 'FAILED', memory: 128 }] });
  });

  it('reads the user count as the Ruby HM did (absent is 0)', () => {
    expect(parseUserCount('{"counts":{"user":42,"app":3}}')).toBe(42);
    expect(parseUserCount('{"counts":{}}')).toBe(0);
    expect(parseUserCount('{}')).toBe(0);
    expect(parseUserCount('{"counts":{"user":"7"}}')).toBe(7);
    expect(parseUserCount('nope')).toBeNull();
    expect(parseUserCount('{"counts":[1]}')).toBeNull();
  });
});
