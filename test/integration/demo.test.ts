/**
 * `hmgate demo` as a user runs it, from the built code: it plays its script against its own
 * nats-server and prints the daemon's decisions as they come (the first well within 60 s of the
 * command starting), its API answers with the credentials it prints, and when it ends — after the
 * script, on SIGINT, or at --duration — everything it started is gone and it exits 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { registerExitCleanup, startNatsServer, waitFor } from '../helpers/index.js';
import { cliPath } from '../helpers/hmgate-process.js';

const entry = cliPath;

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Line {
  /** ms after the command was started */
  at: number;
  text: string;
}

class Demo {
  readonly lines: Line[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  private partial = '';

  constructor(
    readonly child: ChildProcess,
    readonly t0: number,
  ) {
    child.stdout!.on('data', (d: Buffer) => {
      const parts = (this.partial + d.toString('utf8')).split('\n');
      this.partial = parts.pop()!;
      for (const text of parts) this.lines.push({ at: Date.now() - t0, text });
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
    this.exited = new Promise((r) => child.on('close', (code, signal) => r({ code, signal, at: Date.now() - t0 })));
  }

  static start(args: string[]): Demo {
    const t0 = Date.now();
    const { HM_API_PASSWORD: _set, ...env } = process.env;
    const child = spawn(process.execPath, [entry, 'demo', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const demo = new Demo(child, t0);
    const unregister = registerExitCleanup(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    cleanups.push(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      unregister();
    });
    return demo;
  }

  get text(): string {
    return this.lines.map((l) => l.text).join('\n');
  }

  find(re: RegExp): Line | undefined {
    return this.lines.find((l) => re.test(l.text));
  }

  /** The first line matching `re`, waiting for it. */
  waitLine(re: RegExp, timeoutMs: number): Promise<Line> {
    return waitFor(() => this.find(re), { what: `a line ${re} from the demo\n${this.text}\n${this.stderr}`, timeoutMs, intervalMs: 50 });
  }

  /** The nats-server the demo said it started. */
  natsPid(): number | undefined {
    const m = /nats-server pid (\d+), started for the demo/.exec(this.text);
    return m ? Number(m[1]) : undefined;
  }

  /** Every loopback port the demo printed (NATS, bulk API, daemon API). */
  ports(): number[] {
    return [...this.text.matchAll(/(?:nats|http):\/\/127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1]));
  }
}

/** A decision the daemon sent: START or STOP, app, index, reason. */
const DECISION = /daemon→ (START|STOP) app \d+(?: \(v\d\))? index \d+, [A-Z_]+/;
/** A start with its reason. */
const START = /daemon→ START app \d+(?: \(v\d\))? index \d+, (CRASHED|MISSING|EVACUATING)\b/;

const gone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
};

/** True when nothing accepts connections on the port any more. */
const closed = (port: number) =>
  new Promise<boolean>((r) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      r(false);
    });
    s.once('error', () => r(true));
  });

describe('hmgate demo', () => {
  it('plays its script, printing each decision the daemon sends as it comes, and leaves nothing running', async () => {
    const demo = Demo.start(['--heartbeat', '500ms']);
    // The API answers with the credentials printed at the start.
    const curl = await demo.waitLine(/status\s+curl -su magnet:(\S+) (http:\/\/127\.0\.0\.1:\d+)\/v1\/status/, 30_000);
    const [, password, base] = /curl -su magnet:(\S+) (\S+)\/v1\/status/.exec(curl.text)!;
    const status = await fetch(`${base}/v1/status`, { headers: { Authorization: `Basic ${Buffer.from(`magnet:${password}`).toString('base64')}` } });
    expect(status.status).toBe(200);
    expect(((await status.json()) as { foundation: string }).foundation).toBe('demo');
    const natsPid = demo.natsPid();
    expect(natsPid).toBeGreaterThan(0);

    const first = await demo.waitLine(START, 60_000);
    expect(first.at).toBeLessThan(60_000);
    const end = await demo.exited;
    const out = demo.text;
    expect(demo.stderr).toBe('');
    expect(end).toMatchObject({ code: 0, signal: null });

    // The script's events, each followed by what the daemon did about it.
    const crash = demo.find(/demo: +app 0 index 1 crashes: agent 1 reports it CRASHED/);
    const scale = demo.find(/demo: +app 1 scales up from 1 to 3 instances/);
    const dies = demo.find(/demo: +agent 2 stops heartbeating for good/);
    const version = demo.find(/demo: +app 3 changes version in the bulk API, v1 → v2/);
    for (const [name, l] of Object.entries({ crash, scale, dies, version })) expect(l, `${name} in\n${out}`).toBeDefined();
    expect(out).toMatch(/daemon→ START app 0 index 1, CRASHED/);
    expect(out).toMatch(/daemon→ START app 1 index 2, MISSING/);
    expect(out).toMatch(/daemon→ START app 2 index 1, MISSING/);
    expect(out).toMatch(/daemon→ START app 3 \(v2\) index 0, MISSING/);
    const decisions = demo.lines.filter((l) => DECISION.test(l.text));
    expect(decisions[0]!.at).toBeGreaterThan(crash!.at);
    expect(out).toMatch(/demo: +the script is over/);
    expect(out).toMatch(/^the daemon sent \d+ starts \(CRASHED 1, MISSING \d+\)/m);
    expect(out).toMatch(/demo: +stopped the daemon, the simulator, nats-server \(pid \d+\)$/m);

    // Nothing it started outlives it.
    expect(gone(natsPid!)).toBe(true);
    const ports = demo.ports();
    expect(ports).toHaveLength(5); // NATS, bulk API, and the daemon's API three times
    for (const port of new Set(ports)) expect(await closed(port), `port ${port}`).toBe(true);
  }, 90_000);

  it('stops cleanly on SIGINT: exit 0, its nats-server gone', async () => {
    const demo = Demo.start(['--heartbeat', '500ms']);
    await demo.waitLine(DECISION, 60_000);
    const natsPid = demo.natsPid()!;
    expect(gone(natsPid)).toBe(false);
    const sent = Date.now() - demo.t0;
    demo.child.kill('SIGINT');
    const end = await demo.exited;
    expect(end).toMatchObject({ code: 0, signal: null });
    expect(end.at - sent).toBeLessThan(10_000);
    expect(demo.text).toMatch(/demo: +SIGINT received: stopping/);
    expect(demo.text).not.toMatch(/the script is over/);
    expect(demo.stderr).toBe('');
    expect(gone(natsPid)).toBe(true);
  }, 60_000);

  it('uses the NATS given with --nats, stops at --duration, and leaves that NATS running', async () => {
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const demo = Demo.start(['--nats', nats.url, '--heartbeat', '500ms', '--duration', '4s', '--password', 'demo-pw']);
    const end = await demo.exited;
    expect(demo.stderr).toBe('');
    expect(end).toMatchObject({ code: 0, signal: null });
    expect(demo.text).toContain(`NATS        ${nats.url}  (given with --nats)`);
    expect(demo.text).toMatch(/curl -su magnet:demo-pw http:\/\/127\.0\.0\.1:\d+\/v1\/status/);
    expect(demo.text).toMatch(/demo: +--duration 4s is up: stopping/);
    expect(demo.text).toMatch(/demo: +stopped the daemon, the simulator$/m);
    expect(demo.natsPid()).toBeUndefined();
    expect(nats.running).toBe(true);
  }, 60_000);

  it('refuses a bad option with a usage error (exit 2)', async () => {
    const demo = Demo.start(['--heartbeat', 'soon']);
    const end = await demo.exited;
    expect(end.code).toBe(2);
    // As commander words a usage error, or as src/cli.ts rewords it ("hmgate: …").
    expect(demo.stderr).toMatch(/^(?:error|hmgate): --heartbeat: bad duration "soon"/);
    expect(demo.text).toBe('');
  }, 30_000);
});
