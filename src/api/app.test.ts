import { pino } from 'pino';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { buildApi } from './app.js';
import type { StatusBody } from './routes/status.js';
import { listen, parseListen } from './server.js';

const status: StatusBody = {
  foundation: 'eu-1',
  leader: true,
  leader_id: 'host:1',
  candidate: true,
  not_candidate_because: null,
  actual: { fresh: false, since: null, reason: 'no heartbeats saved yet' },
  desired: { fresh: true, since: '2026-01-01T00:00:00.000Z', reason: null },
  stages: { store: { kind: 'store', plugin: 'memory', healthy: true, last_error: null } },
  counters: { cycles: 3 },
  problems: [],
};

function app() {
  const registry = new Registry();
  new Counter({ name: 'hmgate_test_total', help: 'a test counter', registers: [registry] }).inc(7);
  return buildApi({ user: 'magnet', password: 'orangutan4sale', status: async () => status, metrics: registry, logger: pino({ level: 'silent' }) });
}

const basic = (u: string, p: string) => ({ Authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

describe('API', () => {
  it('GET /healthz answers without auth', async () => {
    const res = await app().request('/healthz');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('GET /v1/status answers the status with the right credentials', async () => {
    const res = await app().request('/v1/status', { headers: basic('magnet', 'orangutan4sale') });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(status);
  });

  it.each([
    ['no credentials', {}],
    ['a wrong password', basic('magnet', 'nope')],
    ['a wrong user', basic('root', 'orangutan4sale')],
    ['a malformed header', { Authorization: 'Basic !!!' }],
  ])('GET /v1/status with %s is 401 and nothing else', async (_what, headers) => {
    const res = await app().request('/v1/status', { headers });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Basic realm="API Authentication"');
    expect(await res.text()).toBe('');
  });

  it('GET /metrics serves Prometheus text without auth', async () => {
    const res = await app().request('/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await res.text()).toContain('hmgate_test_total 7');
  });

  it('unknown routes are 404 JSON', async () => {
    const res = await app().request('/nope');
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: 'not found' });
  });

  it('parses listen addresses, IPv6 included', () => {
    expect(parseListen('127.0.0.1:5155')).toEqual({ host: '127.0.0.1', port: 5155 });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(() => parseListen('5155')).toThrow(/must be host:port/);
    expect(() => parseListen('127.0.0.1:70000')).toThrow(/out of range/);
  });

  it('serves on a real socket and names a port already in use', async () => {
    const server = await listen(app(), '127.0.0.1:0');
    try {
      const res = await fetch(`http://127.0.0.1:${server.port}/v1/status`, { headers: basic('magnet', 'orangutan4sale') });
      expect(res.status).toBe(200);
      expect(((await res.json()) as StatusBody).foundation).toBe('eu-1');
      await expect(listen(app(), `127.0.0.1:${server.port}`)).rejects.toThrow(`cannot listen on 127.0.0.1:${server.port}: address already in use`);
    } finally {
      await server.close();
    }
  });
});
