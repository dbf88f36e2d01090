/**
 * HM9000 H's heartbeat endpoint: `POST /dea/heartbeat` over HTTPS with mutual TLS. The client
 * certificate is required and verified against the configured CA (cfhttp's
 * RequireAndVerifyClientCert); the body is exactly the NATS heartbeat JSON. 202 on success, 400 on
 * an empty or invalid body, 404 on any other path.
 */
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { resolve } from 'node:path';
import type { Logger } from 'pino';
import { errorText, MAX_MESSAGE_BYTES } from '../../src/sdk/index.js';

export const HEARTBEAT_PATH = '/dea/heartbeat';

export interface HttpsListenerOptions {
  listen: string;
  certFile: string;
  keyFile: string;
  caFile: string;
  /** Relative file names resolve against this directory (the config file's). */
  baseDir: string;
  /** The key path of these options, for messages (e.g. sources.heartbeats.http_listener). */
  optionPath: string;
}

/** What the stage makes of a body: accepted, or refused with a one-line reason. */
export type BodyVerdict = { ok: true } | { ok: false; reason: string };

export function parseHostPort(listen: string, what: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(listen.trim());
  if (!m) throw new Error(`${what} "${listen}" must be host:port, e.g. 0.0.0.0:5335 or [::1]:5335`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`${what} "${listen}": port ${port} is out of range`);
  return { host: m[1] ?? m[2]!, port };
}

export class HttpsHeartbeatListener {
  private server: Server | undefined;
  private failure: string | null = null;
  private boundPort: number | undefined;

  constructor(
    private readonly opts: HttpsListenerOptions,
    private readonly onBody: (body: Uint8Array) => BodyVerdict,
    private readonly logger: Logger,
  ) {}

  /** The port actually bound (differs from the configured one only when that was 0). */
  get port(): number | undefined {
    return this.boundPort;
  }

  /** Why the listener is not serving, or null while it is. */
  get error(): string | null {
    return this.failure;
  }

  async start(): Promise<void> {
    const { host, port } = parseHostPort(this.opts.listen, `${this.opts.optionPath}.listen`);
    const [cert, key, ca] = await Promise.all([
      this.read('cert_file', this.opts.certFile),
      this.read('key_file', this.opts.keyFile),
      this.read('ca_file', this.opts.caFile),
    ]);
    let server: Server;
    try {
      server = createServer({ cert, key, ca, requestCert: true, rejectUnauthorized: true }, (req, res) => this.handle(req, res));
    } catch (err) {
      throw new Error(`${this.opts.optionPath}: the certificate, key or CA cannot be used: ${errorText(err)}`, { cause: err });
    }
    server.requestTimeout = 30_000;
    server.headersTimeout = 10_000;
    server.on('tlsClientError', (err) => {
      this.logger.debug({ error: errorText(err) }, `refused a TLS connection to the heartbeat listener: ${errorText(err)}`);
    });
    const where = `${host}:${port}`;
    await new Promise<void>((done, fail) => {
      const onError = (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'EADDRINUSE'
            ? 'address already in use'
            : err.code === 'EADDRNOTAVAIL'
              ? 'no such local address'
              : err.code === 'EACCES'
                ? 'permission denied'
                : errorText(err);
        fail(new Error(`cannot listen on ${where} for HTTPS heartbeats (${this.opts.optionPath}.listen): ${why}`));
      };
      server.once('error', onError);
      server.listen(port, host, () => {
        server.off('error', onError);
        done();
      });
    });
    const addr = server.address();
    this.boundPort = typeof addr === 'object' && addr ? addr.port : port;
    server.on('error', (err) => {
      this.failure = `HTTPS heartbeat listener on ${where} failed: ${errorText(err)}`;
      this.logger.error({ error: errorText(err) }, this.failure);
    });
    this.server = server;
    this.failure = null;
    this.logger.info(
      { listen: `${host}:${this.boundPort}` },
      `accepting HTTPS heartbeats at https://${host}:${this.boundPort}${HEARTBEAT_PATH} (client certificates required)`,
    );
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((done) => {
      server.close(() => done());
      server.closeAllConnections();
    });
  }

  private async read(option: string, file: string): Promise<Buffer> {
    const path = resolve(this.opts.baseDir, file);
    try {
      return await readFile(path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : errorText(err);
      throw new Error(`${this.opts.optionPath}.${option}: cannot read ${path}: ${why}`, { cause: err });
    }
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?', 1)[0];
    if (path !== HEARTBEAT_PATH) {
      req.resume();
      reply(res, 404, 'not found\n');
      return;
    }
    if (req.method !== 'POST') {
      req.resume();
      res.setHeader('Allow', 'POST');
      reply(res, 405, 'use POST\n');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      // Past the limit the rest is read and discarded; the decoder refuses the oversized body.
      if (size <= MAX_MESSAGE_BYTES) chunks.push(chunk);
      size += chunk.length;
    });
    req.on('error', () => {
      if (!res.headersSent) reply(res, 400, 'the body could not be read\n');
    });
    req.on('end', () => {
      const body = size > MAX_MESSAGE_BYTES ? new Uint8Array(MAX_MESSAGE_BYTES + 1) : chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      let verdict: BodyVerdict;
      try {
        verdict = this.onBody(body);
      } catch (err) {
        verdict = { ok: false, reason: errorText(err) };
      }
      if (verdict.ok) reply(res, 202, '');
      else reply(res, 400, `${verdict.reason}\n`);
    });
  }
}

function reply(res: ServerResponse, status: number, text: string): void {
  if (text === '') {
    res.writeHead(status, { 'Content-Length': '0' });
    res.end();
    return;
  }
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
