/**
 * Start a real `nats-server` on a free 127.0.0.1 port for integration tests.
 * Everything is passed on the command line, so nothing is written to disk.
 */
import { freePort, ManagedProcess, resolveBinary, StartupError, tcpProbe } from './ports.js';

export interface NatsServerOptions {
  /** Require this user (with `password`) for client connections. */
  user?: string;
  password?: string;
  /** Require this token instead (not together with `user`). */
  token?: string;
  /** Also start the HTTP monitoring endpoint (`monitorUrl`). */
  monitor?: boolean;
  /** Startup timeout, default 10 s. */
  startTimeoutMs?: number;
  /** Listen on this port instead of a free one (e.g. one a daemon already tries to reach). */
  port?: number;
}

export interface NatsServerHandle {
  /** nats://127.0.0.1:port */
  readonly url: string;
  readonly port: number;
  /** http://127.0.0.1:monitorPort when started with `monitor: true`. */
  readonly monitorUrl?: string;
  /** PID of the current server process (changes on restart). */
  readonly pid: number;
  /** True while a server process is running. */
  readonly running: boolean;
  /** Combined stdout/stderr of the current process (last 64 KiB). */
  output(): string;
  /** SIGTERM, SIGKILL after 3 s. Idempotent. */
  stop(): Promise<void>;
  /** Stop, then start again on the same port(s) and wait until ready. */
  restart(): Promise<void>;
  /** SIGSTOP / SIGCONT the server (fault injection). */
  pause(): void;
  resume(): void;
}

const HOST = '127.0.0.1';
const NATS_BIN = () => resolveBinary('nats-server', 'NATS_SERVER_BIN', ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']);

interface Ports {
  port: number;
  monitorPort?: number;
}

function buildArgs(ports: Ports, opts: NatsServerOptions): string[] {
  const args = ['-a', HOST, '-p', String(ports.port)];
  if (ports.monitorPort !== undefined) args.push('-m', String(ports.monitorPort));
  if (opts.user !== undefined || opts.password !== undefined) {
    if (opts.user === undefined || opts.password === undefined) {
      throw new Error('startNatsServer: user and password must be given together');
    }
    args.push('--user', opts.user, '--pass', opts.password);
  }
  if (opts.token !== undefined) {
    if (opts.user !== undefined) throw new Error('startNatsServer: give user and password, or a token, not both');
    args.push('--auth', opts.token);
  }
  return args;
}

async function launch(ports: Ports, opts: NatsServerOptions): Promise<ManagedProcess> {
  const proc = new ManagedProcess(`nats-server on ${HOST}:${ports.port}`, NATS_BIN(), buildArgs(ports, opts));
  try {
    await proc.waitUntilReady(async () => {
      // The server greets every client with an INFO line; that also proves
      // that it is nats-server (and not some other process) on the port.
      const greeting = await tcpProbe(HOST, ports.port, { expectGreeting: true, timeoutMs: 1000 });
      if (!greeting.startsWith('INFO ')) return false;
      if (ports.monitorPort !== undefined) {
        const res = await fetch(`http://${HOST}:${ports.monitorPort}/varz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (!res.ok) return false;
      }
      return true;
    }, opts.startTimeoutMs ?? 10_000);
  } catch (err) {
    await proc.stop(500);
    throw err;
  }
  return proc;
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  let proc: ManagedProcess | undefined;
  let ports: Ports | undefined;
  // freePort() has a small race window: retry with fresh ports if another
  // process grabbed ours in between.
  for (let attempt = 1; ; attempt++) {
    const candidate: Ports = {
      port: opts.port ?? (await freePort(HOST)),
      monitorPort: opts.monitor ? await freePort(HOST) : undefined,
    };
    try {
      proc = await launch(candidate, opts);
      ports = candidate;
      break;
    } catch (err) {
      if (err instanceof StartupError && err.addressInUse && attempt < 3 && opts.port === undefined) continue;
      throw err;
    }
  }

  let current: ManagedProcess = proc;
  const fixedPorts: Ports = ports;
  let paused = false;

  const handle: NatsServerHandle = {
    url: `nats://${HOST}:${fixedPorts.port}`,
    port: fixedPorts.port,
    monitorUrl: fixedPorts.monitorPort !== undefined ? `http://${HOST}:${fixedPorts.monitorPort}` : undefined,
    get pid() {
      return current.pid;
    },
    get running() {
      return current.isRunning();
    },
    output: () => current.output(),
    stop: async () => {
      paused = false;
      await current.stop();
    },
    restart: async () => {
      paused = false;
      await current.stop();
      current = await launch(fixedPorts, opts);
    },
    pause: () => {
      if (!paused) current.signal('SIGSTOP');
      paused = true;
    },
    resume: () => {
      if (paused) current.signal('SIGCONT');
      paused = false;
    },
  };
  return handle;
}
