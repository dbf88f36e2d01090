/** Serves the Hono app on a real socket; a failure to listen is one clear start-up error. */
import { createAdaptorServer } from '@hono/node-server';
import type { Server } from 'node:http';
import type { Hono } from 'hono';

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
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EADDRNOTAVAIL' ? 'no such local address' : err.code === 'EACCES' ? 'permission denied' : err.message;
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
