/**
 * A loopback HTTP proxy in front of a Cloud Controller (the live simulator's bulk API) that can be
 * made to fail on demand: '500' answers every request with a 500, 'hang' accepts requests and never
 * answers them. Back to 'none', the hung requests are cut (as a restarted CC would) and requests
 * pass through again. Every socket it opens or accepts is closed by stop().
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export type CcFault = 'none' | '500' | 'hang';

export interface CcFaultProxy {
  /** http://127.0.0.1:port */
  readonly url: string;
  readonly fault: CcFault;
  /** Requests answered 500, requests left hanging, requests passed through. */
  readonly counts: { failed: number; hung: number; passed: number };
  setFault(fault: CcFault): void;
  stop(): Promise<void>;
}

export async function startCcFaultProxy(target: string): Promise<CcFaultProxy> {
  const upstream = new URL(target);
  const sockets = new Set<Socket>();
  const hung = new Set<http.ServerResponse>();
  const counts = { failed: 0, hung: 0, passed: 0 };
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  let fault: CcFault = 'none';

  const server = http.createServer((req, res) => {
    if (fault === '500') {
      counts.failed++;
      req.resume();
      res.writeHead(500, { 'content-type': 'application/json' }).end('{"code":10001,"description":"An unknown error occurred.","error_code":"UnknownError"}');
      return;
    }
    if (fault === 'hang') {
      counts.hung++;
      req.resume();
      hung.add(res);
      res.on('close', () => hung.delete(res));
      return;
    }
    counts.passed++;
    const out = http.request({ agent, host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    out.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    req.pipe(out);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('clientError', (_err, s: Socket) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}`,
    get fault() {
      return fault;
    },
    counts,
    setFault(f: CcFault) {
      fault = f;
      if (f !== 'hang') for (const res of hung) res.socket?.destroy();
    },
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      agent.destroy();
    },
  };
}
