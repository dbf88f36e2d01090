/**
 * The example webhook notifier, loaded by path the way a config names it, against a real HTTP
 * server on 127.0.0.1.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { packageRoot } from '../../src/paths.js';
import type { SinkStage, StartOrder, StopOrder } from '../../src/sdk/orders.js';
import { loadPlugin } from '../../src/pipeline/plugin-loader.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

const start: StartOrder = { action: 'start', messageId: 'msg-1', app: 'app-guid-1', version: 'v-1', index: 2, reason: 'MISSING', priority: 0.5 };
const stop: StopOrder = {
  action: 'stop',
  messageId: 'msg-2',
  app: 'app-guid-1',
  version: 'v-1',
  instance: 'inst-9',
  index: 0,
  isDuplicate: true,
  reason: 'DUPLICATE',
};

let server: Server | undefined;
afterEach(async () => {
  const s = server;
  server = undefined;
  if (s) {
    s.closeAllConnections();
    await new Promise<void>((done) => s.close(() => done()));
  }
});

/** A webhook receiver answering `status()` (200 by default), or never answering when it is 0. */
async function receiver(status: () => number = () => 200) {
  const received: Received[] = [];
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const code = status();
      if (code === 0) return; // hang
      res.writeHead(code, { 'content-type': 'text/plain' });
      res.end(code === 500 ? 'database on fire\nsecond line' : 'ok');
    });
  });
  await new Promise<void>((done) => server!.listen({ host: '127.0.0.1', port: 0 }, done));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/hooks/hm`, received };
}

async function webhook(
  raw: Record<string, unknown>,
): Promise<ReturnType<typeof makeStageContext> & { problems: string[]; options: Record<string, unknown>; stage?: SinkStage }> {
  const { definition, builtin } = await loadPlugin('./examples/webhook-notifier/index.js', packageRoot);
  expect(builtin).toBe(false);
  expect(definition).toMatchObject({ name: 'webhook-notifier', kind: 'sink' });
  const options = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(definition.optionsSchema, options);
  const t = makeStageContext({ id: 'webhook', kind: 'sink' });
  if (problems.length > 0) return { problems: problems.map((p) => p.message), options, ...t };
  const stage = (await definition.create(options, t.ctx)) as SinkStage;
  return { problems: [], options, stage, ...t };
}

describe('examples/webhook-notifier', () => {
  it('validates its options with the loader: url required, defaults filled in, unknown keys refused', async () => {
    expect((await webhook({})).problems).toEqual(['missing required key "url"']);
    expect((await webhook({ url: 'http://x', timout_ms: 5 })).problems).toEqual(['unknown key "timout_ms" (did you mean "timeout_ms"?)']);
    expect((await webhook({ url: 'http://x' })).options).toEqual({ url: 'http://x', headers: {}, timeout_ms: 5000 });
  });

  it('POSTs each order as JSON with the configured headers', async () => {
    const hook = await receiver();
    const { stage, logs } = await webhook({ url: hook.url, headers: { Authorization: 'Bearer t0ken', 'X-Foundation': 'test' } });
    await stage!.send(start);
    await stage!.send(stop);
    expect(hook.received.map((r) => [r.method, r.url, r.headers['content-type'], r.headers.authorization, r.headers['x-foundation']])).toEqual([
      ['POST', '/hooks/hm', 'application/json', 'Bearer t0ken', 'test'],
      ['POST', '/hooks/hm', 'application/json', 'Bearer t0ken', 'test'],
    ]);
    expect(hook.received.map((r) => r.body)).toEqual([
      '{"foundation":"test","sink":"webhook","order":{"action":"start","messageId":"msg-1","app":"app-guid-1","version":"v-1","index":2,"reason":"MISSING","priority":0.5}}',
      '{"foundation":"test","sink":"webhook","order":{"action":"stop","messageId":"msg-2","app":"app-guid-1","version":"v-1","instance":"inst-9","index":0,"isDuplicate":true,"reason":"DUPLICATE"}}',
    ]);
    expect(JSON.parse(hook.received[1]!.body).order).toEqual(stop);
    expect(stage!.health!()).toEqual({ healthy: true, last_error: null });
    expect(logs.filter((l) => String(l.msg).startsWith('webhook: sent')).map((l) => l.msg)).toEqual([
      'webhook: sent start (MISSING)',
      'webhook: sent stop (DUPLICATE)',
    ]);
    expect(JSON.stringify(logs)).not.toContain('t0ken');
  });

  it('a 500 answer makes send() reject, and the stage unhealthy until the next delivery', async () => {
    let status = 500;
    const hook = await receiver(() => status);
    const { stage } = await webhook({ url: hook.url });
    await expect(stage!.send(start)).rejects.toThrow(new Error(`webhook ${hook.url} answered 500 (database on fire)`));
    expect(stage!.health!()).toEqual({
      healthy: false,
      last_error: `start MISSING for app-guid-1/2 not sent: webhook ${hook.url} answered 500 (database on fire)`,
    });
    status = 204;
    await stage!.send(start);
    expect(stage!.health!()).toEqual({ healthy: true, last_error: null });
  });

  it('no answer within timeout_ms, or nobody listening, makes send() reject', async () => {
    const hook = await receiver(() => 0);
    const { stage } = await webhook({ url: hook.url, timeout_ms: 200 });
    await expect(stage!.send(stop)).rejects.toThrow(`webhook ${hook.url} did not answer within 200ms`);
    const gone = hook.url;
    server!.closeAllConnections();
    await new Promise<void>((done) => server!.close(() => done()));
    server = undefined;
    await expect(stage!.send(stop)).rejects.toThrow(`webhook ${gone} could not be reached: ECONNREFUSED`);
  });
});
