/**
 * The nats-server `hmgate demo` starts for itself: on a free loopback port, nothing written to disk,
 * stopped with SIGTERM (SIGKILL after 3 s), and killed at once should this process exit without
 * stopping it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import net from 'node:net';
import { delimiter, join } from 'node:path';

const HOST = '127.0.0.1';
const KNOWN_PLACES = ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server'];
const READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 3_000;

/** No nats-server to start: the message names the fix. */
export class NatsServerMissingError extends Error {
  constructor() {
    super(
      'nats-server is not installed (not on PATH, nor in /usr/sbin, /usr/bin, /usr/local/bin): install it with `apt-get install -y nats-server`, or give --nats URL',
    );
    this.name = 'NatsServerMissingError';
  }
}

const executable = (f: string): boolean => {
  try {
    accessSync(f, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

/** The nats-server binary: $NATS_SERVER_BIN, then PATH, then the places Debian and others put it. */
export function findNatsServer(env: NodeJS.ProcessEnv = process.env, places: readonly string[] = KNOWN_PLACES): string {
  if (env.NATS_SERVER_BIN) {
    if (!executable(env.NATS_SERVER_BIN)) throw new Error(`NATS_SERVER_BIN is ${env.NATS_SERVER_BIN}, which is not an executable file`);
    return env.NATS_SERVER_BIN;
  }
  const onPath = (env.PATH ?? '')
    .split(delimiter)
    .filter(Boolean)
    .map((d) => join(d, 'nats-server'));
  const found = [...onPath, ...places].find(executable);
  if (!found) throw new NatsServerMissingError();
  return found;
}

/** A port free on the loopback address now (for a server to listen on next). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen({ host: HOST, port: 0, exclusive: true }, () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/** The server greets every client with an INFO line: that also says it is a nats-server on the port. */
function greets(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: HOST, port });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 1_000);
    sock.once('error', () => done(false));
    sock.once('data', (b: Buffer) => done(b.toString('utf8').startsWith('INFO ')));
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class DemoNatsServer {
  private exitCode: number | null | undefined;
  private signalName: NodeJS.Signals | null = null;
  private output = '';
  private stopping: Promise<void> | undefined;
  private readonly exited: Promise<void>;
  private readonly killOnExit = () => {
    if (this.running) this.child.kill('SIGKILL');
  };

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    const keep = (b: Buffer) => (this.output = (this.output + b.toString('utf8')).slice(-16_384));
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exitCode = code;
        this.signalName = signal;
        process.off('exit', this.killOnExit);
        resolve();
      });
      child.once('error', (err) => {
        this.output += err.message;
        if (child.pid === undefined) {
          this.exitCode = null;
          process.off('exit', this.killOnExit);
          resolve();
        }
      });
    });
    process.on('exit', this.killOnExit);
  }

  get url(): string {
    return `nats://${HOST}:${this.port}`;
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitCode === undefined && this.child.pid !== undefined;
  }

  /** Starts nats-server on a free loopback port and waits until it greets clients. */
  static async start(bin = findNatsServer()): Promise<DemoNatsServer> {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const child = spawn(bin, ['-a', HOST, '-p', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
      const server = new DemoNatsServer(child, port);
      const deadline = Date.now() + READY_TIMEOUT_MS;
      while (server.running && Date.now() < deadline) {
        if (await greets(port)) return server;
        await sleep(50);
      }
      await server.stop();
      // Another process took the port between the probe and the server's bind: try another.
      if (/address already in use/i.test(server.output) && attempt < 3) continue;
      const why =
        server.exitCode === undefined ? `did not answer within ${READY_TIMEOUT_MS / 1000}s` : `exited (${server.signalName ?? `code ${server.exitCode}`})`;
      throw new Error(
        `nats-server (${bin}) on ${HOST}:${port} ${why}${server.output.trim() ? `: ${server.output.trim().split('\n').slice(-3).join(' | ')}` : ''}`,
      );
    }
  }

  /** SIGTERM, then SIGKILL after 3 s; resolves once the process is gone. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (!this.running) return;
      this.child.kill('SIGTERM');
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = await Promise.race([this.exited.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), STOP_GRACE_MS)))]);
      clearTimeout(timer);
      if (late) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    })();
    return this.stopping;
  }
}
