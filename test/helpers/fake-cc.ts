/**
 * A fake Cloud Controller for integration tests, listening on 127.0.0.1.
 *
 * Routes (all behind HTTP basic auth, like the real bulk / internal APIs):
 *   GET  /bulk/apps?batch_size=N&bulk_token=T    paged desired state
 *   GET  /bulk/counts?model=user                  {"counts":{"user":N}}
 *   POST /internal/dea/hm9000/start/:guid         recorded, 200 (or respondInternal)
 *   POST /internal/dea/hm9000/stop/:guid          recorded, 200 (or respondInternal)
 *
 * `bulk_token` is raw JSON in the query string (`bulk_token={"id":5}`), as
 * HM9000 sends it; the query string is therefore split by hand. A token that
 * is not valid JSON as sent is retried percent-decoded, so clients that do
 * encode it still work (the raw URL is recorded either way).
 */
import http from 'node:http';
import https from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface FakeApp {
  /** App guid: the key in `results` and the `id` field of the entry. */
  guid: string;
  /** Numeric database id used for paging; defaults to position in the list + 1. */
  id?: number;
  /** Default `<guid>-v1`. */
  version?: string;
  /** Default 1. */
  instances?: number;
  /** Default 'STARTED'. */
  state?: 'STARTED' | 'STOPPED';
  /** Default 'STAGED'. */
  package_state?: 'STAGED' | 'PENDING' | 'FAILED';
  /** Default 256. */
  memory?: number;
  /** Default '2024-01-01T00:00:00Z'. */
  updated_at?: string;
  /** Extra fields merged into the app's JSON entry. */
  extra?: Record<string, unknown>;
}

export type FakeCCFailMode = '401' | '500' | 'bad-json' | 'hang' | 'reset' | null;

export interface RecordedRequest {
  method: string;
  /** The request target exactly as received, e.g. `/bulk/apps?batch_size=2&bulk_token={"id":2}`. */
  url: string;
  /** Path part of `url`. */
  path: string;
  /** Raw query string (after '?'), not decoded. */
  query: string;
  headers: IncomingHttpHeaders;
  body: string;
  time: Date;
  /** Subject CN of the TLS client certificate, if one was presented. */
  clientCertCN?: string;
}

export interface FakeCCOptions {
  apps?: FakeApp[];
  /** Basic auth user (default 'bulk_api'). */
  user?: string;
  /** Basic auth password (default 'bulk-password'). */
  password?: string;
  /** Answer of /bulk/counts?model=user (default 0). */
  userCount?: number;
  /** Serve HTTPS with this key/cert. With `clientCa`, client certificates signed by it are required. */
  tls?: { key: string; cert: string; clientCa?: string };
}

export interface FakeCCHandle {
  /** http(s)://127.0.0.1:port */
  readonly url: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** Every request received, in arrival order (live array). */
  readonly requests: RecordedRequest[];
  /** Requests whose path starts with `prefix`. */
  requestsTo(prefix: string): RecordedRequest[];
  clearRequests(): void;
  /**
   * Script a failure for every route until reset with `fail(null)`:
   * '401' rejects even valid credentials, '500' answers a CC style 500,
   * 'bad-json' answers 200 with a truncated JSON body, 'hang' never answers
   * (until stop()).
   */
  fail(mode: FakeCCFailMode): void;
  /**
   * Script a failure for requests whose path starts with `prefix` only ('reset' closes the
   * connection without an answer: a transport error for the client). With `times`, only the next
   * that many such requests fail. `null` clears it. `fail()` wins over it.
   */
  failRoute(prefix: string, mode: FakeCCFailMode, times?: number): void;
  setApps(apps: FakeApp[]): void;
  setUserCount(n: number): void;
  /** Status for the internal start/stop routes (null = 200). */
  respondInternal(status: number | null): void;
  /** Close the server, destroying open (also hung) connections. Idempotent. */
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

function ccError(res: ServerResponse, status: number, code: number, errorCode: string, description: string): void {
  send(res, status, { code, description, error_code: `CF-${errorCode}` });
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json;charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    ...headers,
  });
  res.end(text);
}

/** Split a raw query string by hand: values stay exactly as sent. */
export function parseRawQuery(query: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!query) return out;
  for (const part of query.split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const value = eq < 0 ? '' : part.slice(eq + 1);
    if (!out.has(key)) out.set(key, value);
  }
  return out;
}

function parseToken(raw: string): { id?: unknown } | undefined {
  const attempts = [raw];
  try {
    attempts.push(decodeURIComponent(raw.replace(/\+/g, ' ')));
  } catch {
    /* not percent-encoded */
  }
  for (const a of attempts) {
    try {
      const v: unknown = JSON.parse(a);
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as { id?: unknown };
    } catch {
      /* try next */
    }
  }
  return undefined;
}

interface NormalisedApp {
  id: number;
  app: FakeApp;
}

function normalise(apps: FakeApp[]): NormalisedApp[] {
  return apps.map((app, i) => ({ id: app.id ?? i + 1, app })).sort((a, b) => a.id - b.id);
}

function appEntry(app: FakeApp): Record<string, unknown> {
  return {
    id: app.guid,
    version: app.version ?? `${app.guid}-v1`,
    instances: app.instances ?? 1,
    state: app.state ?? 'STARTED',
    package_state: app.package_state ?? 'STAGED',
    memory: app.memory ?? 256,
    updated_at: app.updated_at ?? '2024-01-01T00:00:00Z',
    ...app.extra,
  };
}

export async function startFakeCC(opts: FakeCCOptions = {}): Promise<FakeCCHandle> {
  const user = opts.user ?? 'bulk_api';
  const password = opts.password ?? 'bulk-password';
  const expectedAuth = `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
  let apps = normalise(opts.apps ?? []);
  let userCount = opts.userCount ?? 0;
  let failMode: FakeCCFailMode = null;
  const routeFailures = new Map<string, { mode: FakeCCFailMode; times: number }>();
  /** The scripted failure for this request, using up one of a limited route failure. */
  const failureFor = (path: string): FakeCCFailMode => {
    if (failMode !== null) return failMode;
    for (const [prefix, f] of routeFailures) {
      if (!path.startsWith(prefix)) continue;
      if (--f.times <= 0) routeFailures.delete(prefix);
      return f.mode;
    }
    return null;
  };
  let internalStatus: number | null = null;
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();

  const handleRequest = (req: IncomingMessage, res: ServerResponse, body: string) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    const rec: RecordedRequest = { method: req.method ?? '', url, path, query, headers: req.headers, body, time: new Date() };
    const peer = (req.socket as Partial<TLSSocket>).getPeerCertificate?.();
    if (peer && typeof peer.subject?.CN === 'string') rec.clientCertCN = peer.subject.CN;
    requests.push(rec);

    switch (failureFor(path)) {
      case 'hang':
        return; // never answered; stop() destroys the socket
      case 'reset':
        req.socket.destroy();
        return;
      case '500':
        return ccError(res, 500, 10001, 'ServerError', 'An unknown error occurred.');
      case 'bad-json':
        return send(res, 200, '{"results": {"truncated-guid": {"id": "trunc');
      case '401':
        return notAuthenticated(res);
      case null:
        break;
    }

    if (req.headers.authorization !== expectedAuth) return notAuthenticated(res);

    const params = parseRawQuery(query);
    if (req.method === 'GET' && path === '/bulk/apps') {
      const batchRaw = params.get('batch_size');
      const batchSize = batchRaw !== undefined && /^\d+$/.test(batchRaw) ? Number(batchRaw) : NaN;
      if (!Number.isInteger(batchSize) || batchSize < 1) {
        return ccError(res, 400, 1001, 'BadQueryParameter', 'The query parameter is invalid: batch_size');
      }
      const tokenRaw = params.get('bulk_token');
      const token = tokenRaw === undefined ? undefined : parseToken(tokenRaw);
      if (token === undefined) {
        return ccError(res, 400, 1001, 'BadQueryParameter', 'The query parameter is invalid: bulk_token');
      }
      const lastId = token.id ?? 0;
      if (typeof lastId !== 'number') {
        return ccError(res, 400, 1001, 'BadQueryParameter', 'The query parameter is invalid: bulk_token.id');
      }
      const page = apps.filter((a) => a.id > lastId).slice(0, batchSize);
      const results: Record<string, unknown> = {};
      for (const { app } of page) results[app.guid] = appEntry(app);
      // Like CC: the next token carries the last id of this page, null once exhausted.
      return send(res, 200, { results, bulk_token: { id: page.length ? page[page.length - 1]!.id : null } });
    }
    if (req.method === 'GET' && path === '/bulk/counts') {
      if ((params.get('model') ?? 'user') !== 'user') {
        return ccError(res, 400, 1001, 'BadQueryParameter', 'The query parameter is invalid: model');
      }
      return send(res, 200, { counts: { user: userCount } });
    }
    if (req.method === 'POST' && /^\/internal\/dea\/hm9000\/(start|stop)\/[^/]+$/.test(path)) {
      const status = internalStatus ?? 200;
      res.writeHead(status, { 'content-length': '0' });
      res.end();
      return;
    }
    return ccError(res, 404, 10000, 'NotFound', 'Unknown request');
  };

  const notAuthenticated = (res: ServerResponse) => {
    ccError(res, 401, 10002, 'NotAuthenticated', 'Authentication error');
  };

  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handleRequest(req, res, Buffer.concat(chunks).toString('utf8')));
    req.on('error', () => undefined);
  };

  const server: http.Server = opts.tls
    ? https.createServer(
        {
          key: opts.tls.key,
          cert: opts.tls.cert,
          ...(opts.tls.clientCa ? { ca: opts.tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
        },
        listener,
      )
    : http.createServer(listener);
  server.on('connection', (sock: Socket) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  // TLS handshake failures etc. must not crash the test process.
  server.on('clientError', (_err, sock: Socket) => sock.destroy());
  server.on('tlsClientError', (_err: Error, sock: Socket) => sock.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: HOST, port: 0 }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('fake CC: no TCP address');
  const port = addr.port;

  let stopping: Promise<void> | undefined;
  return {
    url: `${opts.tls ? 'https' : 'http'}://${HOST}:${port}`,
    port,
    user,
    password,
    requests,
    requestsTo: (prefix) => requests.filter((r) => r.path.startsWith(prefix)),
    clearRequests: () => {
      requests.length = 0;
    },
    fail: (mode) => {
      failMode = mode;
    },
    failRoute: (prefix, mode, times = Infinity) => {
      if (mode === null) routeFailures.delete(prefix);
      else routeFailures.set(prefix, { mode, times });
    },
    setApps: (next) => {
      apps = normalise(next);
    },
    setUserCount: (n) => {
      userCount = n;
    },
    respondInternal: (status) => {
      internalStatus = status;
    },
    stop: () => {
      stopping ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        sockets.clear();
      });
      return stopping;
    },
  };
}
