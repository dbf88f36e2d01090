/**
 * Each doctor check against the real failure it names — a wrong NATS port, refused credentials, a
 * CC with a self-signed certificate, a CC on a wrong port, a CC answering 401, a CC that hangs,
 * agents of another cc_partition, nobody subscribed to start/stop, etcd stopped, no agents at all,
 * desired apps none of which heartbeat — seen three ways: `hmgate doctor` (the built CLI), the
 * live `problems` of /v1/status, and the daemon's log (each problem logged once).
 *
 * Heartbeats every 200 ms keep it quick. Every server started here is stopped by the test.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SimAgents, SubjectRecorder } from '../helpers/agents.js';
import { HmgateDaemon, runCli, type CliResult } from '../helpers/hmgate-process.js';
import {
  freePort,
  makeSelfSignedCert,
  startEtcd,
  startFakeCC,
  startNatsServer,
  waitFor,
  type FakeCCHandle,
  type FakeCCOptions,
  type NatsServerHandle,
} from '../helpers/index.js';

const HB = 200;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-doctor-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

function later<T extends { stop(): Promise<unknown> }>(h: T): T {
  cleanups.push(() => h.stop());
  return h;
}

const nats = async (o?: Parameters<typeof startNatsServer>[0]): Promise<NatsServerHandle> => later(await startNatsServer(o));
const fakeCC = async (o?: FakeCCOptions): Promise<FakeCCHandle> => later(await startFakeCC(o));
const agentsOn = async (n: NatsServerHandle): Promise<SimAgents> => later(await SimAgents.start(n.url, HB));

interface Setup {
  natsUrl: string;
  ccUrl: string;
  ccPassword?: string;
  apiPort: number;
  /** More YAML lines (top-level keys; sources/sinks entries go through `sources` / `sinks`). */
  extra?: string[];
  sources?: string[];
  sinks?: string[];
  bus?: string[];
  /** More options of sources.heartbeats, e.g. "cc_partition: default". */
  heartbeats?: string;
}

/** The hm9000 preset at 200 ms heartbeats, against the given NATS and CC. */
async function writeConfig(s: Setup): Promise<string> {
  const file = join(dir, `hmgate-${Math.random().toString(36).slice(2, 8)}.yaml`);
  await writeFile(
    file,
    [
      'extends: hm9000',
      'foundation: doc-1',
      `heartbeat_interval: ${HB}ms`,
      'bus:',
      `  servers: ["${s.natsUrl}"]`,
      '  connect_timeout: 300ms',
      ...(s.bus ?? []),
      'sources:',
      `  heartbeats: { sync_interval: 50ms${s.heartbeats ? `, ${s.heartbeats}` : ''} }`,
      '  desired:',
      `    url: "${s.ccUrl}"`,
      '    user: bulk_api',
      `    password: ${s.ccPassword ?? 'bulk-password'}`,
      '    network_timeout: 500ms',
      ...(s.sources ?? []),
      ...(s.sinks ? ['sinks:', ...s.sinks] : []),
      `api: { listen: "127.0.0.1:${s.apiPort}", password: pw }`,
      ...(s.extra ?? []),
      '',
    ].join('\n'),
  );
  return file;
}

async function doctor(file: string): Promise<CliResult & { lines: string[] }> {
  const r = await runCli(['doctor', '-c', file], { timeoutMs: 30_000 });
  return { ...r, lines: r.stdout.trim().split('\n') };
}

const auth = { Authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` };

async function status(port: number): Promise<Record<string, any>> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/status`, { headers: auth });
  if (res.status !== 200) throw new Error(`status ${res.status}`);
  return (await res.json()) as Record<string, any>;
}

function daemon(file: string): HmgateDaemon {
  const d = HmgateDaemon.start(file);
  cleanups.push(() => d.stop('SIGKILL'));
  return d;
}

interface ProblemEntry {
  code: string;
  message: string;
  fix: string;
  since: string;
}

/**
 * Waits until /v1/status lists `code`, then lets several more cycles run: the problem must still
 * be listed with the same `since`, and the log must hold exactly one warn line for it.
 */
async function expectProblem(d: HmgateDaemon, port: number, code: string): Promise<ProblemEntry> {
  const found = await waitFor(async () => ((await status(port)).problems as ProblemEntry[]).find((p) => p.code === code), {
    what: `${code} in /v1/status (log: ${d.stdout.slice(-2000)})`,
    timeoutMs: 15_000,
    intervalMs: 100,
  });
  expect(found.since).toMatch(/^\d{4}-\d\d-\d\dT/);
  await sleep(6 * HB);
  const again = ((await status(port)).problems as ProblemEntry[]).find((p) => p.code === code);
  expect(again?.since).toBe(found.since);
  const warned = d.logs().filter((l) => l.problem === code && l.level === 'warn');
  expect(warned).toHaveLength(1);
  // The words may have changed since it appeared (an error text); the code and the fix are the same.
  expect(String(warned[0]!.msg).endsWith(`; fix: ${found.fix}`)).toBe(true);
  expect(warned[0]!.fix).toBe(found.fix);
  return found;
}

/** Once `code` is gone from /v1/status, the log says so exactly once (info). */
async function expectCleared(d: HmgateDaemon, port: number, code: string): Promise<void> {
  await waitFor(async () => !((await status(port)).problems as ProblemEntry[]).some((p) => p.code === code), {
    what: `${code} to clear`,
    timeoutMs: 15_000,
    intervalMs: 100,
  });
  await sleep(4 * HB);
  const cleared = d.logs().filter((l) => l.problem === code && l.level === 'info');
  expect(cleared).toHaveLength(1);
  expect(String(cleared[0]!.msg)).toMatch(/^cleared: /);
}

const line = (lines: string[], prefix: string) => lines.find((l) => l.startsWith(prefix));

describe('hmgate doctor, /v1/status problems and the log', () => {
  it('a healthy foundation: every check ok, exit 0, and no problem once fresh', async () => {
    const n = await nats({ monitor: true });
    const cc = await fakeCC({ apps: [{ guid: 'app-a', instances: 1, version: 'v1' }] });
    const agents = await agentsOn(n);
    agents.agent('dea-1').run('app-a', 0);
    const listener = later(await SubjectRecorder.start(n.url, ['hm9000.start', 'hm9000.stop']));
    const port = await freePort();
    const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port, bus: [`  monitor_url: ${n.monitorUrl}`] });
    const r = await doctor(f);
    expect(r.stderr).toBe('');
    expect(r.lines).toEqual([
      `ok: config ${f}: valid (10 stages)`,
      `ok: NATS at ${n.url}: connected to 127.0.0.1:${n.port}`,
      `ok: CC bulk API at ${cc.url}: answered the first page of /bulk/apps`,
      'ok: heartbeats on dea.heartbeat: 1 agent heartbeating 1 instance of 1 app',
      'ok: start/stop orders on hm9000.start, hm9000.stop: hm9000.start: 1 subscriber, hm9000.stop: 1 subscriber',
      'ok: desired and actual state: 1 of the 1 desired app heartbeating',
    ]);
    expect(r.code).toBe(0);
    expect(cc.requestsTo('/bulk/apps')[0]!.url).toBe('/bulk/apps?batch_size=1&bulk_token={}');
    expect(listener.messages).toEqual([]); // the doctor never publishes on start/stop

    const d = daemon(f);
    await waitFor(
      async () => {
        const s = await status(port);
        return s.actual.fresh && s.desired.fresh && s.problems.length === 0;
      },
      { what: 'fresh with no problems', timeoutMs: 15_000, intervalMs: 100 },
    );
    // progress: one readable start-up line per stage
    const summaries = d
      .logs()
      .filter((l) => l.component === 'engine' && typeof l.stage === 'string')
      .map((l) => l.msg);
    expect(summaries).toContain('heartbeats: heartbeat on dea.heartbeat (and dea.advertise), sync 50ms, presence TTL 600ms');
    expect(summaries).toContain(`desired: bulk-api from ${cc.url}/bulk/apps, 500 apps a page, every 1.2s, timeout 12s`);
    expect(summaries).toContain('cloud_controller: notifier publishes starts on hm9000.start and stops on hm9000.stop (NATS)');
    expect(d.logs().filter((l) => l.level === 'warn' && l.problem !== undefined)).toEqual([]);
  });

  it('NATS unreachable: a wrong port', async () => {
    const cc = await fakeCC();
    const natsPort = await freePort();
    const port = await freePort();
    const f = await writeConfig({ natsUrl: `nats://127.0.0.1:${natsPort}`, ccUrl: cc.url, apiPort: port });
    const r = await doctor(f);
    expect(r.code).toBe(1);
    expect(r.lines[1]).toBe(
      `FAIL: NATS at nats://127.0.0.1:${natsPort}: not reachable (connection refused); fix: check \`bus.servers\`: a nats-server must listen there, reachable from this host [NATS_UNREACHABLE]`,
    );
    expect(line(r.lines, 'skip: heartbeats on dea.heartbeat')).toBe('skip: heartbeats on dea.heartbeat: NATS is not reachable');
    expect(r.lines.at(-1)).toMatch(/^\d+ of \d+ checks failed$/);

    const d = daemon(f);
    const p = await expectProblem(d, port, 'NATS_UNREACHABLE');
    expect(p.message).toBe(`NATS at nats://127.0.0.1:${natsPort}: not reachable (connection refused)`);
  });

  it('NATS refusing the credentials, with the password masked', async () => {
    const n = await nats({ user: 'hm', password: 'right-pass' });
    const cc = await fakeCC();
    const port = await freePort();
    const f = await writeConfig({ natsUrl: `nats://hm:wrong-s3cret@127.0.0.1:${n.port}`, ccUrl: cc.url, apiPort: port });
    const r = await doctor(f);
    expect(r.code).toBe(1);
    expect(r.lines[1]).toBe(
      `FAIL: NATS at nats://hm:***@127.0.0.1:${n.port}: the server refused the credentials (authorization violation); fix: check \`bus.user\` / \`bus.password\` (or \`bus.token\`, or user:password in the URL) [NATS_AUTH_REFUSED]`,
    );
    const d = daemon(f);
    const p = await expectProblem(d, port, 'NATS_AUTH_REFUSED');
    expect(p.message).toContain('nats://hm:***@127.0.0.1');
    expect(d.stdout + r.stdout + JSON.stringify(await status(port))).not.toContain('wrong-s3cret');
  });

  describe('the CC bulk API', () => {
    let n: NatsServerHandle;
    beforeEach(async () => {
      n = await nats();
      (await agentsOn(n)).agent('dea-1').run('app-a', 0);
    });

    it('a self-signed certificate: not trusted', async () => {
      const cert = await makeSelfSignedCert('127.0.0.1');
      const cc = await fakeCC({ tls: cert });
      const port = await freePort();
      const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port });
      const r = await doctor(f);
      expect(r.code).toBe(1);
      expect(line(r.lines, 'FAIL: CC bulk API')).toBe(
        `FAIL: CC bulk API at ${cc.url}: the CC certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT); fix: set \`sources.desired.ca_file\`, or \`sources.desired.skip_cert_verify: true\` to skip [CC_TLS_UNTRUSTED]`,
      );
      const d = daemon(f);
      const p = await expectProblem(d, port, 'CC_TLS_UNTRUSTED');
      expect(p.fix).toBe('set `sources.desired.ca_file`, or `sources.desired.skip_cert_verify: true` to skip');
      expect(p.message).toBe(`CC bulk API at ${cc.url}: the CC certificate is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT)`);

      // the fix works: the same CC with its certificate trusted
      await writeFile(join(dir, 'cc-ca.pem'), cert.cert);
      const trusted = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: await freePort(), sources: ['    ca_file: cc-ca.pem'] });
      expect(line((await doctor(trusted)).lines, 'ok: CC bulk API')).toBeDefined();
    });

    it('a wrong port: check sources.desired.url', async () => {
      const ccPort = await freePort();
      const port = await freePort();
      const f = await writeConfig({ natsUrl: n.url, ccUrl: `http://127.0.0.1:${ccPort}`, apiPort: port });
      const r = await doctor(f);
      expect(r.code).toBe(1);
      expect(line(r.lines, 'FAIL: CC bulk API')).toBe(
        `FAIL: CC bulk API at http://127.0.0.1:${ccPort}: connection refused by 127.0.0.1:${ccPort} (ECONNREFUSED); fix: check \`sources.desired.url\` — it must be the Cloud Controller's domain or IP [CC_UNREACHABLE]`,
      );
      expect(line(r.lines, 'skip: desired and actual state')).toBe('skip: desired and actual state: the desired state could not be read in full');
      const d = daemon(f);
      const p = await expectProblem(d, port, 'CC_UNREACHABLE');
      expect(p.fix).toBe("check `sources.desired.url` — it must be the Cloud Controller's domain or IP");
      expect(p.message).toMatch(new RegExp(`^CC bulk API at http://127\\.0\\.0\\.1:${ccPort}: connection refused`));
    });

    it('401: check the credentials', async () => {
      const cc = await fakeCC();
      const port = await freePort();
      const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, ccPassword: 'not-the-password', apiPort: port });
      const r = await doctor(f);
      expect(r.code).toBe(1);
      expect(line(r.lines, 'FAIL: CC bulk API')).toBe(
        `FAIL: CC bulk API at ${cc.url}: answered 401: the credentials were refused; fix: check \`sources.desired.user\` / \`sources.desired.password\` [CC_UNAUTHORIZED]`,
      );
      const d = daemon(f);
      await expectProblem(d, port, 'CC_UNAUTHORIZED');
    });

    it('a CC that hangs: timed out, then cleared once it answers again', async () => {
      const cc = await fakeCC({ apps: [{ guid: 'app-a', version: 'v1' }] });
      cc.fail('hang');
      const port = await freePort();
      const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port });
      const r = await doctor(f);
      expect(r.code).toBe(1);
      expect(line(r.lines, 'FAIL: CC bulk API')).toBe(
        `FAIL: CC bulk API at ${cc.url}: no answer within 500ms; fix: check \`sources.desired.url\` — it must be the Cloud Controller's domain or IP; if the CC is only slow, raise \`sources.desired.network_timeout\` [CC_TIMEOUT]`,
      );
      const d = daemon(f);
      await expectProblem(d, port, 'CC_TIMEOUT');
      cc.fail(null);
      await expectCleared(d, port, 'CC_TIMEOUT');
    });
  });

  it('no agents at all: no heartbeats within 3 hb', async () => {
    const n = await nats();
    const cc = await fakeCC({ apps: [{ guid: 'app-a' }] });
    const port = await freePort();
    const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port });
    const r = await doctor(f);
    expect(r.code).toBe(1);
    expect(line(r.lines, 'FAIL: heartbeats')).toBe(
      'FAIL: heartbeats on dea.heartbeat: none within 3 heartbeat intervals (600ms); fix: no agents, wrong NATS or wrong subject: the agents (DEAs) must publish on `sources.heartbeats.subject` (dea.heartbeat) to the NATS in `bus.servers` [NO_HEARTBEATS]',
    );
    const d = daemon(f);
    const p = await expectProblem(d, port, 'NO_HEARTBEATS');
    expect(p.message).toBe('heartbeats on dea.heartbeat: none within 650ms');
    // an agent appears: the problem clears
    (await agentsOn(n)).agent('dea-1').run('app-a', 0);
    await expectCleared(d, port, 'NO_HEARTBEATS');
  });

  it('agents heartbeating cc_partition ng against cc_partition: default', async () => {
    const n = await nats();
    const cc = await fakeCC({ apps: [{ guid: 'app-a', version: 'v1' }] });
    const agents = await agentsOn(n);
    agents.agent('dea-1').run('app-a', 0, { ccPartition: 'ng' });
    agents.agent('dea-1').run('app-a', 1, { ccPartition: 'ng' });
    const port = await freePort();
    const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port, heartbeats: 'cc_partition: default, cc_partition_filter: true' });
    const r = await doctor(f);
    expect(r.code).toBe(1);
    expect(line(r.lines, 'ok: heartbeats'), r.stdout).toBeDefined();
    expect(line(r.lines, 'FAIL: heartbeats on dea.heartbeat: the agents')).toBe(
      'FAIL: heartbeats on dea.heartbeat: the agents heartbeat cc_partition "ng", and `sources.heartbeats.cc_partition` keeps only "default": no instance is kept; fix: set `sources.heartbeats.cc_partition: ng` [CC_PARTITION_MISMATCH]',
    );
    const d = daemon(f);
    const p = await expectProblem(d, port, 'CC_PARTITION_MISMATCH');
    expect(p.message).toContain('"ng"');
    expect(p.message).toContain('"default"');
    expect(p.fix).toBe('set `sources.heartbeats.cc_partition: ng`');
  });

  it('agents and CC on ng, the partitioned preset on default: doctor and /v1/status name one fix, and with exactly it the partition, credentials and start/stop checks pass', async () => {
    const n = await nats({ monitor: true });
    const cc = await fakeCC({ apps: [{ guid: 'app-a', version: 'v1', instances: 1, updated_at: '2013-07-31 22:00:00 +0000' }] });
    const agents = await agentsOn(n);
    agents.agent('dea-1').run('app-a', 0, { version: 'v1', ccPartition: 'ng' });
    // The Cloud Controller on ng: it answers credentials and takes requests on its own partition only.
    await agents.respond('cloudcontroller.bulk.credentials.ng', { user: cc.user, password: cc.password });
    const ccRequests = later(await SubjectRecorder.start(n.url, ['cloudcontrollers.hm.requests.ng']));
    const port = await freePort();
    const base = join(dir, 'partitioned.yaml');
    await writeFile(
      base,
      [
        'extends: ruby-hm-partitioned',
        `heartbeat_interval: ${HB}ms`,
        `bus: { servers: ["${n.url}"], connect_timeout: 300ms, monitor_url: "${n.monitorUrl}" }`,
        'sources:',
        '  heartbeats: { sync_interval: 50ms }',
        `  desired: { url: "${cc.url}", credentials_timeout: 1s }`,
        `api: { listen: "127.0.0.1:${port}", user: magnet, password: pw }`,
        '',
      ].join('\n'),
    );
    /** A config that extends `file` with `setting` ("a.b: v", as a fix names it) and nothing else. */
    const applying = async (file: string, setting: string): Promise<string> => {
      const [key, value] = setting.split(/:\s+/, 2) as [string, string];
      const parts = key.split('.');
      const fixed = join(dir, `fixed-${parts.join('-')}.yaml`);
      const lines = parts.map((p, i) => `${'  '.repeat(i)}${p}:${i === parts.length - 1 ? ` ${value}` : ''}`);
      await writeFile(fixed, [`extends: ./${file.split('/').pop()!}`, ...lines, `api: { listen: "127.0.0.1:${await freePort()}" }`, ''].join('\n'));
      return fixed;
    };

    const r = await doctor(base);
    expect(r.code).toBe(1);
    const partition = line(r.lines, 'FAIL: heartbeats on dea.heartbeat: the agents');
    expect(partition).toBe(
      'FAIL: heartbeats on dea.heartbeat: the agents heartbeat cc_partition "ng", and `cc_partition` keeps only "default": no instance is kept; fix: set `cc_partition: ng` [CC_PARTITION_MISMATCH]',
    );
    const fix = /; fix: set `([^`]+)` \[CC_PARTITION_MISMATCH\]$/.exec(partition!)![1]!;
    expect(line(r.lines, 'FAIL: CC bulk API credentials on cloudcontroller.bulk.credentials.default')).toContain(`set \`${fix}\``);
    const startStop = line(r.lines, 'FAIL: start/stop orders on cloudcontrollers.hm.requests.default');
    expect(startStop).toBe(
      `FAIL: start/stop orders on cloudcontrollers.hm.requests.default: nobody subscribes to cloudcontrollers.hm.requests.default on NATS (asked ${n.monitorUrl}); fix: is the Cloud Controller connected to this NATS, and on cc_partition "default"? A CC v2 listens on cloudcontrollers.hm.requests.ng: set \`${fix}\`. Check \`sinks.cloud_controller.start_subject\` / \`sinks.cloud_controller.stop_subject\` too [NO_START_STOP_LISTENER]`,
    );
    // Every failing line names the same one key.
    for (const l of r.lines.filter((x) => x.startsWith('FAIL:'))) expect(l.match(/set `[^`]*cc_partition[^`]*`/g)).toEqual([`set \`${fix}\``]);

    // The stage's own key (what the fix used to say) keeps the heartbeats, and nothing else.
    const halfway = await doctor(await applying(base, 'sources.heartbeats.cc_partition: ng'));
    expect(line(halfway.lines, 'ok: cc_partition of the heartbeats')).toBeDefined();
    expect(line(halfway.lines, 'FAIL: CC bulk API credentials on cloudcontroller.bulk.credentials.default')).toBeDefined();
    expect(line(halfway.lines, 'FAIL: start/stop orders on cloudcontrollers.hm.requests.default')).toBeDefined();

    // Exactly the fix doctor names: every check passes.
    const fixedFile = await applying(base, fix);
    const fixed = await doctor(fixedFile);
    expect(
      fixed.lines.filter((l) => !l.startsWith('ok: ')),
      fixed.stdout,
    ).toEqual([]);
    expect(fixed.code).toBe(0);
    expect(line(fixed.lines, 'ok: cc_partition of the heartbeats on dea.heartbeat')).toMatch(/: 1 instance(\(s\))? of cc_partition "ng"$/);
    expect(line(fixed.lines, 'ok: CC bulk API')).toBe(`ok: CC bulk API at ${cc.url}: answered the first page of /bulk/apps`);
    expect(line(fixed.lines, 'ok: start/stop')).toMatch(
      /^ok: start\/stop orders on cloudcontrollers\.hm\.requests\.ng: cloudcontrollers\.hm\.requests\.ng: 1 subscriber/,
    );

    // /v1/status and the log name the same fix.
    const d = daemon(base);
    expect((await expectProblem(d, port, 'CC_PARTITION_MISMATCH')).fix).toBe(`set \`${fix}\``);
    expect((await expectProblem(d, port, 'CC_CREDENTIALS_UNAVAILABLE')).fix).toContain(`set \`${fix}\``);
    const listener = await expectProblem(d, port, 'NO_START_STOP_LISTENER');
    expect(listener.fix).toContain(`set \`${fix}\``);
    expect(listener.fix).not.toContain('hm9000');
    // The preset has no freshness gate: stale state holds nothing back, and the problem says so.
    expect((await expectProblem(d, port, 'NOT_FRESH')).fix).toMatch(/^`freshness\.gate` is off, so starts and stops go on/);
    expect(d.logs().some((l) => l.component === 'heartbeats' && String(l.msg).endsWith(`: set ${fix}`))).toBe(true);
    await d.stop();

    const ok = daemon(fixedFile);
    const fixedPort = Number(/127\.0\.0\.1:(\d+)/.exec(readFileSync(fixedFile, 'utf8'))![1]);
    await waitFor(async () => ((await status(fixedPort)).problems as ProblemEntry[]).length === 0, {
      what: `no problem with the fix (log: ${ok.stdout.slice(-2000)})`,
      timeoutMs: 15_000,
      intervalMs: 100,
    });
    expect(ccRequests.messages).toEqual([]); // nothing to start or stop, and the doctor never publishes there
  });

  it('nobody subscribed to hm9000.start / hm9000.stop (asked of the NATS monitoring endpoint), then the CC subscribes', async () => {
    const n = await nats({ monitor: true });
    const cc = await fakeCC({ apps: [{ guid: 'app-a', version: 'v1' }] });
    (await agentsOn(n)).agent('dea-1').run('app-a', 0);
    const port = await freePort();
    const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port, bus: [`  monitor_url: ${n.monitorUrl}`] });
    const r = await doctor(f);
    expect(r.code).toBe(1);
    expect(line(r.lines, 'FAIL: start/stop')).toBe(
      `FAIL: start/stop orders on hm9000.start, hm9000.stop: nobody subscribes to hm9000.start or hm9000.stop on NATS (asked ${n.monitorUrl}); fix: is the Cloud Controller configured to use this health manager (e.g. \`hm9000_noop: false\`)? Is it connected to this NATS? Check \`sinks.cloud_controller.start_subject\` / \`sinks.cloud_controller.stop_subject\` too [NO_START_STOP_LISTENER]`,
    );
    const d = daemon(f);
    await expectProblem(d, port, 'NO_START_STOP_LISTENER');
    const cloudController = later(await SubjectRecorder.start(n.url, ['hm9000.start', 'hm9000.stop']));
    await expectCleared(d, port, 'NO_START_STOP_LISTENER');
    expect(line((await doctor(f)).lines, 'ok: start/stop')).toBeDefined();
    expect(cloudController.messages).toEqual([]);
  });

  it('without bus.monitor_url the start/stop check is skipped, never probed by publishing', async () => {
    const n = await nats();
    const cc = await fakeCC();
    const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: await freePort() });
    const rec = later(await SubjectRecorder.start(n.url, ['hm9000.start', 'hm9000.stop']));
    const r = await doctor(f);
    expect(line(r.lines, 'skip: start/stop')).toMatch(/set `bus\.monitor_url`/);
    expect(rec.messages).toEqual([]);
  });

  it('hm9000-http: the internal API path answers (and what a 404 would mean), refuses the credentials, or is not there', async () => {
    const n = await nats();
    const cc = await fakeCC();
    const sinks = (url: string, password = 'bulk-password') => [
      '  cloud_controller:',
      '    protocol: hm9000-http',
      `    cc_url: "${url}"`,
      '    user: bulk_api',
      `    password: ${password}`,
      '    timeout: 500ms',
    ];
    const ok = await doctor(await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: await freePort(), sinks: sinks(cc.url) }));
    expect(line(ok.lines, 'ok: CC internal API')).toBe(
      `ok: CC internal API at ${cc.url}: reachable (HTTP 404 to GET /internal/dea/hm9000/); a 404 to a real start or stop would mean the CC is not configured for this health manager: is the Cloud Controller configured to use this health manager (e.g. \`hm9000_noop: false\`)?`,
    );
    expect(cc.requestsTo('/internal/').map((r) => r.method)).toEqual(['GET']); // never a start or stop

    const refused = await doctor(await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: await freePort(), sinks: sinks(cc.url, 'wrong') }));
    expect(line(refused.lines, 'FAIL: CC internal API')).toBe(
      `FAIL: CC internal API at ${cc.url}: answered 401: the credentials were refused; fix: check \`sinks.cloud_controller.user\` / \`sinks.cloud_controller.password\` [CC_UNAUTHORIZED]`,
    );

    const wrong = await freePort();
    const bad = await doctor(await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: await freePort(), sinks: sinks(`http://127.0.0.1:${wrong}`) }));
    expect(bad.code).toBe(1);
    expect(line(bad.lines, 'FAIL: CC internal API')).toBe(
      `FAIL: CC internal API at http://127.0.0.1:${wrong}: connection refused by 127.0.0.1:${wrong} (ECONNREFUSED); fix: check \`sinks.cloud_controller.cc_url\` — it must be the Cloud Controller's internal URL [CC_UNREACHABLE]`,
    );
  });

  it('desired apps none of which heartbeat: the wrong foundation', async () => {
    const n = await nats();
    const cc = await fakeCC({
      apps: [
        { guid: 'app-a', version: 'v1' },
        { guid: 'app-b', version: 'v1' },
      ],
    });
    const agents = await agentsOn(n);
    agents.agent('dea-1').run('other-x', 0);
    agents.agent('dea-2').run('other-y', 0);
    const port = await freePort();
    const f = await writeConfig({ natsUrl: n.url, ccUrl: cc.url, apiPort: port, extra: ['dispatch: { mode: shadow }'] });
    const r = await doctor(f);
    expect(r.code).toBe(1);
    expect(line(r.lines, 'FAIL: desired and actual state')).toBe(
      'FAIL: desired and actual state: the CC desires 2 apps and the agents heartbeat 2 apps, but none of the desired apps is heartbeating; fix: hmgate is looking at two different foundations: `sources.desired.url` and `bus.servers` must belong to the same one [WRONG_FOUNDATION]',
    );
    const d = daemon(f);
    await expectProblem(d, port, 'WRONG_FOUNDATION');
  });

  it('usage errors exit 2, a bad config exits 1 with FILE:LINE:COL', async () => {
    expect((await runCli(['doctor', '--no-such-flag'])).code).toBe(2);
    const f = join(dir, 'bad.yaml');
    await writeFile(f, 'api:\n  password: pw\ncolour: blue\n');
    const r = await runCli(['doctor', '-c', f]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:3:1: unknown key "colour"`));
  });

  describe('etcd (store.plugin: etcd)', () => {
    it('healthy and writable, then stopped: unreachable', async () => {
      const etcd = later(await startEtcd());
      const n = await nats();
      const cc = await fakeCC();
      (await agentsOn(n)).agent('dea-1').run('app-a', 0);
      const port = await freePort();
      const f = await writeConfig({
        natsUrl: n.url,
        ccUrl: cc.url,
        apiPort: port,
        extra: ['store:', '  plugin: etcd', `  endpoints: ["${etcd.endpoint}"]`, '  prefix: /doctor-test', '  dial_timeout: 1s'],
      });
      const ok = await doctor(f);
      expect(line(ok.lines, 'ok: etcd')).toBe(`ok: etcd at ${etcd.endpoint}: healthy; a test key was written and deleted under /doctor-test`);
      expect(ok.lines.indexOf(line(ok.lines, 'ok: etcd')!)).toBe(2); // right after NATS

      const d = daemon(f);
      await waitFor(async () => (await status(port)).stages.store.healthy, { what: 'the etcd store up', timeoutMs: 15_000 });
      await etcd.stop();
      const bad = await doctor(f);
      expect(bad.code).toBe(1);
      expect(line(bad.lines, 'FAIL: etcd')).toBe(
        `FAIL: etcd at ${etcd.endpoint}: not reachable (${etcd.endpoint}: connection refused); fix: check \`store.endpoints\`: etcd must run there, reachable from this host [ETCD_UNREACHABLE]`,
      );
      await expectProblem(d, port, 'ETCD_UNREACHABLE');
    });
  });
});
