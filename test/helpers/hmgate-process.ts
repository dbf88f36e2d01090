/**
 * Runs the built hmgate CLI (dist/src/cli.js) as a real child process, as an operator would, and
 * collects its output. Every process started here is killed by stop() or at test-process exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { registerExitCleanup } from './ports.js';

export const cliPath = resolve(__dirname, '../../dist/src/cli.js');

function ensureBuilt(): void {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run "npm run build" first (npm test does)`);
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a one-shot command (validate, print-config, …) to completion. */
export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  ensureBuilt();
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hmgate ${args.join(' ')} did not finish within ${opts.timeoutMs ?? 20_000}ms\n${stdout}\n${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr });
    });
  });
}

export class HmgateDaemon {
  stdout = '';
  stderr = '';
  private readonly exited: Promise<CliResult>;
  private readonly unregister: () => void;

  private constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => (this.stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((r) => child.on('close', (code, signal) => r({ code, signal, stdout: this.stdout, stderr: this.stderr })));
    this.unregister = registerExitCleanup(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
  }

  /** Starts `hmgate run -c <config>`. */
  static start(config: string, opts: { cwd?: string; env?: NodeJS.ProcessEnv; args?: string[] } = {}): HmgateDaemon {
    ensureBuilt();
    const child = spawn(process.execPath, [cliPath, 'run', '-c', config, ...(opts.args ?? [])], {
      cwd: opts.cwd ?? join(config, '..'),
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new HmgateDaemon(child);
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** The JSON log lines printed so far. */
  logs(): Record<string, unknown>[] {
    return this.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  wait(): Promise<CliResult> {
    return this.exited;
  }

  /** Sends `signal` and waits for the exit; SIGKILL after `killAfterMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', killAfterMs = 5_000): Promise<CliResult> {
    if (this.running) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), killAfterMs);
      await this.exited;
      clearTimeout(timer);
    }
    this.unregister();
    return this.exited;
  }
}

/** A function reading a daemon's GET /v1/status (user magnet), throwing on anything but 200. */
export function statusReader(port: number, password = 'pw'): () => Promise<Record<string, any>> {
  const authorization = `Basic ${Buffer.from(`magnet:${password}`).toString('base64')}`;
  return async () => {
    const res = await fetch(`http://127.0.0.1:${port}/v1/status`, { headers: { authorization }, signal: AbortSignal.timeout(3_000) });
    if (!res.ok) throw new Error(`status ${res.status}`);
    return (await res.json()) as Record<string, any>;
  };
}
