/**
 * Start a real single-member etcd (v3.4) on free 127.0.0.1 ports with a
 * temporary data dir, for integration tests.
 */
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort, ManagedProcess, registerExitCleanup, resolveBinary, StartupError } from './ports.js';

export interface EtcdOptions {
  /** etcd log level (default 'error'); raise it when debugging a test. */
  logLevel?: 'debug' | 'info' | 'warn' | 'error';
  /** Startup timeout, default 10 s. */
  startTimeoutMs?: number;
}

export interface EtcdHandle {
  /** http://127.0.0.1:clientPort */
  readonly endpoint: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  /** PID of the current etcd process (changes on restart). */
  readonly pid: number;
  readonly running: boolean;
  readonly paused: boolean;
  /** Combined stdout/stderr of the current process (last 64 KiB). */
  output(): string;
  /** Kill etcd and remove the data dir. Idempotent. */
  stop(): Promise<void>;
  /** SIGSTOP: etcd stops answering but keeps its sockets open. */
  pause(): void;
  /** SIGCONT after pause(). */
  resume(): void;
  /** Stop and start again with the same data dir and ports; waits until healthy. */
  restart(): Promise<void>;
}

const HOST = '127.0.0.1';
const NAME = 'hmgate-test';
const ETCD_BIN = () => resolveBinary('etcd', 'ETCD_BIN', ['/usr/bin/etcd', '/usr/local/bin/etcd']);

interface Layout {
  clientPort: number;
  peerPort: number;
  dataDir: string;
}

function buildArgs(l: Layout, opts: EtcdOptions): string[] {
  const client = `http://${HOST}:${l.clientPort}`;
  const peer = `http://${HOST}:${l.peerPort}`;
  return [
    '--name',
    NAME,
    '--data-dir',
    l.dataDir,
    '--listen-client-urls',
    client,
    '--advertise-client-urls',
    client,
    '--listen-peer-urls',
    peer,
    '--initial-advertise-peer-urls',
    peer,
    '--initial-cluster',
    `${NAME}=${peer}`,
    '--initial-cluster-state',
    'new',
    '--initial-cluster-token',
    `${NAME}-${l.clientPort}`,
    // Quiet and quick: single member, short raft timers.
    '--logger',
    'zap',
    '--log-outputs',
    'stderr',
    '--log-level',
    opts.logLevel ?? 'error',
    '--heartbeat-interval',
    '10',
    '--election-timeout',
    '100',
  ];
}

async function isHealthy(endpoint: string): Promise<boolean> {
  const res = await fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1000) });
  const text = await res.text();
  if (!res.ok) return false;
  try {
    return (JSON.parse(text) as { health?: unknown }).health === 'true';
  } catch {
    return false;
  }
}

async function launch(l: Layout, opts: EtcdOptions): Promise<ManagedProcess> {
  const proc = new ManagedProcess(`etcd on ${HOST}:${l.clientPort}`, ETCD_BIN(), buildArgs(l, opts), {
    orphanPaths: [l.dataDir],
  });
  try {
    await proc.waitUntilReady(() => isHealthy(`http://${HOST}:${l.clientPort}`), opts.startTimeoutMs ?? 10_000);
  } catch (err) {
    await proc.stop(500);
    throw err;
  }
  return proc;
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdHandle> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'hmgate-etcd-'));
  const removeDirSync = () => rmSync(dataDir, { recursive: true, force: true });
  const unregisterDir = registerExitCleanup(removeDirSync);

  let proc: ManagedProcess | undefined;
  let layout: Layout | undefined;
  try {
    for (let attempt = 1; ; attempt++) {
      const candidate: Layout = { clientPort: await freePort(HOST), peerPort: await freePort(HOST), dataDir };
      try {
        proc = await launch(candidate, opts);
        layout = candidate;
        break;
      } catch (err) {
        if (err instanceof StartupError && err.addressInUse && attempt < 3) {
          // A half-initialised member dir would pin the old peer URL.
          await rm(dataDir, { recursive: true, force: true });
          await mkdir(dataDir, { recursive: true, mode: 0o700 });
          continue;
        }
        throw err;
      }
    }
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    unregisterDir();
    throw err;
  }

  let current: ManagedProcess = proc;
  const fixed: Layout = layout;
  let paused = false;
  let stopped: Promise<void> | undefined;

  const handle: EtcdHandle = {
    endpoint: `http://${HOST}:${fixed.clientPort}`,
    clientPort: fixed.clientPort,
    peerPort: fixed.peerPort,
    dataDir,
    get pid() {
      return current.pid;
    },
    get running() {
      return current.isRunning();
    },
    get paused() {
      return paused;
    },
    output: () => current.output(),
    stop: () => {
      stopped ??= (async () => {
        paused = false;
        await current.stop();
        await rm(dataDir, { recursive: true, force: true });
        unregisterDir();
      })();
      return stopped;
    },
    pause: () => {
      if (!paused && current.isRunning()) {
        current.signal('SIGSTOP');
        paused = true;
      }
    },
    resume: () => {
      if (paused) current.signal('SIGCONT');
      paused = false;
    },
    restart: async () => {
      if (stopped) throw new Error('etcd: restart() after stop() (the data dir is gone)');
      paused = false;
      await current.stop();
      current = await launch(fixed, opts);
    },
  };
  return handle;
}
