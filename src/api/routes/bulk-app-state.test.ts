import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { appKey } from '../../sdk/app-key.js';
import { type CrashCount, type DesiredApp, type InstanceHeartbeat, type StoreSnapshot } from '../../sdk/state.js';
import { requireBasicAuth } from '../auth.js';
import { bulkAppStateRoutes, type BulkAppStateDeps } from './bulk-app-state.js';

const desired: DesiredApp[] = [
  { guid: 'app-a', version: 'v2', instances: 2, state: 'STARTED', packageState: 'STAGED' },
  { guid: 'app-b', version: 'v1', instances: 1, state: 'STARTED', packageState: 'PENDING' },
];
const instances: InstanceHeartbeat[] = [
  { app: 'app-a', version: 'v2', instance: 'i-a0', index: 0, state: 'RUNNING', stateTimestamp: 1123.2, agent: 'dea-1' },
  { app: 'app-a', version: 'v2', instance: 'i-a1', index: 1, state: 'CRASHED', stateTimestamp: 12, agent: 'dea-2' },
  { app: 'app-a', version: 'v1', instance: 'i-old', index: 0, state: 'RUNNING', stateTimestamp: 0, agent: 'dea-1' },
];
const crashes: CrashCount[] = [
  { app: 'app-a', version: 'v2', index: 1, count: 2, createdAt: 1_700_000_000_500 },
  { app: 'ghost', version: 'v1', index: 0, count: 4, createdAt: 1_700_000_000_000 },
];

function group<T extends { app: string; version: string }>(list: T[]): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const x of list) m.set(appKey(x.app, x.version), [...(m.get(appKey(x.app, x.version)) ?? []), x]);
  return m;
}

const SNAPSHOT: StoreSnapshot = {
  now: 1_700_000_100_000,
  desired: new Map(desired.map((d) => [appKey(d.guid, d.version), d])),
  instances: group(instances),
  crashCounts: group(crashes),
  starts: new Map(),
  stops: new Map(),
  freshness: {},
};

const APP_A_V2 =
  '{"droplet":"app-a","version":"v2","desired":{"id":"app-a","version":"v2","instances":2,"state":"STARTED","package_state":"STAGED"},' +
  '"instance_heartbeats":[{"droplet":"app-a","version":"v2","instance":"i-a0","index":0,"state":"RUNNING","state_timestamp":1123.2,"dea_guid":"dea-1"},' +
  '{"droplet":"app-a","version":"v2","instance":"i-a1","index":1,"state":"CRASHED","state_timestamp":12,"dea_guid":"dea-2"}],' +
  '"crash_counts":[{"droplet":"app-a","version":"v2","instance_index":1,"crash_count":2,"created_at":1700000000}]}';
const APP_A_V1 =
  '{"droplet":"app-a","version":"v1","desired":{"id":"","version":"","instances":0,"state":"","package_state":""},' +
  '"instance_heartbeats":[{"droplet":"app-a","version":"v1","instance":"i-old","index":0,"state":"RUNNING","state_timestamp":0,"dea_guid":"dea-1"}],' +
  '"crash_counts":[]}';
const APP_B_V1 =
  '{"droplet":"app-b","version":"v1","desired":{"id":"app-b","version":"v1","instances":1,"state":"STARTED","package_state":"PENDING"},' +
  '"instance_heartbeats":[],"crash_counts":[]}';

function setup(overrides: Partial<BulkAppStateDeps> = {}) {
  const calls = { snapshot: 0, fresh: 0 };
  const deps: BulkAppStateDeps = {
    snapshot: async () => {
      calls.snapshot++;
      return SNAPSHOT;
    },
    fresh: async () => {
      calls.fresh++;
      return true;
    },
    ...overrides,
  };
  const app = new Hono();
  app.route('/', bulkAppStateRoutes(requireBasicAuth('magnet', 'orangutan4sale'), deps));
  // As buildApi does: an HTTPException (the 401) answers with its own response.
  app.onError((err, c) => ('getResponse' in err && typeof err.getResponse === 'function' ? (err.getResponse() as Response) : c.text('internal error', 500)));
  return { app, calls };
}

const AUTH = { Authorization: `Basic ${Buffer.from('magnet:orangutan4sale').toString('base64')}` };

async function post(body: string | Uint8Array<ArrayBuffer>, overrides: Partial<BulkAppStateDeps> = {}) {
  const { app, calls } = setup(overrides);
  const res = await app.request('/bulk_app_state', { method: 'POST', headers: AUTH, body });
  return { res, text: await res.text(), calls };
}

const req = (...apps: [string, string][]) => JSON.stringify(apps.map(([droplet, version]) => ({ droplet, version })));

describe('POST /bulk_app_state (docs/hm9000.md#app-state-over-http)', () => {
  it('answers the App JSON of each requested app keyed by guid, as text/plain like Go', async () => {
    const { res, text } = await post(req(['app-b', 'v1'], ['app-a', 'v2']));
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(text).toBe(`{"app-a":${APP_A_V2},"app-b":${APP_B_V1}}`);
  });

  it('answers an undesired app (an old version with live instances) with the zero desired object', async () => {
    const { text } = await post(req(['app-a', 'v1']));
    expect(text).toBe(`{"app-a":${APP_A_V1}}`);
  });

  it('omits unknown apps and apps that only have crash counts', async () => {
    const { res, text } = await post(req(['nope', 'v1'], ['ghost', 'v1'], ['app-b', 'v1'], ['app-b', 'v2']));
    expect(res.status).toBe(200);
    expect(text).toBe(`{"app-b":${APP_B_V1}}`);
  });

  it('collapses two versions of one guid: the later one wins', async () => {
    expect((await post(req(['app-a', 'v1'], ['app-a', 'v2']))).text).toBe(`{"app-a":${APP_A_V2}}`);
    expect((await post(req(['app-a', 'v2'], ['app-a', 'v1']))).text).toBe(`{"app-a":${APP_A_V1}}`);
  });

  it('answers {} when nothing requested is found, and for an empty or null request', async () => {
    for (const body of [req(['nope', 'v1']), '[]', 'null', '[{}]', '[null]']) {
      const { res, text } = await post(body);
      expect(res.status).toBe(200);
      expect(text).toBe('{}');
    }
  });

  it.each([
    ['malformed JSON', '[{"droplet":"app-a",'],
    ['an empty body', ''],
    ['an object, not an array', '{"droplet":"app-a","version":"v2"}'],
    ['an array of strings', '["app-a"]'],
    ['a number for a guid', '[{"droplet":7,"version":"v2"}]'],
    ['a byte-order mark before the array', '\ufeff[{"droplet":"app-a","version":"v2"}]'],
    ['a valid entry followed by a bad one', '[{"droplet":"app-a","version":"v2"},1]'],
  ])('answers 200 {} for %s without reading the store', async (_what, body) => {
    const { res, text, calls } = await post(body);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(text).toBe('{}');
    expect(calls.snapshot).toBe(0);
  });

  it('answers 200 {} when the state is not fresh', async () => {
    const { res, text, calls } = await post(req(['app-a', 'v2']), { fresh: async () => false });
    expect(res.status).toBe(200);
    expect(text).toBe('{}');
    expect(calls.snapshot).toBe(0);
  });

  it('answers 200 {} when checking freshness or reading the store fails, never an error', async () => {
    for (const overrides of [{ fresh: async () => Promise.reject(new Error('etcd down')) }, { snapshot: async () => Promise.reject(new Error('etcd down')) }]) {
      const { res, text } = await post(req(['app-a', 'v2']), overrides);
      expect(res.status).toBe(200);
      expect(text).toBe('{}');
    }
  });

  it('matches field names case-insensitively and ignores unknown fields, as Go did', async () => {
    const { text } = await post('[{"Droplet":"app-b","VERSION":"v1","extra":true}]');
    expect(text).toBe(`{"app-b":${APP_B_V1}}`);
  });

  it('accepts the body as raw bytes', async () => {
    const { text } = await post(new TextEncoder().encode(req(['app-b', 'v1'])));
    expect(text).toBe(`{"app-b":${APP_B_V1}}`);
  });

  it.each([
    ['no credentials', {}],
    ['a wrong password', { Authorization: `Basic ${Buffer.from('magnet:nope').toString('base64')}` }],
    ['a wrong user', { Authorization: `Basic ${Buffer.from('root:orangutan4sale').toString('base64')}` }],
    ['a malformed header', { Authorization: 'Basic !!!' }],
  ])('is 401 with the API Authentication realm for %s, and reads nothing', async (_what, headers) => {
    const { app, calls } = setup();
    const res = await app.request('/bulk_app_state', { method: 'POST', headers, body: req(['app-a', 'v2']) });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Basic realm="API Authentication"');
    expect(await res.text()).not.toContain('app-a');
    expect(calls).toEqual({ snapshot: 0, fresh: 0 });
  });

  // HM9000 answers 401 with an empty body (goji/httpauth with a handler that only writes 401).
  it('is 401 with an empty body', async () => {
    const { app } = setup();
    const res = await app.request('/bulk_app_state', { method: 'POST', body: '[]' });
    expect(res.status).toBe(401);
    expect(await res.text()).toBe('');
  });

  it('answers only POST', async () => {
    const { app } = setup();
    const res = await app.request('/bulk_app_state', { headers: AUTH });
    expect(res.status).toBe(404);
  });
});
