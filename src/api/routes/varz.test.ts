import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { requireBasicAuth } from '../auth.js';
import { hasVarz, varzRoutes } from './varz.js';

const basic = (user: string, password: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

function api(source: Parameters<typeof varzRoutes>[1]) {
  return new Hono().route('/', varzRoutes(requireBasicAuth('magnet', 'pw'), source));
}

describe('GET /varz', () => {
  it("answers the source's hash as JSON, read at each request", async () => {
    let n = 0;
    const app = api(() => ({ type: 'HealthManager', heartbeat_msgs_received: ++n, total: { apps: 2 } }));
    const res = await app.request('/varz', { headers: basic('magnet', 'pw') });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.text()).toBe('{"type":"HealthManager","heartbeat_msgs_received":1,"total":{"apps":2}}');
    expect(await (await app.request('/varz', { headers: basic('magnet', 'pw') })).json()).toEqual({
      type: 'HealthManager',
      heartbeat_msgs_received: 2,
      total: { apps: 2 },
    });
  });

  it('takes an async source', async () => {
    const res = await api(async () => ({ state: 'RUNNING' })).request('/varz', { headers: basic('magnet', 'pw') });
    expect(await res.json()).toEqual({ state: 'RUNNING' });
  });

  it('needs basic auth: 401 and nothing else without it or with a wrong password', async () => {
    let read = 0;
    const app = api(() => ({ read: ++read }));
    for (const headers of [{}, basic('magnet', 'nope')]) {
      const res = await app.request('/varz', { headers });
      expect(res.status).toBe(401);
      expect(await res.text()).toBe('');
    }
    expect(read).toBe(0);
  });

  it('recognises a stage with varz()', () => {
    expect(hasVarz({ varz: () => ({}) })).toBe(true);
    expect(hasVarz({ start() {} })).toBe(false);
  });
});
