/**
 * A loopback TCP proxy in front of a test's etcd: it listens on a port of its own, so a test can
 * drop every connection through it (as a reset connection or a GOAWAY would) while etcd stays up,
 * or give a daemon an etcd address before etcd runs there.
 */
import { createConnection, createServer, type Socket } from 'node:net';

export class TcpProxy {
  private readonly sockets = new Set<Socket>();
  private readonly server = createServer((client) => {
    this.accepted++;
    const upstream = createConnection({ host: '127.0.0.1', port: this.targetPort });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => undefined);
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  port = 0;
  /** Connections accepted so far. */
  accepted = 0;

  private constructor(private readonly targetPort: number) {}

  /** Listens on 127.0.0.1:`port` (0: a free one) and forwards each connection to 127.0.0.1:`targetPort`. */
  static async start(targetPort: number, port = 0): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetPort);
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(port, '127.0.0.1', () => resolve());
    });
    const address = proxy.server.address();
    proxy.port = typeof address === 'object' && address ? address.port : port;
    return proxy;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Drops every open connection at once; new ones are forwarded as before. */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  async stop(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
