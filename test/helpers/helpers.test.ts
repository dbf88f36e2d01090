/**
 * Integration tests for the test helpers themselves: real nats-server and
 * etcd processes, the fake Cloud Controller, and openssl generated certs.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { connect, StringCodec, type NatsConnection } from 'nats';
import ts from 'typescript';
import { afterEach, describe, expect, it } from 'vitest';
import {
  freePort,
  makeCA,
  makeSelfSignedCert,
  makeSignedCert,
  startEtcd,
  startFakeCC,
  startNatsServer,
  waitFor,
  type EtcdHandle,
  type FakeApp,
  type FakeCCHandle,
  type NatsServerHandle,
} from './index.js';

const execFileAsync = promisify(execFile);
const sc = StringCodec();
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const unb64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Anything started in a test is pushed here and stopped afterwards, pass or fail. */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  const errors: unknown[] = [];
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length) throw errors[0];
});

async function nats(opts?: Parameters<typeof startNatsServer>[0]): Promise<NatsServerHandle> {
  const h = await startNatsServer(opts);
  cleanups.push(() => h.stop());
  return h;
}
async function etcd(): Promise<EtcdHandle> {
  const h = await startEtcd();
  cleanups.push(() => h.stop());
  return h;
}
async function fakeCC(opts?: Parameters<typeof startFakeCC>[0]): Promise<FakeCCHandle> {
  const h = await startFakeCC(opts);
  cleanups.push(() => h.stop());
  return h;
}
function track(nc: NatsConnection): NatsConnection {
  cleanups.push(() => (nc.isClosed() ? undefined : nc.close()));
  return nc;
}

interface RawResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/**
 * node:http / node:https request with the path sent exactly as given (no URL
 * normalisation, unlike fetch which would percent-encode the quotes).
 */
function rawRequest(
  base: string,
  rawPath: string,
  opts: { method?: string; auth?: string; body?: string; tls?: https.RequestOptions; timeoutMs?: number } = {},
): Promise<RawResponse> {
  const u = new URL(base);
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      {
        host: u.hostname,
        port: u.port,
        path: rawPath,
        method: opts.method ?? 'GET',
        auth: opts.auth,
        agent: false,
        headers: opts.body !== undefined ? { 'content-type': 'application/json' } : {},
        ...opts.tls,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error('client timeout')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

// ---------------------------------------------------------------------------

describe('ports', () => {
  it('freePort returns a bindable loopback port', async () => {
    const port = await freePort();
    expect(port).toBeGreaterThan(0);
    const srv = net.createServer();
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', resolve);
    });
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  });

  it('waitFor returns the first truthy value and names `what` on timeout', async () => {
    let n = 0;
    await expect(waitFor(() => (++n >= 3 ? n : 0), { intervalMs: 5 })).resolves.toBe(3);
    await expect(
      waitFor(
        () => {
          throw new Error('not yet');
        },
        { timeoutMs: 60, intervalMs: 10, what: 'the moon' },
      ),
    ).rejects.toThrow(/timed out after 60 ms waiting for the moon \(last error: not yet\)/);
  });
});

describe('nats-server', { timeout: 30_000 }, () => {
  it('starts on loopback and carries pub/sub; stop() is idempotent', async () => {
    const srv = await nats({ monitor: true });
    expect(srv.url).toBe(`nats://127.0.0.1:${srv.port}`);
    expect(isAlive(srv.pid)).toBe(true);

    const varz = (await (await fetch(`${srv.monitorUrl}/varz`)).json()) as { port: number; host: string };
    expect(varz.port).toBe(srv.port);
    expect(varz.host).toBe('127.0.0.1');

    const nc = track(await connect({ servers: srv.url }));
    const sub = nc.subscribe('hm.test');
    const got = (async () => {
      for await (const m of sub) return sc.decode(m.data);
      return undefined;
    })();
    nc.publish('hm.test', sc.encode('hello'));
    await expect(got).resolves.toBe('hello');
    await nc.close();

    const pid = srv.pid;
    await srv.stop();
    await srv.stop();
    expect(srv.running).toBe(false);
    expect(isAlive(pid)).toBe(false);
  });

  it('restarts on the same port and clients reconnect', async () => {
    const srv = await nats();
    const { port, pid } = srv;
    const nc = track(await connect({ servers: srv.url, reconnectTimeWait: 50, maxReconnectAttempts: -1, reconnectJitter: 0 }));
    const events: string[] = [];
    void (async () => {
      for await (const s of nc.status()) events.push(s.type);
    })();
    const sub = nc.subscribe('hm.after');

    await srv.restart();
    expect(srv.port).toBe(port);
    expect(srv.pid).not.toBe(pid);
    expect(isAlive(pid)).toBe(false);
    await waitFor(() => events.includes('reconnect'), { timeoutMs: 10_000, what: 'nats client reconnect' });

    const got = (async () => {
      for await (const m of sub) return sc.decode(m.data);
      return undefined;
    })();
    nc.publish('hm.after', sc.encode('again'));
    await expect(got).resolves.toBe('again');
    expect(events).toContain('disconnect');
  });

  it('with user/password rejects a wrong password and accepts the right one', async () => {
    const srv = await nats({ user: 'hm', password: 's3cret' });
    await expect(connect({ servers: srv.url, user: 'hm', pass: 'wrong', reconnect: false })).rejects.toMatchObject({ code: 'AUTHORIZATION_VIOLATION' });
    await expect(connect({ servers: srv.url, reconnect: false })).rejects.toMatchObject({
      code: 'AUTHORIZATION_VIOLATION',
    });
    const nc = track(await connect({ servers: srv.url, user: 'hm', pass: 's3cret' }));
    await nc.flush();
    await nc.close();
  });

  it('fails with the server output when the port is taken', async () => {
    // Occupy a port with a plain listener, then point a second server at it via restart.
    const srv = await nats();
    const blocker = net.createServer();
    await srv.stop();
    await new Promise<void>((resolve, reject) => {
      blocker.once('error', reject);
      blocker.listen(srv.port, '127.0.0.1', resolve);
    });
    cleanups.push(() => new Promise<void>((r) => blocker.close(() => r())));
    await expect(srv.restart()).rejects.toThrow(/nats-server on 127\.0\.0\.1:\d+ exited with code 1 before becoming ready[\s\S]*address already in use/);
    expect(srv.running).toBe(false);
  });

  it('kills a forgotten server when the process exits', async () => {
    // Run the helper in a separate node process that exits without stop().
    const here = path.dirname(fileURLToPath(import.meta.url));
    const dir = await mkdtemp(path.join(os.tmpdir(), 'hmgate-exit-hook-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    for (const f of ['ports.ts', 'nats-server.ts']) {
      const src = await readFile(path.join(here, f), 'utf8');
      const js = ts.transpileModule(src, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
      }).outputText;
      await writeFile(path.join(dir, f.replace(/\.ts$/, '.js')), js);
    }
    await writeFile(path.join(dir, 'package.json'), '{"type":"module"}');
    await writeFile(
      path.join(dir, 'main.js'),
      "import { startNatsServer } from './nats-server.js';\n" + 'const h = await startNatsServer();\n' + 'console.log(h.pid);\n' + 'process.exit(0);\n',
    );
    const { stdout } = await execFileAsync(process.execPath, [path.join(dir, 'main.js')], { timeout: 20_000 });
    const pid = Number(stdout.trim());
    expect(pid).toBeGreaterThan(0);
    cleanups.push(() => {
      if (isAlive(pid)) process.kill(pid, 'SIGKILL');
    });
    await waitFor(() => !isAlive(pid), { timeoutMs: 5000, what: `orphaned nats-server ${pid} to die` });
  });
});

describe('etcd', { timeout: 30_000 }, () => {
  async function put(ep: string, key: string, value: string): Promise<void> {
    const res = await fetch(`${ep}/v3/kv/put`, {
      method: 'POST',
      body: JSON.stringify({ key: b64(key), value: b64(value) }),
      signal: AbortSignal.timeout(5000),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  }
  async function get(ep: string, key: string, timeoutMs = 5000): Promise<string | undefined> {
    const res = await fetch(`${ep}/v3/kv/range`, {
      method: 'POST',
      body: JSON.stringify({ key: b64(key) }),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const body = (await res.json()) as { kvs?: Array<{ value: string }> };
    return body.kvs?.[0] ? unb64(body.kvs[0].value) : undefined;
  }

  it('serves the v3 HTTP gateway, pauses/resumes, restarts with its data, and cleans up', async () => {
    const e = await etcd();
    expect(e.endpoint).toBe(`http://127.0.0.1:${e.clientPort}`);
    expect(existsSync(e.dataDir)).toBe(true);

    await put(e.endpoint, '/hm/v1/desired/app-1', '{"instances":2}');
    expect(await get(e.endpoint, '/hm/v1/desired/app-1')).toBe('{"instances":2}');

    e.pause();
    expect(e.paused).toBe(true);
    await expect(get(e.endpoint, '/hm/v1/desired/app-1', 300)).rejects.toThrow();
    e.resume();
    expect(await get(e.endpoint, '/hm/v1/desired/app-1')).toBe('{"instances":2}');

    const pid = e.pid;
    await e.restart();
    expect(e.pid).not.toBe(pid);
    expect(isAlive(pid)).toBe(false);
    expect(await get(e.endpoint, '/hm/v1/desired/app-1')).toBe('{"instances":2}');

    const pid2 = e.pid;
    await e.stop();
    await e.stop();
    expect(isAlive(pid2)).toBe(false);
    expect(existsSync(e.dataDir)).toBe(false);
  });

  it('stops promptly even while paused', async () => {
    const e = await etcd();
    e.pause();
    const t0 = Date.now();
    await e.stop();
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(e.running).toBe(false);
  });
});

describe('fake Cloud Controller', { timeout: 30_000 }, () => {
  const apps: FakeApp[] = [
    { guid: 'app-c', id: 3, instances: 1 },
    { guid: 'app-a', id: 1, instances: 2, version: 'v-a' },
    { guid: 'app-b', id: 2, instances: 3, state: 'STOPPED' },
  ];

  it('pages through apps with a raw JSON bulk_token', async () => {
    const cc = await fakeCC({ apps, user: 'bulk', password: 'pw' });
    const auth = 'bulk:pw';

    const p1 = await rawRequest(cc.url, '/bulk/apps?batch_size=2&bulk_token={}', { auth });
    expect(p1.status).toBe(200);
    const b1 = JSON.parse(p1.body) as { results: Record<string, Record<string, unknown>>; bulk_token: { id: number } };
    expect(Object.keys(b1.results)).toEqual(['app-a', 'app-b']);
    expect(b1.results['app-a']).toMatchObject({
      id: 'app-a',
      version: 'v-a',
      instances: 2,
      state: 'STARTED',
      package_state: 'STAGED',
    });
    expect(typeof b1.results['app-a']!.updated_at).toBe('string');
    expect(b1.results['app-b']).toMatchObject({ state: 'STOPPED', instances: 3 });
    expect(b1.bulk_token).toEqual({ id: 2 });

    const p2 = await rawRequest(cc.url, `/bulk/apps?batch_size=2&bulk_token=${JSON.stringify(b1.bulk_token)}`, { auth });
    const b2 = JSON.parse(p2.body) as { results: Record<string, unknown>; bulk_token: { id: number } };
    expect(Object.keys(b2.results)).toEqual(['app-c']);
    expect(b2.bulk_token).toEqual({ id: 3 });

    const p3 = await rawRequest(cc.url, '/bulk/apps?batch_size=2&bulk_token={"id":3}', { auth });
    expect(JSON.parse(p3.body)).toEqual({ results: {}, bulk_token: { id: null } });

    const urls = cc.requestsTo('/bulk/apps').map((r) => r.url);
    expect(urls).toEqual([
      '/bulk/apps?batch_size=2&bulk_token={}',
      '/bulk/apps?batch_size=2&bulk_token={"id":2}',
      '/bulk/apps?batch_size=2&bulk_token={"id":3}',
    ]);
    expect(cc.requests[0]!.headers.authorization).toBe(`Basic ${b64(auth)}`);
    expect(cc.requests[0]!.time).toBeInstanceOf(Date);

    // A percent-encoded token (what fetch sends) is accepted too.
    const res = await fetch(`${cc.url}/bulk/apps?batch_size=5&bulk_token={"id":1}`, {
      headers: { authorization: `Basic ${b64(auth)}` },
    });
    expect(Object.keys(((await res.json()) as { results: object }).results)).toEqual(['app-b', 'app-c']);
    expect(cc.requests.at(-1)!.url).toBe('/bulk/apps?batch_size=5&bulk_token={%22id%22:1}');

    cc.setApps([{ guid: 'only' }]);
    const p4 = await rawRequest(cc.url, '/bulk/apps?batch_size=2&bulk_token={}', { auth });
    expect(JSON.parse(p4.body)).toMatchObject({ results: { only: { id: 'only' } }, bulk_token: { id: 1 } });

    const bad = await rawRequest(cc.url, '/bulk/apps?batch_size=x&bulk_token={}', { auth });
    expect(bad.status).toBe(400);
  });

  it('requires basic auth', async () => {
    const cc = await fakeCC({ apps });
    const none = await rawRequest(cc.url, '/bulk/apps?batch_size=2&bulk_token={}');
    expect(none.status).toBe(401);
    expect(JSON.parse(none.body)).toMatchObject({ error_code: 'CF-NotAuthenticated' });
    const wrong = await rawRequest(cc.url, '/bulk/counts?model=user', { auth: `${cc.user}:nope` });
    expect(wrong.status).toBe(401);
    const ok = await rawRequest(cc.url, '/bulk/counts?model=user', { auth: `${cc.user}:${cc.password}` });
    expect(ok.status).toBe(200);
    expect(cc.requests).toHaveLength(3);
  });

  it('answers /bulk/counts', async () => {
    const cc = await fakeCC({ userCount: 7 });
    const auth = `${cc.user}:${cc.password}`;
    expect(JSON.parse((await rawRequest(cc.url, '/bulk/counts?model=user', { auth })).body)).toEqual({
      counts: { user: 7 },
    });
    cc.setUserCount(9);
    expect(JSON.parse((await rawRequest(cc.url, '/bulk/counts?model=user', { auth })).body)).toEqual({
      counts: { user: 9 },
    });
    expect((await rawRequest(cc.url, '/bulk/counts?model=app', { auth })).status).toBe(400);
  });

  it('records internal start/stop calls and can script their status', async () => {
    const cc = await fakeCC();
    const auth = `${cc.user}:${cc.password}`;
    const body = JSON.stringify({ droplet: 'app-a', version: 'v-a', instance_index: 1 });
    const start = await rawRequest(cc.url, '/internal/dea/hm9000/start/app-a', { method: 'POST', auth, body });
    expect(start.status).toBe(200);
    cc.respondInternal(503);
    const stop = await rawRequest(cc.url, '/internal/dea/hm9000/stop/app-a', { method: 'POST', auth, body: '{}' });
    expect(stop.status).toBe(503);
    const calls = cc.requestsTo('/internal/dea/hm9000/');
    expect(calls.map((r) => [r.method, r.path, r.body])).toEqual([
      ['POST', '/internal/dea/hm9000/start/app-a', body],
      ['POST', '/internal/dea/hm9000/stop/app-a', '{}'],
    ]);
    cc.clearRequests();
    expect(cc.requests).toHaveLength(0);
  });

  it('scripts failure modes', async () => {
    const cc = await fakeCC({ apps });
    const auth = `${cc.user}:${cc.password}`;
    const page = '/bulk/apps?batch_size=2&bulk_token={}';

    cc.fail('401');
    expect((await rawRequest(cc.url, page, { auth })).status).toBe(401);

    cc.fail('500');
    const e500 = await rawRequest(cc.url, page, { auth });
    expect(e500.status).toBe(500);
    expect(JSON.parse(e500.body)).toMatchObject({ error_code: 'CF-ServerError' });

    cc.fail('bad-json');
    const bad = await rawRequest(cc.url, page, { auth });
    expect(bad.status).toBe(200);
    expect(bad.headers['content-type']).toMatch(/application\/json/);
    expect(() => JSON.parse(bad.body)).toThrow(SyntaxError);

    cc.fail('hang');
    await expect(rawRequest(cc.url, page, { auth, timeoutMs: 200 })).rejects.toThrow(/client timeout/);

    cc.fail(null);
    expect((await rawRequest(cc.url, page, { auth })).status).toBe(200);

    // A hung request does not keep stop() waiting.
    cc.fail('hang');
    const hung = rawRequest(cc.url, page, { auth });
    hung.catch(() => undefined);
    await waitFor(() => cc.requests.length === 6, { timeoutMs: 2000, what: 'hung request to arrive' });
    const t0 = Date.now();
    await cc.stop();
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(hung).rejects.toThrow(/socket hang up|ECONNRESET/);
  });

  it('serves https with a self-signed certificate', async () => {
    const pair = await makeSelfSignedCert();
    expect(pair.cert).toMatch(/^-----BEGIN CERTIFICATE-----/);
    expect(pair.key).toMatch(/PRIVATE KEY-----/);
    const cc = await fakeCC({ tls: pair, apps });
    expect(cc.url).toBe(`https://127.0.0.1:${cc.port}`);

    const err = await fetch(`${cc.url}/bulk/counts?model=user`).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(TypeError);
    expect((err as { cause?: { code?: string } }).cause?.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT');

    const ok = await rawRequest(cc.url, '/bulk/apps?batch_size=5&bulk_token={}', {
      auth: `${cc.user}:${cc.password}`,
      tls: { ca: pair.cert },
    });
    expect(ok.status).toBe(200);
    expect(Object.keys((JSON.parse(ok.body) as { results: object }).results)).toHaveLength(3);
  });

  it('serves https with a CA-signed certificate and requires client certificates when asked', async () => {
    const ca = await makeCA();
    const server = await makeSignedCert(ca, '127.0.0.1');
    const client = await makeSignedCert(ca, 'hm9000-client');
    const cc = await fakeCC({ tls: { ...server, clientCa: ca.cert } });
    const auth = `${cc.user}:${cc.password}`;

    await expect(rawRequest(cc.url, '/bulk/counts?model=user', { auth, tls: { ca: ca.cert } })).rejects.toThrow();
    await expect(rawRequest(cc.url, '/bulk/counts?model=user', { auth, tls: { ca: server.cert, ...client } })).rejects.toThrow(/certificate/i);

    const ok = await rawRequest(cc.url, '/bulk/counts?model=user', { auth, tls: { ca: ca.cert, ...client } });
    expect(ok.status).toBe(200);
    expect(cc.requests.at(-1)!.clientCertCN).toBe('hm9000-client');
  });
});
