/**
 * The notifier against real services on 127.0.0.1: a nats-server with a subscriber in the CC's
 * place (protocol hm9000), and the fake Cloud Controller's internal API (protocol hm9000-http).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type Msg, type NatsConnection } from 'nats';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { makeValidator } from '../../src/config/validate.js';
import { createLoggerFactory } from '../../src/log.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { Engine } from '../../src/pipeline/engine.js';
import { BusNotConnectedError } from '../../src/sdk/bus.js';
import type { RequestOrder, StartOrder, StopOrder } from '../../src/sdk/orders.js';
import { NatsBus } from '../../src/bus/nats-bus.js';
import { freePort, makeCA, makeSelfSignedCert, makeSignedCert, startFakeCC, startNatsServer, waitFor } from '../../test/helpers/index.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin, { type Notifier } from './index.js';

const fixtures = join(import.meta.dirname, '../../test/fixtures/plugins');

const START_JSON = '{"message_id":"msg-1","droplet":"app-guid-1","version":"v-1","instance_index":1}';
const STOP_JSON = '{"message_id":"msg-2","droplet":"app-guid-1","version":"v-1","instance_guid":"inst-guid-9","instance_index":0,"is_duplicate":false}';
const start: StartOrder = { action: 'start', messageId: 'msg-1', app: 'app-guid-1', version: 'v-1', index: 1, reason: 'MISSING', priority: 1 };
const stop: StopOrder = {
  action: 'stop',
  messageId: 'msg-2',
  app: 'app-guid-1',
  version: 'v-1',
  instance: 'inst-guid-9',
  index: 0,
  isDuplicate: false,
  reason: 'EXTRA',
};

/** Things to stop after each test, last first. */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

function validated(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  expect(makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data)).toEqual([]);
  return data as Parameters<typeof plugin.create>[0];
}

async function notifierWith(raw: Record<string, unknown>, t = makeStageContext({ id: 'cc', kind: 'sink' })) {
  const notifier = (await plugin.create(validated(raw), t.ctx)) as Notifier;
  cleanups.push(() => notifier.stop());
  return { ...t, notifier };
}

describe('protocol hm9000 over a real nats-server', () => {
  async function natsSetup() {
    const server = await startNatsServer();
    cleanups.push(() => server.stop());
    const t = makeStageContext({ id: 'cc', kind: 'sink' });
    const bus = new NatsBus({ servers: [server.url], name: 'hmgate-test', connectTimeoutMs: 5000 }, t.ctx.logger);
    await bus.start();
    cleanups.push(() => bus.stop());
    expect(bus.connected).toBe(true);
    t.ctx.bus = bus;
    // The Cloud Controller's side: a queue subscription in group "cc" on both subjects.
    const cc: NatsConnection = await connect({ servers: server.url, name: 'fake-cc' });
    cleanups.push(() => cc.close());
    const received: Msg[] = [];
    cc.subscribe('hm9000.*', { queue: 'cc', callback: (_err, msg) => void received.push(msg) });
    await cc.flush();
    return { ...t, received };
  }

  it('a subscriber receives exactly the wire bytes on hm9000.start and hm9000.stop', async () => {
    const { received, ...t } = await natsSetup();
    const { notifier } = await notifierWith({}, t);
    await notifier.send(start);
    await notifier.send(stop);
    await t.ctx.bus.flush();
    await waitFor(() => received.length === 2, { timeoutMs: 5000, what: 'two messages' });
    expect(received.map((m) => m.subject)).toEqual(['hm9000.start', 'hm9000.stop']);
    expect(Buffer.from(received[0]!.data).equals(Buffer.from(START_JSON, 'utf8'))).toBe(true);
    expect(Buffer.from(received[1]!.data).equals(Buffer.from(STOP_JSON, 'utf8'))).toBe(true);
    expect(received.every((m) => m.reply === undefined || m.reply === '')).toBe(true); // fire-and-forget
    expect(notifier.health()).toEqual({ healthy: true, last_error: null });
  });

  it('publishes on the configured subjects', async () => {
    const { received, ...t } = await natsSetup();
    const { notifier } = await notifierWith({ start_subject: 'hm9000.go', stop_subject: 'hm9000.halt' }, t);
    await notifier.send(start);
    await notifier.send(stop);
    await t.ctx.bus.flush();
    await waitFor(() => received.length === 2, { timeoutMs: 5000, what: 'two messages' });
    expect(received.map((m) => [m.subject, new TextDecoder().decode(m.data)])).toEqual([
      ['hm9000.go', START_JSON],
      ['hm9000.halt', STOP_JSON],
    ]);
  });

  it('with NATS unreachable, send() rejects with BusNotConnectedError and the stage is unhealthy', async () => {
    const t = makeStageContext({ id: 'cc', kind: 'sink' });
    const bus = new NatsBus({ servers: [`nats://127.0.0.1:${await freePort()}`], name: 'hmgate-test', connectTimeoutMs: 300 }, t.ctx.logger);
    await bus.start();
    cleanups.push(() => bus.stop());
    t.ctx.bus = bus;
    const { notifier } = await notifierWith({}, t);
    await expect(notifier.send(start)).rejects.toBeInstanceOf(BusNotConnectedError);
    expect(notifier.health().healthy).toBe(false);
    expect(notifier.health().last_error).toMatch(/^start MISSING for app-guid-1\/1 not sent: NATS is not connected/);
  });
});

describe('Ruby HM protocols over a real nats-server', () => {
  const request: RequestOrder = {
    action: 'request',
    messageId: 'm-1',
    app: 'app-guid-1',
    reason: 'MISSING',
    request: {
      op: 'START',
      droplet: 'app-guid-1',
      lastUpdated: 1375308000,
      version: 'app-version-1',
      running: { 'app-version-1': 1 },
      indices: [1],
      flapping: false,
    },
  };
  const stopRequest: RequestOrder = {
    action: 'request',
    messageId: 'm-2',
    app: 'app-guid-2',
    reason: 'STOPPED',
    request: {
      op: 'STOP',
      droplet: 'app-guid-2',
      lastUpdated: 1375308000,
      version: 'app-version-2',
      running: {},
      instances: [{ instance: 'inst-2-0', version: 'app-version-2' }],
    },
  };

  async function ccOn(pattern: string) {
    const server = await startNatsServer();
    cleanups.push(() => server.stop());
    const t = makeStageContext({ id: 'cc', kind: 'sink' });
    const bus = new NatsBus({ servers: [server.url], name: 'hmgate-test', connectTimeoutMs: 5000 }, t.ctx.logger);
    await bus.start();
    cleanups.push(() => bus.stop());
    t.ctx.bus = bus;
    // The Cloud Controller of either era subscribed in queue group "cc".
    const cc: NatsConnection = await connect({ servers: server.url, name: 'fake-cc' });
    cleanups.push(() => cc.close());
    const received: Msg[] = [];
    cc.subscribe(pattern, { queue: 'cc', callback: (_err, msg) => void received.push(msg) });
    await cc.flush();
    return { t, received };
  }

  it('protocol health: the observed bodies arrive on health.start and health.stop', async () => {
    const { t, received } = await ccOn('health.*');
    const { notifier } = await notifierWith({ protocol: 'health' }, t);
    await notifier.send(request);
    await notifier.send(stopRequest);
    await t.ctx.bus.flush();
    await waitFor(() => received.length === 2, { timeoutMs: 5000, what: 'two messages' });
    expect(received.map((m) => [m.subject, new TextDecoder().decode(m.data)])).toEqual([
      [
        'health.start',
        '{"droplet":"app-guid-1","last_updated":1375308000,"version":"app-version-1","indices":[1],"running":{"app-version-1":1},"flapping":false}',
      ],
      ['health.stop', '{"droplet":"app-guid-2","last_updated":1375308000,"instances":{"inst-2-0":"app-version-2"},"running":{},"version":"app-version-2"}'],
    ]);
  });

  it('protocol cc-partition: both on cloudcontrollers.hm.requests.<cc_partition>', async () => {
    const { t, received } = await ccOn('cloudcontrollers.hm.requests.*');
    const { notifier } = await notifierWith({ protocol: 'cc-partition', cc_partition: 'ng' }, t);
    await notifier.send(request);
    await notifier.send(stopRequest);
    await t.ctx.bus.flush();
    await waitFor(() => received.length === 2, { timeoutMs: 5000, what: 'two messages' });
    expect(received.map((m) => [m.subject, new TextDecoder().decode(m.data)])).toEqual([
      ['cloudcontrollers.hm.requests.ng', '{"droplet":"app-guid-1","op":"START","last_updated":1375308000,"version":"app-version-1","indices":[1]}'],
      ['cloudcontrollers.hm.requests.ng', '{"droplet":"app-guid-2","op":"STOP","last_updated":1375308000,"instances":["inst-2-0"]}'],
    ]);
  });
});

describe('protocol hm9000-http against the fake Cloud Controller', () => {
  async function ccSetup(extra: Record<string, unknown> = {}, ccOpts: Parameters<typeof startFakeCC>[0] = {}) {
    const cc = await startFakeCC({ user: 'hm-user', password: 'hm-s3cret', ...ccOpts });
    cleanups.push(() => cc.stop());
    const t = await notifierWith({ protocol: 'hm9000-http', cc_url: cc.url, user: 'hm-user', password: 'hm-s3cret', ...extra });
    return { cc, ...t };
  }
  const base64 = (s: string) => Buffer.from(s).toString('base64');

  it('POSTs start and stop to /internal/dea/hm9000/{start,stop}/<app guid> with basic auth and the wire body', async () => {
    const { cc, notifier, logs, metrics } = await ccSetup();
    await notifier.send(start);
    await notifier.send(stop);
    expect(cc.requests.map((r) => ({ method: r.method, path: r.path, auth: r.headers.authorization, type: r.headers['content-type'], body: r.body }))).toEqual([
      {
        method: 'POST',
        path: '/internal/dea/hm9000/start/app-guid-1',
        auth: `Basic ${base64('hm-user:hm-s3cret')}`,
        type: 'application/json',
        body: START_JSON,
      },
      { method: 'POST', path: '/internal/dea/hm9000/stop/app-guid-1', auth: `Basic ${base64('hm-user:hm-s3cret')}`, type: 'application/json', body: STOP_JSON },
    ]);
    expect(notifier.health()).toEqual({ healthy: true, last_error: null });
    const sent = logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Sent '));
    expect(sent).toEqual([
      expect.objectContaining({
        level: 30,
        reason: 'MISSING',
        message_id: 'msg-1',
        app: 'app-guid-1',
        url: `${cc.url}/internal/dea/hm9000/start/app-guid-1`,
        protocol: 'hm9000-http',
      }),
      expect.objectContaining({
        level: 30,
        reason: 'EXTRA',
        message_id: 'msg-2',
        instance: 'inst-guid-9',
        url: `${cc.url}/internal/dea/hm9000/stop/app-guid-1`,
      }),
    ]);
    const text = JSON.stringify(logs);
    expect(text).not.toContain('hm-s3cret');
    expect(text).not.toContain(base64('hm-user:hm-s3cret'));
    const counted = (await metrics.getSingleMetric('hmgate_notifier_sends_total')!.get()).values;
    expect(counted.map((v) => [v.labels.protocol, v.labels.action, v.labels.result, v.value])).toEqual([
      ['hm9000-http', 'start', 'ok', 1],
      ['hm9000-http', 'stop', 'ok', 1],
    ]);
  });

  it('keeps a base path of cc_url and ignores a trailing slash', async () => {
    const cc = await startFakeCC({ user: 'u', password: 'p' });
    cleanups.push(() => cc.stop());
    const { notifier } = await notifierWith({ protocol: 'hm9000-http', cc_url: `${cc.url}/cc/`, user: 'u', password: 'p' });
    await expect(notifier.send(start)).rejects.toThrow(`CC answered 404 for POST ${cc.url}/cc/internal/dea/hm9000/start/app-guid-1`);
    expect(cc.requests.map((r) => r.path)).toEqual(['/cc/internal/dea/hm9000/start/app-guid-1']);
  });

  it('a 404 is a failed send that asks whether the CC uses this health manager; the next 200 makes the stage healthy again', async () => {
    const { cc, notifier, metrics } = await ccSetup();
    cc.respondInternal(404);
    const message = `CC answered 404 for POST ${cc.url}/internal/dea/hm9000/start/app-guid-1: is the Cloud Controller configured to use this health manager?`;
    await expect(notifier.send(start)).rejects.toThrow(message);
    expect(notifier.health()).toEqual({ healthy: false, last_error: expect.stringContaining(message) });
    expect(notifier.health().last_error).toMatch(/^start MISSING for app-guid-1\/1 not sent: CC answered 404/);

    cc.respondInternal(null);
    await notifier.send(start);
    expect(notifier.health()).toEqual({ healthy: true, last_error: null });
    const counted = (await metrics.getSingleMetric('hmgate_notifier_sends_total')!.get()).values;
    expect(Object.fromEntries(counted.map((v) => [v.labels.result, v.value]))).toEqual({ failed: 1, ok: 1 });
  });

  it('a 500 is a failed send naming the status and the URL', async () => {
    const { cc, notifier } = await ccSetup();
    cc.respondInternal(500);
    await expect(notifier.send(stop)).rejects.toThrow(new Error(`CC answered 500 for POST ${cc.url}/internal/dea/hm9000/stop/app-guid-1`));
    cc.fail('500');
    await expect(notifier.send(stop)).rejects.toThrow(
      new Error(`CC answered 500 for POST ${cc.url}/internal/dea/hm9000/stop/app-guid-1 (CF-ServerError: An unknown error occurred.)`),
    );
    expect(cc.requests).toHaveLength(2);
  });

  it('wrong credentials: the 401 names the options to check, never the password', async () => {
    const cc = await startFakeCC({ user: 'hm-user', password: 'right' });
    cleanups.push(() => cc.stop());
    const { notifier } = await notifierWith({ protocol: 'hm9000-http', cc_url: cc.url, user: 'hm-user', password: 'wrong-pw' });
    const err = await notifier.send(start).then(
      () => undefined,
      (e: Error) => e,
    );
    expect(err?.message).toBe(
      `CC answered 401 for POST ${cc.url}/internal/dea/hm9000/start/app-guid-1: the Cloud Controller refused sinks.cc.user / password (CF-NotAuthenticated: Authentication error)`,
    );
    expect(notifier.health().last_error).not.toContain('wrong-pw');
  });

  it('no answer within timeout, and a refused connection, are failed sends', async () => {
    const { cc, notifier } = await ccSetup({ timeout: '300ms' });
    cc.fail('hang');
    const began = Date.now();
    await expect(notifier.send(start)).rejects.toThrow(
      new Error(`POST ${cc.url}/internal/dea/hm9000/start/app-guid-1 failed: no answer within 300ms (sinks.cc.timeout)`),
    );
    expect(Date.now() - began).toBeLessThan(5000);
    await cc.stop();
    await expect(notifier.send(start)).rejects.toThrow(
      `POST ${cc.url}/internal/dea/hm9000/start/app-guid-1 failed: connection refused by 127.0.0.1:${cc.port}: check sinks.cc.cc_url`,
    );
    expect(notifier.health().healthy).toBe(false);
  });

  it('send() after stop() rejects', async () => {
    const { cc, notifier } = await ccSetup();
    await notifier.stop();
    await expect(notifier.send(start)).rejects.toThrow('sink cc is stopped');
    expect(cc.requests).toHaveLength(0);
  });

  describe('over TLS', () => {
    it('verifies the CC certificate: untrusted fails, ca_file (relative to the config directory) trusts it', async () => {
      const ca = await makeCA();
      const leaf = await makeSignedCert(ca, '127.0.0.1');
      const cc = await startFakeCC({ user: 'u', password: 'p', tls: leaf });
      cleanups.push(() => cc.stop());
      const dir = await mkdtemp(join(tmpdir(), 'hmgate-notifier-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      await writeFile(join(dir, 'cc-ca.pem'), ca.cert);
      const options = { protocol: 'hm9000-http', cc_url: cc.url, user: 'u', password: 'p' };

      const untrusted = await notifierWith(options);
      await expect(untrusted.notifier.send(start)).rejects.toThrow(
        /^POST https:\/\/127\.0\.0\.1:\d+\/internal\/dea\/hm9000\/start\/app-guid-1 failed: the CC certificate for 127\.0\.0\.1:\d+ is not trusted \([A-Z_]+\): set sinks\.cc\.ca_file, or sinks\.cc\.skip_cert_verify: true$/,
      );
      expect(cc.requests).toHaveLength(0);

      const trusted = await notifierWith({ ...options, ca_file: 'cc-ca.pem' }, makeStageContext({ id: 'cc', kind: 'sink', configDir: dir }));
      await trusted.notifier.send(start);
      expect(cc.requests.map((r) => r.body)).toEqual([START_JSON]);
    });

    it('skip_cert_verify: true accepts a self-signed certificate', async () => {
      const cc = await startFakeCC({ user: 'u', password: 'p', tls: await makeSelfSignedCert('127.0.0.1') });
      cleanups.push(() => cc.stop());
      const { notifier } = await notifierWith({ protocol: 'hm9000-http', cc_url: cc.url, user: 'u', password: 'p', skip_cert_verify: true });
      await notifier.send(stop);
      expect(cc.requests.map((r) => [r.path, r.body])).toEqual([['/internal/dea/hm9000/stop/app-guid-1', STOP_JSON]]);
    });
  });
});

describe('built from YAML by the engine', () => {
  it('both protocols side by side: the CC gets the POST and a NATS subscriber the message', async () => {
    const server = await startNatsServer();
    cleanups.push(() => server.stop());
    const cc = await startFakeCC({ user: 'hm-user', password: 'hm-s3cret' });
    cleanups.push(() => cc.stop());
    const sub = await connect({ servers: server.url });
    cleanups.push(() => sub.close());
    const received: string[] = [];
    sub.subscribe('hm9000.start', { callback: (_err, msg) => void received.push(new TextDecoder().decode(msg.data)) });
    await sub.flush();

    const dir = await mkdtemp(join(tmpdir(), 'hmgate-notifier-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'hmgate.yaml');
    await writeFile(
      file,
      [
        'foundation: virt',
        `bus: { servers: ["${server.url}"] }`,
        'freshness: { gate: false }',
        'policies:',
        `  missing: { plugin: ${join(fixtures, 'missing-policy.js')} }`,
        'sinks:',
        '  cc_nats: { plugin: notifier }',
        '  cc_http:',
        '    plugin: notifier',
        '    protocol: hm9000-http',
        `    cc_url: ${cc.url}`,
        '    user: hm-user',
        '    password: ${CC_PASSWORD}',
        '    timeout: 1hb',
        'api: { password: pw, enabled: false }',
        '',
      ].join('\n'),
    );
    const loaded = await loadConfig(file, { env: { CC_PASSWORD: 'hm-s3cret' } });
    const lines: Record<string, unknown>[] = [];
    const loggers = createLoggerFactory({ foundation: 'virt', level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
    const clock = new VirtualClock(1_700_000_000_000);
    const engine = new Engine(loaded, { clock, loggers });
    await engine.start();
    try {
      await engine.stateStore!.replaceDesired([{ guid: 'app-1', version: 'v1', instances: 1, state: 'STARTED', packageState: 'STAGED' }]);
      await clock.advanceAsync(10_000); // a cycle that sees the app
      await waitFor(() => cc.requests.length > 0 && received.length > 0, { timeoutMs: 10_000, what: 'the start on both sinks' });
      // keep_alive 0 (the fixture policy): every cycle until the instance runs sends the start again.
      const body = '{"message_id":"m-app-1-0","droplet":"app-1","version":"v1","instance_index":0}';
      expect(new Set(received)).toEqual(new Set([body]));
      expect(new Set(cc.requests.map((r) => JSON.stringify([r.method, r.path, r.headers.authorization, r.headers['content-type'], r.body])))).toEqual(
        new Set([
          JSON.stringify([
            'POST',
            '/internal/dea/hm9000/start/app-1',
            `Basic ${Buffer.from('hm-user:hm-s3cret').toString('base64')}`,
            'application/json',
            body,
          ]),
        ]),
      );
      const status = await engine.status();
      expect(status.stages.cc_nats).toMatchObject({ healthy: true, last_error: null });
      expect(status.stages.cc_http).toMatchObject({ healthy: true, last_error: null });
      expect(
        lines
          .filter((l) => l.msg === 'Sent start message (MISSING)')
          .map((l) => l.component)
          .slice(0, 2),
      ).toEqual(['cc_nats', 'cc_http']);
      expect(JSON.stringify(lines)).not.toContain('hm-s3cret');
    } finally {
      await engine.stop();
    }
  });
});
