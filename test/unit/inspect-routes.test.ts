import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../plugins/memory-store/memory-store.js';
import { buildDump } from '../../src/dump/build.js';
import { DecisionAudit } from '../../src/operator/audit.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { buildApi } from '../../src/api/app.js';
import type { StatusBody } from '../../src/api/routes/status.js';

const basic = { Authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` };
const T0 = Date.parse('2026-01-01T00:00:00Z');

async function setup() {
  const clock = new VirtualClock(T0);
  const store = new MemoryStore(clock);
  const apps = Array.from({ length: 5 }, (_, i) => ({ guid: `app-${i}`, version: 'v1', instances: 1, state: 'STARTED', packageState: 'STAGED' }));
  await store.replaceDesired([...apps, { guid: 'app-1', version: 'v2', instances: 2, state: 'STARTED', packageState: 'STAGED' }]);
  await store.saveHeartbeats(
    [{ agent: 'dea-1', instances: [{ app: 'app-1', version: 'v1', instance: 'i-1', index: 0, state: 'RUNNING', stateTimestamp: 1, agent: 'dea-1' }] }],
    30_000,
  );
  await store.putPendingStarts([
    {
      messageId: 'm-1',
      sendOn: T0 + 30_000,
      sentOn: 0,
      keepAlive: 0,
      app: 'app-1',
      version: 'v2',
      index: 0,
      priority: 1,
      skipVerification: false,
      reason: 'MISSING',
    },
  ]);
  const audit = new DecisionAudit(100);
  audit.record({
    at: T0 - 2000,
    action: 'start',
    outcome: 'enqueued',
    reason: 'MISSING',
    detail: 'instance is missing',
    app: 'app-1',
    version: 'v2',
    index: 0,
    message_id: 'm-1',
    facts: { running_indices: [], delay_ms: 30_000 },
  });
  audit.record({
    at: T0 - 1000,
    action: 'stop',
    outcome: 'suppressed',
    why: 'verification',
    detail: 'instance is no longer running',
    reason: 'EXTRA',
    app: 'app-3',
    version: 'v1',
    instance: 'x',
    message_id: 'm-2',
    facts: {},
  });
  const fresh = { fresh: true, since: new Date(T0).toISOString(), reason: null };
  const api = buildApi({
    user: 'magnet',
    password: 'pw',
    status: async () => ({}) as StatusBody,
    metrics: new Registry(),
    logger: pino({ level: 'silent' }),
    inspect: {
      dump: async () => buildDump({ foundation: 'f', now: clock.now(), snapshot: await store.snapshot(), actual: fresh, desired: fresh, freshnessError: null }),
      snapshot: () => store.snapshot(),
      now: () => clock.now(),
      audit,
    },
  });
  return { api, audit };
}

async function json(res: Response): Promise<any> {
  return res.json();
}

describe('GET /v1/apps, /v1/apps/:guid, /v1/decisions, /v1/dump', () => {
  it('need basic auth', async () => {
    const { api } = await setup();
    for (const path of ['/v1/apps', '/v1/apps/app-1', '/v1/decisions', '/v1/dump']) {
      const res = await api.request(path);
      expect(res.status).toBe(401);
      expect(await res.text()).toBe('');
    }
  });

  it('lists apps a page at a time, sorted by guid and version', async () => {
    const { api } = await setup();
    const all = await json(await api.request('/v1/apps', { headers: basic }));
    expect(all).toMatchObject({ page: 1, per_page: 100, total: 6 });
    expect(all.apps.map((a: any) => `${a.guid},${a.version}`)).toEqual(['app-0,v1', 'app-1,v1', 'app-1,v2', 'app-2,v1', 'app-3,v1', 'app-4,v1']);
    const page2 = await json(await api.request('/v1/apps?page=2&per_page=4', { headers: basic }));
    expect(page2).toMatchObject({ page: 2, per_page: 4, total: 6 });
    expect(page2.apps.map((a: any) => a.guid)).toEqual(['app-3', 'app-4']);
    expect(all.apps[1]).toMatchObject({
      desired: { instances: 1 },
      instances: [{ instance: 'i-1', index: 0, state: 'RUNNING', agent: 'dea-1' }],
      crash_counts: [],
      pending_starts: [],
    });
    for (const bad of ['page=0', 'per_page=1001', 'page=x']) {
      const res = await api.request(`/v1/apps?${bad}`, { headers: basic });
      expect(res.status).toBe(400);
      expect((await json(res)).error).toMatch(/page|per_page/);
    }
  });

  it('shows one app: every version, pending messages, and its recent decisions with reasons', async () => {
    const { api } = await setup();
    const one = await json(await api.request('/v1/apps/app-1', { headers: basic }));
    expect(one.guid).toBe('app-1');
    expect(one.versions.map((v: any) => v.version)).toEqual(['v1', 'v2']);
    expect(one.versions[1].pending_starts).toEqual([
      expect.objectContaining({ message_id: 'm-1', index: 0, reason: 'MISSING', send_in_ms: 30_000, delete_in_ms: null, sent_on: null }),
    ]);
    expect(one.decisions).toEqual([
      expect.objectContaining({ outcome: 'enqueued', reason: 'MISSING', detail: 'instance is missing', facts: { running_indices: [], delay_ms: 30_000 } }),
    ]);
    const missing = await api.request('/v1/apps/nope', { headers: basic });
    expect(missing.status).toBe(404);
    // an app known only from its decisions is still shown
    expect((await json(await api.request('/v1/apps/app-3', { headers: basic }))).decisions).toHaveLength(1);
  });

  it('serves the decisions since a time (ISO or ms), limited and filtered', async () => {
    const { api } = await setup();
    const all = await json(await api.request('/v1/decisions', { headers: basic }));
    expect(all.count).toBe(2);
    expect(all.decisions.map((d: any) => d.message_id)).toEqual(['m-1', 'm-2']);
    const since = await json(await api.request(`/v1/decisions?since=${new Date(T0 - 1500).toISOString()}`, { headers: basic }));
    expect(since.decisions.map((d: any) => d.why)).toEqual(['verification']);
    const ms = await json(await api.request(`/v1/decisions?since=${T0 - 2000}&limit=1`, { headers: basic }));
    expect(ms.decisions.map((d: any) => d.message_id)).toEqual(['m-1']);
    expect((await json(await api.request('/v1/decisions?app=app-3', { headers: basic }))).count).toBe(1);
    expect((await api.request('/v1/decisions?since=yesterday', { headers: basic })).status).toBe(400);
    expect((await api.request('/v1/decisions?limit=0', { headers: basic })).status).toBe(400);
  });

  it('serves the dump, valid against schemas/dump.schema.json', async () => {
    const { api } = await setup();
    const doc = await json(await api.request('/v1/dump', { headers: basic }));
    const schema = JSON.parse(readFileSync(resolve(__dirname, '../../schemas/dump.schema.json'), 'utf8'));
    const ajv = new Ajv({ allErrors: true, strict: false });
    (addFormats as unknown as (a: Ajv) => void)(ajv);
    const validate = ajv.compile(schema);
    expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
    expect(doc.apps).toHaveLength(6);
    expect(validate({ ...doc, apps: [{ guid: 'x' }] })).toBe(false);
  });
});
