/**
 * `hmgate doctor` prints each line as soon as it is known, in the fixed order, instead of all of
 * them once the slowest check (the heartbeats' 3 hb window) is done; on a terminal a spinner line
 * names what is being waited for, and piped nothing but the lines is written.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig, type LoadedConfig, type ResolvedStage } from '../../src/config/load.js';
import { formatResult, runDoctor, type CheckResult } from '../../src/doctor/index.js';
import { DoctorOutput } from '../../src/doctor/progress.js';
import { pass } from '../../src/sdk/doctor.js';
import { cliPath } from '../helpers/hmgate-process.js';
import { freePort, startFakeCC, startNatsServer } from '../helpers/index.js';

let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-doctor-progress-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

/** Runs the built CLI with stdout piped, noting when each chunk of stdout arrived. */
function timedCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; chunks: { at: number; text: string }[]; endedAt: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: { at: number; text: string }[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => chunks.push({ at: performance.now() - t0, text: d.toString() }));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 25_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: chunks.map((c) => c.text).join(''), stderr, chunks, endedAt: performance.now() - t0 });
    });
  });
}

const HB = 1000; // no agent: the heartbeat check listens its whole window, 3 s

/** The hm9000 preset at 1 s heartbeats, with NATS and a CC up and no agent. */
async function foundationWithoutAgents(): Promise<{ f: string; natsUrl: string; natsPort: number }> {
  const n = await startNatsServer();
  cleanups.push(() => n.stop());
  const cc = await startFakeCC({ apps: [{ guid: 'app-a' }] });
  cleanups.push(() => cc.stop());
  const f = join(dir, 'hmgate.yaml');
  await writeFile(
    f,
    [
      'extends: hm9000',
      'foundation: doc-progress',
      `heartbeat_interval: ${HB}ms`,
      'bus:',
      `  servers: ["${n.url}"]`,
      'sources:',
      '  desired:',
      `    url: "${cc.url}"`,
      '    user: bulk_api',
      '    password: bulk-password',
      `api: { listen: "127.0.0.1:${await freePort()}", password: pw }`,
      '',
    ].join('\n'),
  );
  return { f, natsUrl: n.url, natsPort: n.port };
}

/** What a terminal shows in the end: \r and erase-line (ESC [2K) applied. */
function screen(output: string): { lines: string[]; last: string } {
  const lines: string[] = [];
  let cur = '';
  const pieces = output.replace(/\r/g, '').split('\n');
  pieces.forEach((piece, i) => {
    const segments = piece.split('\x1b[2K');
    cur = segments.length > 1 ? segments.at(-1)! : cur + piece;
    if (i < pieces.length - 1) {
      lines.push(cur);
      cur = '';
    }
  });
  return { lines, last: cur };
}

describe('hmgate doctor prints as it goes', () => {
  it('the config and NATS lines come long before the heartbeat check ends its 3 hb window; piped, nothing but the lines', async () => {
    const { f, natsUrl, natsPort } = await foundationWithoutAgents();
    const r = await timedCli(['doctor', '-c', f]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(1);
    const lines = r.stdout.trim().split('\n');
    expect(lines.slice(0, 2)).toEqual([`ok: config ${f}: valid (10 stages)`, `ok: NATS at ${natsUrl}: connected to 127.0.0.1:${natsPort}`]);
    expect(lines).toContain(
      'FAIL: heartbeats on dea.heartbeat: none within 3 heartbeat intervals (3s); fix: no agents, wrong NATS or wrong subject: the agents (DEAs) must publish on `sources.heartbeats.subject` (dea.heartbeat) to the NATS in `bus.servers` [NO_HEARTBEATS]',
    );
    expect(lines.at(-1)).toMatch(/^\d+ of \d+ checks failed$/);
    expect(r.stdout).not.toContain('\x1b'); // no spinner in a pipe
    expect(r.stdout).not.toContain('\r');

    // The first two lines were out while the heartbeat check still listened.
    let text = '';
    const firstTwo = r.chunks.find((c) => (text += c.text).split('\n').length > 2);
    const heardAt = firstTwo!.at;
    expect(r.endedAt - heardAt, JSON.stringify(r.chunks)).toBeGreaterThan(2 * HB);
    const heartbeatLineAt = r.chunks.find((c) => c.text.includes('heartbeats on dea.heartbeat'))!.at;
    expect(heartbeatLineAt - heardAt).toBeGreaterThan(2 * HB);
  });

  it.skipIf(process.platform !== 'linux' || !existsSync('/usr/bin/script'))(
    'on a terminal: a spinner line names what is waited for, and the screen ends with the same lines',
    async () => {
      const { f, natsUrl } = await foundationWithoutAgents();
      const piped = await timedCli(['doctor', '-c', f]);
      // util-linux script(1) runs the CLI on a pseudo-terminal.
      const tty = await new Promise<string>((resolve, reject) => {
        const child = spawn('script', ['-qec', `${JSON.stringify(process.execPath)} ${JSON.stringify(cliPath)} doctor -c ${JSON.stringify(f)}`, '/dev/null'], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.on('error', reject);
        child.on('close', () => resolve(out));
      });
      expect(tty).toContain(`waiting for NATS at ${natsUrl}`);
      expect(tty).toContain('waiting for sources.heartbeats (heartbeat)');
      const shown = screen(tty);
      expect(shown.last).toBe(''); // the spinner is gone
      expect(shown.lines.join('\n')).toBe(piped.stdout.trimEnd());
    },
  );
});

/** A stage whose doctor hook answers when the test says so. */
function stage(id: string, section: ResolvedStage['section'], results: CheckResult[] | undefined, published: string[] = [], more: object = {}) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const s = {
    id,
    section,
    kind: 'source',
    pluginSpec: `fake-${id}`,
    options: {},
    plugin: {
      ...(results ? { doctor: async () => (await released, { results, ...more }) } : {}),
      ...(published.length ? { publishes: () => published } : {}),
    },
  } as unknown as ResolvedStage;
  return { s, release };
}

const tick = () => new Promise((r) => setTimeout(r, 20));

describe('runDoctor: each line as soon as every line before it is known', () => {
  it('in the fixed order (by check, then by stage), held back only where a running check could still put a line', async () => {
    const natsPort = await freePort();
    const f = join(dir, 'hmgate.yaml');
    await writeFile(f, [`bus: { servers: ["nats://127.0.0.1:${natsPort}"] }`, 'api: { password: pw }', ''].join('\n'));
    const base = await loadConfig(f);
    const store = stage('store', 'store', [pass('etcd', 'etcd', 'fine')]);
    const hb = stage('heartbeats', 'sources', [pass('heartbeats', 'heartbeats', 'heard'), pass('cc_partition', 'cc_partition', 'same')], [], {
      heartbeats: { apps: new Set(), instances: 0 },
    });
    const desired = stage('desired', 'sources', [pass('cc', 'CC', 'answered'), pass('custom', 'custom', 'a check of another name')], [], {
      desired: { guids: new Set(), apps: 0 },
    });
    const sink = stage('cc_sink', 'sinks', undefined, ['hm9000.start', 'hm9000.stop']); // no monitor_url: its start/stop check skips at once
    const loaded: LoadedConfig = { ...base, stages: [store.s, hb.s, desired.s, sink.s] };

    const seen: string[] = [];
    const waits: string[][] = [];
    const waitingAt: Record<string, string[] | undefined> = {};
    const run = runDoctor(loaded, {
      timeoutMs: 1000,
      onResult: (r) => {
        seen.push(r.name);
        waitingAt[r.name] = waits.at(-1);
      },
      onWaiting: (w) => waits.push(w),
    });
    await tick();
    await tick();
    expect(seen).toEqual(['config', 'nats']);
    expect(waits[0]).toEqual([`NATS at nats://127.0.0.1:${natsPort}`]);
    expect(waits.at(-1)).toEqual(['store (fake-store)', 'sources.heartbeats (fake-heartbeats)', 'sources.desired (fake-desired)']);

    desired.release(); // cc comes after every stage's etcd line: held back
    await tick();
    expect(seen).toEqual(['config', 'nats']);
    store.release(); // etcd of the first stage: out; the heartbeat stage could still say etcd
    await tick();
    expect(seen).toEqual(['config', 'nats', 'etcd']);
    expect(waits.at(-1)).toEqual(['sources.heartbeats (fake-heartbeats)']);
    hb.release();
    const results = await run;
    expect(seen).toEqual(['config', 'nats', 'etcd', 'cc', 'heartbeats', 'cc_partition', 'start_stop', 'custom', 'foundation']);
    expect(results.map((r) => r.name)).toEqual(seen);
    expect(waitingAt.foundation).toEqual([]); // nothing said to be running once all is done
    expect(waits.at(-1)).toEqual([]);
    expect(formatResult(results[1]!)).toMatch(/^FAIL: NATS at /);
  });
});

describe('DoctorOutput', () => {
  const fake = (isTTY: boolean) => {
    const writes: string[] = [];
    return { stream: { isTTY, columns: 60, write: (s: string) => writes.push(s) }, writes };
  };

  it('piped: the lines alone', () => {
    const { stream, writes } = fake(false);
    const out = new DoctorOutput(stream);
    out.waiting(['sources.heartbeats (heartbeat)']);
    out.line('ok: config x: valid (1 stages)');
    out.close();
    expect(writes.join('')).toBe('ok: config x: valid (1 stages)\n');
  });

  it('on a terminal: a spinner line naming what is waited for, erased before each line and at the end', () => {
    let now = 0;
    const { stream, writes } = fake(true);
    const out = new DoctorOutput(stream, { now: () => now, intervalMs: 60_000 });
    out.line('ok: config x: valid (1 stages)');
    out.waiting(['sources.heartbeats (heartbeat)']);
    now = 12_300;
    out.line('ok: NATS at nats://h:4222: connected to h:4222');
    out.waiting(['a-very-long-stage-name (plugin)', 'another-very-long-stage-name (plugin)']);
    out.close();
    expect(writes).toEqual([
      'ok: config x: valid (1 stages)\n',
      '\r\x1b[2K⠋ waiting for sources.heartbeats (heartbeat) (0s)',
      '\r\x1b[2K',
      'ok: NATS at nats://h:4222: connected to h:4222\n',
      '\r\x1b[2K⠋ waiting for sources.heartbeats (heartbeat) (12s)',
      '\r\x1b[2K⠋ waiting for a-very-long-stage-name (plugin), another-ver…', // cut to the terminal's width (60 - 1)
      '\r\x1b[2K',
    ]);
    expect(out.spinnerText()).toBe('');
  });

  it('a terminal of unknown width (0 columns) gets 80', () => {
    const out = new DoctorOutput({ isTTY: true, columns: 0, write: () => undefined }, { intervalMs: 60_000 });
    out.waiting(['x'.repeat(200)]);
    expect([...out.spinnerText()]).toHaveLength(79);
    out.close();
  });
});
