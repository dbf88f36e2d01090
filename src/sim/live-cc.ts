/**
 * The live simulator's Cloud Controller, on a loopback port: what hmgate's bulk-api source asks
 * for, and the internal start/stop routes of the hm9000-http notifier.
 *
 *   GET  /bulk/apps?batch_size=N&bulk_token={"id":K}   apps with id > K, N per page (basic auth)
 *   GET  /bulk/counts?model=user                       {"counts":{"user":0}}
 *   POST /internal/dea/hm9000/{start,stop}/<guid>      an order, as the NATS body (basic auth)
 *
 * The token is raw JSON in the query string, as HM9000 sends it. Apps are numbered from 1 in a
 * fixed order, so a page is the same bytes every fetch and is kept once built (bounded).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { LiveFoundation } from './live-foundation.js';

export interface LiveCcOptions {
  host: string;
  port: number;
  user: string;
  password: string;
  /** An order that came over HTTP (hm9000-http notifier). */
  onOrder?: (action: 'start' | 'stop', body: Record<string, unknown>) => void;
}

export interface LiveCcStats {
  pages: number;
  /** Walks that reached the final, empty page. */
  fetches: number;
  refused: number;
}

/** The most pages kept; beyond it pages are built again (a batch size that keeps changing). */
const MAX_CACHED_PAGES = 20_000;
const MAX_BODY_BYTES = 64 * 1024;

function firstParam(query: string, name: string): string | undefined {
  for (const part of query.split('&')) {
    const eq = part.indexOf('=');
    if ((eq < 0 ? part : part.slice(0, eq)) === name) return eq < 0 ? '' : part.slice(eq + 1);
  }
  return undefined;
}

/** A token as sent, raw JSON or percent-encoded; undefined when unreadable. */
function tokenId(raw: string): number | undefined {
  for (const text of [raw, safeDecode(raw)]) {
    if (text === undefined) continue;
    try {
      const v = JSON.parse(text) as unknown;
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
        const id = (v as { id?: unknown }).id;
        if (id === undefined || id === null) return 0;
        if (typeof id === 'number' && Number.isSafeInteger(id) && id >= 0) return id;
        return undefined;
      }
    } catch {
      /* the next form */
    }
  }
  return undefined;
}

function safeDecode(s: string): string | undefined {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

export class LiveCloudController {
  readonly stats: LiveCcStats = { pages: 0, fetches: 0, refused: 0 };
  private server: http.Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly pages = new Map<string, Buffer>();
  /** The foundation's desired-state generation the cached pages were built from. */
  private pagesGeneration = 0;
  private readonly auth: string;

  constructor(
    private readonly foundation: LiveFoundation,
    private readonly o: LiveCcOptions,
  ) {
    this.auth = `Basic ${Buffer.from(`${o.user}:${o.password}`).toString('base64')}`;
  }

  get url(): string {
    const a = this.server?.address() as AddressInfo | null | undefined;
    if (!a) throw new Error('the simulated Cloud Controller is not listening');
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => this.handle(req, res));
    server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('clientError', (_err, s: Socket) => s.destroy());
    // Longer than a client's idle reuse, so a fetch never sends a page request on a socket the
    // server is closing (Node's default is 5 s, about undici's own).
    server.keepAliveTimeout = 65_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.o.host, port: this.o.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of this.sockets) s.destroy();
      this.sockets.clear();
    });
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = q < 0 ? '' : url.slice(q + 1);
    if (req.headers.authorization !== this.auth) {
      this.stats.refused++;
      req.resume();
      return this.send(res, 401, '{"code":10002,"description":"Authentication error","error_code":"CF-NotAuthenticated"}');
    }
    if (req.method === 'GET' && path === '/bulk/apps') {
      const batch = Number(firstParam(query, 'batch_size'));
      const token = tokenId(firstParam(query, 'bulk_token') ?? '{}');
      if (!Number.isSafeInteger(batch) || batch < 1 || token === undefined) {
        return this.send(res, 400, '{"code":1001,"description":"The query parameter is invalid","error_code":"CF-BadQueryParameter"}');
      }
      this.stats.pages++;
      return this.send(res, 200, this.page(batch, token));
    }
    if (req.method === 'GET' && path === '/bulk/counts') return this.send(res, 200, '{"counts":{"user":0}}');
    const order = /^\/internal\/dea\/hm9000\/(start|stop)\/[^/]+$/.exec(path);
    if (req.method === 'POST' && order) {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size <= MAX_BODY_BYTES) chunks.push(c);
      });
      req.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
          this.o.onOrder?.(order[1] as 'start' | 'stop', body);
          this.send(res, 200, '');
        } catch {
          this.send(res, 400, '');
        }
      });
      return;
    }
    req.resume();
    this.send(res, 404, '{"code":10000,"description":"Unknown request","error_code":"CF-NotFound"}');
  }

  /** Apps with id > after (ids from 1), `batch` of them; the last page is empty with a null token. */
  private page(batch: number, after: number): Buffer {
    const f = this.foundation;
    if (f.desiredGeneration !== this.pagesGeneration) {
      this.pages.clear();
      this.pagesGeneration = f.desiredGeneration;
    }
    const key = `${batch}:${after}`;
    let body = this.pages.get(key);
    if (body) return body;
    const results: Record<string, unknown> = {};
    const last = Math.min(f.apps, after + batch);
    for (let id = after + 1; id <= last; id++) {
      const app = f.desiredApp(id - 1);
      results[app.id] = app;
    }
    if (after >= f.apps) this.stats.fetches++;
    body = Buffer.from(JSON.stringify({ results, bulk_token: { id: last > after ? last : null } }));
    if (this.pages.size >= MAX_CACHED_PAGES) this.pages.clear();
    // The final page is not kept: it counts the completed walks.
    if (after < f.apps) this.pages.set(key, body);
    return body;
  }

  private send(res: http.ServerResponse, status: number, body: string | Buffer): void {
    res.writeHead(status, { 'content-type': 'application/json;charset=utf-8', 'content-length': String(Buffer.byteLength(body)) });
    res.end(body);
  }
}
