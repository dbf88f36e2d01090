/** Serves the Hono app on a real socket; a failure to listen is one clear start-up error. */
import { createAdaptorServer } from '@hono/node-server';
import type { Server } from 'node:http';
import type { Hono } from 'hono';

/**
 * A response carrying this header is sent without a Content-Type (the Node adapter adds one to
 * every response); the header itself is removed. HM9000's 401 had neither body nor type.
 */
export const BARE_RESPONSE_HEADER = 'x-hmgate-bare-response';

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(listen.trim());
  if (!m) throw new Error(`api.listen "${listen}" must be host:port, e.g. 127.0.0.1:5155 or [::1]:5155`);
  const port = Number(m[3]);
  if (port > 65535) throw new Error(`api.listen "${listen}": port ${port} is out of range`);
  return { host: m[1] ?? m[2]!, port };
}

export interface RunningServer {
  host: string;
  port: number;
  close(): Promise<void>;
}

export function listen(app: Hono, listenAt: string): Promise<RunningServer> {
  const { host, port } = parseListen(listenAt);
  const server = createAdaptorServer({ fetch: app.fetch }) as Server;
  server.prependListener('request', (_req, res) => {
    const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => typeof res;
    res.writeHead = ((status: number, ...rest: unknown[]) => {
      const headers = rest.find((r) => typeof r === 'object' && r !== null) as Record<string, unknown> | undefined;
      if (headers && BARE_RESPONSE_HEADER in headers) {
        delete headers[BARE_RESPONSE_HEADER];
        for (const k of Object.keys(headers)) if (k.toLowerCase() === 'content-type') delete headers[k];
      }
      return writeHead(status, ...rest);
    }) as typeof res.writeHead;
  });
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'address already in use'
          : err.code === 'EADDRNOTAVAIL'
            ? 'no such local address'
            : err.code === 'EACCES'
              ? 'permission denied'
              : err.message;
      reject(new Error(`cannot listen on ${listenAt}: ${why}`));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      const addr = server.address();
      const actualPort = typeof addr === 'object' && addr ? addr.port : port;
      resolve({
        host,
        port: actualPort,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
