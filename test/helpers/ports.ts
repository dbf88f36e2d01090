/**
 * Shared plumbing for the integration-test helpers:
 *  - free loopback ports and a polling `waitFor`,
 *  - a small supervisor for external server processes (nats-server, etcd)
 *    with a SIGTERM -> SIGKILL stop and a process-exit safety net.
 *
 * Everything here binds or connects to loopback addresses only.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';

// ---------------------------------------------------------------------------
// Ports and polling
// ---------------------------------------------------------------------------

/**
 * Ask the kernel for a currently free TCP port on `host` (listen on port 0,
 * read the port, close). There is an unavoidable window between closing and
 * the real server binding; callers that spawn servers retry on EADDRINUSE.
 */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen({ host, port: 0, exclusive: true }, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        reject(new Error(`freePort: unexpected address ${String(addr)}`));
        return;
      }
      const { port } = addr;
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

export interface WaitForOptions {
  /** Give up after this many milliseconds (default 10 000). */
  timeoutMs?: number;
  /** Delay between attempts (default 50). */
  intervalMs?: number;
  /** Human readable description used in the timeout error. */
  what?: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Poll `fn` until it returns a truthy value (which is returned). Exceptions
 * thrown by `fn` count as "not yet"; the last one is quoted in the timeout
 * error. Uses real time: meant for integration tests.
 */
export async function waitFor<T>(fn: () => T | Promise<T>, opts: WaitForOptions = {}): Promise<Exclude<T, false | null | undefined | 0 | ''>> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const intervalMs = opts.intervalMs ?? 50;
  const what = opts.what ?? 'condition';
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as Exclude<T, false | null | undefined | 0 | ''>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const detail = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail}`);
    }
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
}

/**
 * Open a TCP connection to host:port. Resolves with the first chunk the peer
 * sends (or '' if `expectGreeting` is false and the connect succeeded), rejects
 * on error or after `timeoutMs`.
 */
export function tcpProbe(host: string, port: number, opts: { timeoutMs?: number; expectGreeting?: boolean } = {}): Promise<string> {
  const timeoutMs = opts.timeoutMs ?? 1000;
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`tcp probe ${host}:${port} timed out`));
    }, timeoutMs);
    const done = (err: Error | null, data = '') => {
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(data);
    };
    sock.once('error', (err) => done(err));
    sock.once('connect', () => {
      if (!opts.expectGreeting) done(null);
    });
    sock.once('data', (buf) => done(null, buf.toString('utf8')));
  });
}

// ---------------------------------------------------------------------------
// Safety net for servers a test forgot to stop
// ---------------------------------------------------------------------------
//
// Three layers, because test runners end their workers in different ways:
//  1. process 'exit': synchronous SIGKILL of still-running children and
//     removal of temp dirs;
//  2. SIGTERM / SIGINT / SIGHUP (vitest's forks pool stops workers with
//     SIGTERM): the same cleanups, waiting briefly for the children to die,
//     then the signal is re-raised with its default action unless someone
//     else handles it;
//  3. a tiny `sh` watchdog per server holding a pipe from this process: when
//     this process dies in any way (SIGKILL, worker thread teardown of the
//     whole runner), the pipe hits EOF and the watchdog kills the server.

/** Returns a promise when the cleanup has something to wait for (e.g. a child exiting). */
export type ExitCleanup = () => void | Promise<unknown>;

const exitCleanups = new Set<ExitCleanup>();
let hooksInstalled = false;
const SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

/**
 * Register a cleanup run when the process exits or is terminated by a signal
 * (latest registered runs first). Returns an unregister function. Cleanups
 * must be idempotent; synchronous work must not depend on awaiting.
 */
export function registerExitCleanup(fn: ExitCleanup): () => void {
  installHooks();
  exitCleanups.add(fn);
  return () => {
    exitCleanups.delete(fn);
  };
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', () => {
    for (const fn of takeCleanups()) {
      try {
        void Promise.resolve(fn()).catch(() => undefined);
      } catch {
        /* best effort */
      }
    }
  });
  for (const sig of SIGNALS) process.once(sig, () => void onSignal(sig));
}

function takeCleanups(): ExitCleanup[] {
  const fns = [...exitCleanups].reverse();
  exitCleanups.clear();
  return fns;
}

async function onSignal(sig: NodeJS.Signals): Promise<void> {
  for (const fn of takeCleanups()) {
    try {
      const pending = fn();
      if (pending) await Promise.race([pending.catch(() => undefined), sleep(300)]);
    } catch {
      /* best effort */
    }
  }
  // Our listener was a `once`: if nobody else handles this signal, let the
  // default action (termination) happen as it would have without us.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

const WATCHDOG_SCRIPT = [
  'read line',
  'if [ "$line" != done ]; then',
  '  kill -CONT "$1" 2>/dev/null',
  '  kill -KILL "$1" 2>/dev/null',
  '  shift',
  '  if [ $# -gt 0 ]; then sleep 0.2; rm -rf -- "$@"; fi',
  'fi',
].join('\n');

/**
 * Start a watchdog that SIGKILLs `pid` (and removes `paths`) once this
 * process dies. Returns a function that dismisses it without killing.
 */
function startWatchdog(pid: number, paths: string[]): () => void {
  let wd: ChildProcess;
  try {
    wd = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT, 'hmgate-test-watchdog', String(pid), ...paths], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
  } catch {
    return () => undefined;
  }
  wd.on('error', () => undefined);
  wd.stdin?.on('error', () => undefined);
  // Neither the watchdog nor its pipe may keep the event loop alive.
  wd.unref();
  (wd.stdin as unknown as { unref?: () => void } | null)?.unref?.();
  let dismissed = false;
  return () => {
    if (dismissed) return;
    dismissed = true;
    wd.stdin?.end('done\n');
  };
}

// ---------------------------------------------------------------------------
// Child process supervision
// ---------------------------------------------------------------------------

/** Resolve an executable: env override, then known absolute paths, then PATH. */
export function resolveBinary(name: string, envVar: string, candidates: string[]): string {
  const fromEnv = process.env[envVar];
  if (fromEnv) return fromEnv;
  for (const c of candidates) if (existsSync(c)) return c;
  return name;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all (e.g. ENOENT). */
  error?: Error;
}

export interface ManagedProcessOptions {
  /** Paths the watchdog removes if this process has to be killed as an orphan. */
  orphanPaths?: string[];
}

const OUTPUT_LIMIT = 64 * 1024;

/** One running instance of an external server process. */
export class ManagedProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<ExitInfo>;
  private out = '';
  private exitInfo: ExitInfo | undefined;
  private stopping: Promise<void> | undefined;

  constructor(
    readonly label: string,
    readonly command: string,
    readonly args: string[],
    opts: ManagedProcessOptions = {},
  ) {
    this.child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
    const append = (buf: Buffer) => {
      this.out += buf.toString('utf8');
      if (this.out.length > OUTPUT_LIMIT) this.out = this.out.slice(-OUTPUT_LIMIT);
    };
    this.child.stdout?.on('data', append);
    this.child.stderr?.on('data', append);
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.once('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve(this.exitInfo);
      });
      this.child.on('error', (error) => {
        // 'error' without 'exit' happens when spawning fails.
        if (this.child.pid === undefined && this.exitInfo === undefined) {
          this.exitInfo = { code: null, signal: null, error };
          resolve(this.exitInfo);
        }
      });
    });
    const dismissWatchdog = this.child.pid !== undefined ? startWatchdog(this.child.pid, opts.orphanPaths ?? []) : () => undefined;
    const unregister = registerExitCleanup(() => {
      if (!this.isRunning()) return;
      this.signal('SIGCONT');
      this.signal('SIGKILL');
      return this.exited;
    });
    void this.exited.then(() => {
      unregister();
      dismissWatchdog();
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  isRunning(): boolean {
    return this.exitInfo === undefined && this.child.pid !== undefined;
  }

  /** Last 64 KiB of combined stdout/stderr. */
  output(): string {
    return this.out;
  }

  describeExit(): string {
    const e = this.exitInfo;
    if (!e) return 'still running';
    if (e.error) return `failed to spawn: ${e.error.message}`;
    return e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.isRunning()) {
      try {
        this.child.kill(sig);
      } catch {
        /* exited meanwhile */
      }
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. Idempotent. */
  stop(graceMs = 3000): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        if (!this.isRunning()) return;
        // A SIGSTOPped process would not act on SIGTERM until continued.
        this.signal('SIGCONT');
        this.signal('SIGTERM');
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          this.exited.then(() => false),
          new Promise<boolean>((r) => {
            timer = setTimeout(() => r(true), graceMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) {
          this.signal('SIGKILL');
          await this.exited;
        }
      })();
    }
    return this.stopping;
  }

  /**
   * Poll `probe` until it returns true. Fails fast, with the process output,
   * if the process exits first; on timeout the process is killed and the error
   * carries the output too.
   */
  async waitUntilReady(probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      if (!this.isRunning()) throw this.startupError(`${this.describeExit()} before becoming ready`);
      try {
        if (await probe()) return;
      } catch (err) {
        lastError = err;
      }
      if (!this.isRunning()) throw this.startupError(`${this.describeExit()} before becoming ready`);
      await Promise.race([sleep(50), this.exited]);
    }
    await this.stop(500);
    const why = lastError instanceof Error ? ` (last probe error: ${lastError.message})` : '';
    throw this.startupError(`did not become ready within ${timeoutMs} ms${why}`);
  }

  startupError(reason: string): StartupError {
    return new StartupError(`${this.label} ${reason}\ncommand: ${this.command} ${this.args.join(' ')}\n` + `output:\n${this.out.trim() || '(none)'}`, this.out);
  }
}

export class StartupError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
    this.name = 'StartupError';
  }

  get addressInUse(): boolean {
    return /address already in use|EADDRINUSE/i.test(this.output);
  }
}
