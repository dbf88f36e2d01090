/**
 * The CLI as an operator meets it: the built binary, a real nats-server, real sockets.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { freePort, startNatsServer, waitFor, type NatsServerHandle } from '../helpers/index.js';
import { HmgateDaemon, runCli } from '../helpers/hmgate-process.js';

const root = resolve(__dirname, '../..');
let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-cli-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

async function nats(opts?: Parameters<typeof startNatsServer>[0]): Promise<NatsServerHandle> {
  const n = await startNatsServer(opts);
  cleanups.push(() => n.stop());
  return n;
}

function daemon(config: string, env?: NodeJS.ProcessEnv): HmgateDaemon {
  const d = HmgateDaemon.start(config, { env });
  cleanups.push(() => d.stop('SIGKILL'));
  return d;
}

async function writeConfig(text: string, name = 'hmgate.yaml'): Promise<string> {
  const f = join(dir, name);
  await writeFile(f, text);
  return f;
}

const auth = (user: string, pw: string) => ({ Authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}` });

async function status(port: number, pw: string): Promise<Record<string, any>> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/status`, { headers: auth('magnet', pw) });
  if (res.status !== 200) throw new Error(`status ${res.status}`);
  return (await res.json()) as Record<string, any>;
}

describe('hmgate validate / print-config', () => {
  it('accepts config.example.yaml', async () => {
    const r = await runCli(['validate', '-c', join(root, 'config.example.yaml')]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('config.example.yaml: valid');
  });

  it('prints one FILE:LINE:COL line per problem and exits 1, with no stack trace', async () => {
    const f = await writeConfig(
      ['extends: hm9000', 'heartbeat_interval: 10s', 'analyze_interval: every now and then', 'api:', '  password: x', '  user: 42', 'colour: blue', ''].join(
        '\n',
      ),
    );
    const r = await runCli(['validate', '-c', f]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n')).toEqual([
      `${f}:3:19: analyze_interval: bad duration "every now and then": use a number with ms, s, m, h or hb (heartbeats), e.g. "250ms", "10s", "3hb"`,
      `${f}:6:9: api.user must be string, not number 42`,
      expect.stringMatching(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7:1: unknown key "colour"`)),
    ]);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('finds hmgate.config.yaml in the working directory', async () => {
    await writeConfig('api:\n  password: pw\n', 'hmgate.config.yaml');
    const r = await runCli(['validate'], { cwd: dir });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(join(dir, 'hmgate.config.yaml'));
  });

  it('says so when there is no config, and exits 2 on usage errors', async () => {
    const none = await runCli(['validate'], { cwd: dir });
    expect(none.code).toBe(1);
    expect(none.stderr.trim()).toBe(
      `hmgate: no config file: give -c FILE, or put one of hmgate.config.yaml, hmgate.config.yml, .hmgaterc.yaml, .hmgaterc.yml, .hmgaterc in ${dir}`,
    );
    expect((await runCli(['frobnicate'])).code).toBe(2);
    expect((await runCli(['validate', '--no-such-flag'])).code).toBe(2);
    expect((await runCli(['validate', '-c'])).code).toBe(2);
  });

  it('prints the merged config with defaults, secrets masked', async () => {
    const f = await writeConfig(
      [
        'extends: hm9000',
        'bus:',
        '  user: nats',
        '  password: ${NATS_PW}',
        'api:',
        '  password: ${API_PW}',
        'sources:',
        '  extra:',
        '    plugin: hmgate-plugin-fixture',
        '    marker_file: /tmp/m',
        '',
      ].join('\n'),
    );
    const r = await runCli(['print-config', '-c', f], { env: { NATS_PW: 'n4ts-s3cret', API_PW: 'api-s3cret' } });
    expect(r.code).toBe(0);
    expect(r.stdout).not.toContain('s3cret');
    expect(r.stdout).toMatch(/bus:\n(?:.*\n)*? {2}user: nats\n {2}password: "\*\*\*"/);
    expect(r.stdout).toMatch(/api:\n(?:.*\n)*? {2}password: "\*\*\*"/);
    expect(r.stdout).toContain('actual_ttl: 3hb'); // preset values, as written
    expect(r.stdout).toContain('every: 2hb'); // a plugin default
    expect(r.stdout).toMatch(/log:\n(?:.*\n)*? {2}format: auto\n/); // the log format's default
    expect(r.stdout).not.toContain('extends');
  });
});

describe('hmgate test / simulate', () => {
  it('runs the shipped scenarios, and fails a broken one with the timeline that differed', async () => {
    const ok = await runCli(['test', join(root, 'test/scenarios')]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^13 passed, 0 failed$/m);
    const f = await writeConfig(
      [
        'name: wrong',
        'config: hm9000',
        'desired: [{ app: a, instances: 2 }]',
        'agents: { dea-1: [{ app: a, index: 0 }] }',
        'run_for: 80s',
        'expect:',
        '  - start: { app: a, index: 1, at: 60s }',
        '',
      ].join('\n'),
      'wrong.yaml',
    );
    const bad = await runCli(['test', f]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('FAIL');
    expect(bad.stdout).toContain('  - expected a start of a index 1 at 60s: none matched');
    expect(bad.stdout).toContain('       70.000s  start a/v1 index 1 (MISSING)');
    expect(bad.stdout).toMatch(/^0 passed, 1 failed$/m);
  });

  it('simulates a foundation and prints a summary', async () => {
    const r = await runCli([
      'simulate',
      '-c',
      join(root, 'config.example.yaml'),
      '--agents',
      '4',
      '--instances',
      '5',
      '--agent-dies-at',
      '2m',
      '--duration',
      '5m',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^simulated 4 agents × 5 instances for 300s of virtual time/m);
    expect(r.stdout).toMatch(/^starts: .*MISSING 5/m);
    const usage = await runCli(['simulate', '-c', join(root, 'config.example.yaml'), '--crash-rate', '2']);
    expect(usage.code).toBe(2); // a usage error (README: usage errors exit 2)
    expect(usage.stderr.trim()).toBe('hmgate: --crash-rate must be between 0 and 1, not "2"');
  });
});

describe('hmgate --version and usage errors', () => {
  it('--version and -V print the version of package.json and exit 0', async () => {
    const { version } = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await runCli([flag]);
      expect(r.code, flag).toBe(0);
      expect(r.stdout, flag).toBe(`${version}\n`);
      expect(r.stderr, flag).toBe('');
    }
  });

  it('every usage error of every sub-command exits 2 with one clear line on stderr, before doing anything', async () => {
    const cfg = join(root, 'config.example.yaml');
    const cases: [string[], string][] = [
      [['simulate', '-c', cfg, '--agents', 'many'], 'hmgate: --agents must be a whole number > 0, not "many"'],
      [['simulate', '-c', cfg, '--instances', '2.5'], 'hmgate: --instances must be a whole number > 0, not "2.5"'],
      [['simulate', '-c', cfg, '--crash-rate', 'often'], 'hmgate: --crash-rate must be between 0 and 1, not "often"'],
      [
        ['simulate', '-c', cfg, '--duration', 'soon'],
        'hmgate: --duration: bad duration "soon": use a number with ms, s, m, h or hb (heartbeats), e.g. "250ms", "10s", "3hb"',
      ],
      [['simulate', '-c', cfg, '--seed', 'abc'], 'hmgate: --seed must be a whole number, not "abc"'],
      [['simulate', '-c', cfg, '--cc-outage', '5m'], 'hmgate: --cc-outage must be FROM-TO, e.g. 5m-8m, not "5m"'],
      [['simulate', '-c', cfg, '--cc-outage', '8m-5m'], 'hmgate: --cc-outage must end after it begins, not "8m-5m"'],
      [['simulate', '-c', cfg, '--live', '--churn', '2'], 'hmgate: --churn must be between 0 and 1, not "2"'],
      [['simulate', '-c', cfg, '--live', '--cc-port', 'http'], 'hmgate: --cc-port must be a port number (0: any free one), not "http"'],
      [['simulate', '-c', cfg, '--bogus'], "hmgate: unknown option '--bogus' (see hmgate simulate --help)"],
      [['simulate', '-c', cfg, '--agents'], "hmgate: option '--agents <n>' argument missing (see hmgate simulate --help)"],
      [['validate', '--confg', cfg], "hmgate: unknown option '--confg' (Did you mean --config?) (see hmgate validate --help)"],
      [['validate', 'extra'], "hmgate: too many arguments for 'validate'. Expected 0 arguments but got 1. (see hmgate validate --help)"],
      [['dump', '-c', cfg, '--raw', '--json'], "hmgate: option '--raw' cannot be used with option '--json' (see hmgate dump --help)"],
      [['frobnicate'], "hmgate: unknown command 'frobnicate' (see hmgate --help)"],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, { timeoutMs: 50_000 })));
    cases.forEach(([args, message], i) => {
      const r = results[i]!;
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toBe(`${message}\n`);
      expect(r.stdout, args.join(' ')).toBe('');
    });
  }, 60_000);
});

describe('hmgate run', () => {
  it('runs against a real nats-server, serves /healthz and /v1/status, exits 0 on SIGTERM within 2 s', async () => {
    const n = await nats();
    const port = await freePort();
    const f = await writeConfig(
      ['extends: hm9000', 'foundation: it-1', `bus: { servers: ["${n.url}"] }`, 'api:', `  listen: 127.0.0.1:${port}`, '  password: ${API_PW}', ''].join('\n'),
    );
    const d = daemon(f, { API_PW: 'pw-for-api' });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/healthz`)).ok, { what: 'hmgate /healthz', timeoutMs: 15_000 });
    expect(await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()).toEqual({ status: 'ok' });
    const unauth = await fetch(`http://127.0.0.1:${port}/v1/status`);
    expect(unauth.status).toBe(401);
    const s = await status(port, 'pw-for-api');
    expect(s).toMatchObject({
      foundation: 'it-1',
      leader: true,
      actual: { fresh: false },
      desired: { fresh: false },
      stages: { store: { healthy: true, plugin: 'memory' }, bus: { healthy: true }, api: { healthy: true } },
    });
    expect(typeof s.actual.reason).toBe('string');
    expect(s.counters.cycles).toBeGreaterThanOrEqual(1);
    const r = await d.stop('SIGTERM', 2_000);
    expect(r.signal).toBeNull();
    expect(r.code).toBe(0);
    for (const line of d.logs()) {
      expect(line.foundation).toBe('it-1');
      expect(typeof line.component).toBe('string');
    }
    expect(d.logs().some((l) => l.msg === 'SIGTERM received: stopping')).toBe(true);
  });

  it('never logs secrets, even when NATS refuses them', async () => {
    const n = await nats({ user: 'hm', password: 'right-pass' });
    const port = await freePort();
    const f = await writeConfig(
      [
        'bus:',
        `  servers: ["nats://hm:\${NATS_PW}@127.0.0.1:${n.port}"]`,
        '  connect_timeout: 500ms',
        'api:',
        `  listen: 127.0.0.1:${port}`,
        '  password: ${API_PW}',
        '',
      ].join('\n'),
    );
    const d = daemon(f, { NATS_PW: 'wrong-s3cret', API_PW: 'api-s3cret' });
    await waitFor(() => d.logs().some((l) => /cannot connect to NATS/.test(String(l.msg))), { what: 'the NATS refusal in the log', timeoutMs: 15_000 });
    const s = await waitFor(async () => status(port, 'api-s3cret'), { what: 'status' });
    expect(s.stages.bus.healthy).toBe(false);
    expect(s.stages.bus.last_error).toMatch(/authorization refused/);
    await d.stop();
    const all = d.stdout + d.stderr + JSON.stringify(s);
    expect(all).toContain('nats://hm:***@127.0.0.1');
    for (const secret of ['wrong-s3cret', 'api-s3cret']) expect(all).not.toContain(secret);
  });

  it('starts while NATS is down, says so, and connects when it comes up', async () => {
    const natsPort = await freePort();
    const port = await freePort();
    const f = await writeConfig(
      ['bus:', `  servers: ["nats://127.0.0.1:${natsPort}"]`, '  connect_timeout: 300ms', 'api:', `  listen: 127.0.0.1:${port}`, '  password: pw', ''].join(
        '\n',
      ),
    );
    const d = daemon(f);
    const down = await waitFor(async () => status(port, 'pw'), { what: 'status', timeoutMs: 15_000 });
    expect(down.stages.bus).toMatchObject({ healthy: false, last_error: 'connection refused' });
    expect(
      d
        .logs()
        .some(
          (l) => l.level === 'warn' && /NATS not reachable at nats:\/\/127\.0\.0\.1:\d+ \(connection refused\); retrying in the background/.test(String(l.msg)),
        ),
    ).toBe(true);
    await nats({ port: natsPort });
    await waitFor(async () => (await status(port, 'pw')).stages.bus.healthy === true, { what: 'bus healthy', timeoutMs: 20_000 });
    expect((await d.stop()).code).toBe(0);
  });

  it('loads custom stage plugins by relative path and by package name, and stops them in reverse', async () => {
    const n = await nats();
    const port = await freePort();
    const marker = join(dir, 'marker.jsonl');
    await writeFile(join(dir, 'recorder-sink.js'), await readFile(join(root, 'test/fixtures/plugins/recorder-sink.js')));
    const f = await writeConfig(
      [
        'heartbeat_interval: 500ms',
        `bus: { servers: ["${n.url}"] }`,
        'sources:',
        '  extra:',
        '    plugin: hmgate-plugin-fixture',
        `    marker_file: ${marker}`,
        'sinks:',
        '  rec:',
        '    plugin: ./recorder-sink.js',
        `    marker_file: ${marker}`,
        '    label: mine',
        'api:',
        `  listen: 127.0.0.1:${port}`,
        '  password: pw',
        '',
      ].join('\n'),
    );
    const d = daemon(f);
    await waitFor(() => existsSync(marker) && d.logs().some((l) => /hmgate running/.test(String(l.msg))), { what: 'plugins started', timeoutMs: 15_000 });
    const s = await status(port, 'pw');
    expect(Object.keys(s.stages)).toEqual(['store', 'bus', 'extra', 'rec', 'api']);
    expect(s.stages.rec).toMatchObject({ kind: 'sink', plugin: './recorder-sink.js', healthy: true });
    expect(d.logs().some((l) => l.component === 'rec' && l.msg === 'recorder sink started')).toBe(true);
    expect((await d.stop()).code).toBe(0);
    const events = (await readFile(marker, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    // Sinks start before sources (whatever a source raises finds its consumers ready); stops reverse.
    expect(events).toEqual([
      { event: 'start', id: 'rec', label: 'mine', foundation: 'default' },
      { event: 'start', id: 'extra', every_ms: 1000, heartbeat_ms: 500 },
      { event: 'stop', id: 'extra' },
      { event: 'stop', id: 'rec', label: 'mine', foundation: 'default' },
    ]);
  });

  it('a stage that fails to start stops those already started and exits 1 with one line', async () => {
    const n = await nats();
    const marker = join(dir, 'marker.jsonl');
    const recorder = join(root, 'test/fixtures/plugins/recorder-sink.js');
    const f = await writeConfig(
      [
        `bus: { servers: ["${n.url}"] }`,
        'sources:',
        '  extra:',
        '    plugin: hmgate-plugin-fixture',
        `    marker_file: ${marker}`,
        'sinks:',
        '  first:',
        `    plugin: ${recorder}`,
        `    marker_file: ${marker}`,
        '  rec:',
        `    plugin: ${recorder}`,
        `    marker_file: ${marker}`,
        '    fail_start: true',
        'api:',
        `  listen: 127.0.0.1:${await freePort()}`,
        '  password: pw',
        '',
      ].join('\n'),
    );
    const r = await daemon(f).wait();
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`hmgate: stage "rec" (${recorder}) failed to start: refusing to start as configured (fail_start: true)`);
    // The sink started before it is stopped; the source, which would start after, never starts.
    const events = (await readFile(marker, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events.map((e: { event: string; id: string }) => `${e.event}:${e.id}`)).toEqual(['start:first', 'stop:first']);
  });

  it('exits 1 with one line when the API port is taken', async () => {
    const n = await nats();
    const port = await freePort();
    const blocker = (await import('node:net')).createServer().listen(port, '127.0.0.1');
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    await new Promise((r) => blocker.once('listening', r));
    const f = await writeConfig([`bus: { servers: ["${n.url}"] }`, 'api:', `  listen: 127.0.0.1:${port}`, '  password: pw', ''].join('\n'));
    const r = await daemon(f).wait();
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`hmgate: stage "api" (hono) failed to start: cannot listen on 127.0.0.1:${port}: address already in use`);
  });
});
