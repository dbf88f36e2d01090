/**
 * The problems of /v1/status as the core derives them with the built-in plugins' `problems` (and
 * the etcd store's `storeProblem`): each stage is given its plugin's definition, as the engine does.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import bulkApiPlugin from '../../plugins/bulk-api/index.js';
import etcdPlugin from '../../plugins/etcd-store/index.js';
import heartbeatPlugin from '../../plugins/heartbeat/index.js';
import memoryPlugin from '../../plugins/memory-store/index.js';
import notifierPlugin from '../../plugins/notifier/index.js';
import { deriveProblems, ProblemTracker, type ProblemFacts, type StageFacts } from '../../src/operator/problems.js';
import { loadConfig } from '../../src/config/load.js';
import type { PluginDefinition } from '../../src/sdk/index.js';

const HB = 1000;

const BUILTIN: Record<string, PluginDefinition> = {
  'bulk-api': bulkApiPlugin,
  etcd: etcdPlugin,
  heartbeat: heartbeatPlugin,
  memory: memoryPlugin,
  notifier: notifierPlugin,
};

function stage(id: string, section: string, plugin: string, options: Record<string, unknown> = {}, health: Partial<StageFacts> = {}): StageFacts {
  const definition = BUILTIN[plugin];
  return { id, section, plugin, ...(definition ? { definition } : {}), options, healthy: true, last_error: null, ...health };
}

function facts(over: Partial<ProblemFacts> = {}): ProblemFacts {
  return {
    uptimeMs: 60_000,
    heartbeatMs: HB,
    actualTtlMs: 3 * HB,
    servers: ['nats://hm:s3cret@127.0.0.1:4222'],
    stages: [
      stage('store', 'store', 'memory'),
      stage('bus', 'bus', 'nats'),
      stage('heartbeats', 'sources', 'heartbeat', { subject: 'dea.heartbeat', sync_interval: 100 }),
      stage('desired', 'sources', 'bulk-api', { url: 'https://bulk:pw@cc.example.com' }),
      stage('cloud_controller', 'sinks', 'notifier', { protocol: 'hm9000', start_subject: 'hm9000.start', stop_subject: 'hm9000.stop' }),
    ],
    actual: { fresh: true, reason: null },
    desired: { fresh: true, reason: null },
    state: { desiredApps: 2, liveInstances: 3, heartbeatingApps: 2, desiredHeartbeating: true },
    listeners: [],
    ...over,
  };
}

function withStage(f: ProblemFacts, id: string, change: Partial<StageFacts>): ProblemFacts {
  return { ...f, stages: f.stages.map((s) => (s.id === id ? { ...s, ...change } : s)) };
}

const codes = (f: ProblemFacts) => deriveProblems(f).map((p) => p.code);

describe('deriveProblems', () => {
  it('finds nothing wrong on a healthy foundation', () => {
    expect(deriveProblems(facts())).toEqual([]);
  });

  it('names NATS down or refusing the credentials, with the password masked', () => {
    const down = deriveProblems(withStage(facts(), 'bus', { healthy: false, last_error: 'connection refused' }));
    expect(down.map((p) => p.code)).toEqual(['NATS_UNREACHABLE']);
    expect(down[0]!.message).toBe('NATS at nats://hm:***@127.0.0.1:4222: not reachable (connection refused)');
    expect(down[0]!.fix).toContain('`bus.servers`');
    const auth = deriveProblems(withStage(facts(), 'bus', { healthy: false, last_error: 'authorization refused (check bus.user / bus.password / bus.token)' }));
    expect(auth.map((p) => p.code)).toEqual(['NATS_AUTH_REFUSED']);
    expect(auth[0]!.fix).toContain('`bus.password`');
  });

  it.each([
    [
      "connection refused by https://cc.example.com (ECONNREFUSED): check sources.desired.url — it must be the Cloud Controller's domain or IP",
      'CC_UNREACHABLE',
    ],
    [
      "cannot resolve the host of https://cc.example.com (DNS ENOTFOUND): check sources.desired.url — it must be the Cloud Controller's domain or IP",
      'CC_UNREACHABLE',
    ],
    ['CC bulk API at https://cc.example.com answered 401: check sources.desired.user / password', 'CC_UNAUTHORIZED'],
    [
      'the CC certificate for cc.example.com is not trusted (DEPTH_ZERO_SELF_SIGNED_CERT): set sources.desired.ca_file, or sources.desired.skip_cert_verify: true',
      'CC_TLS_UNTRUSTED',
    ],
    ['timed out: the CC bulk API at https://cc.example.com did not answer within 500ms (sources.desired.network_timeout)', 'CC_TIMEOUT'],
    ['CC bulk API at https://cc.example.com answered 500 on page 1 (CF-ServerError: An unknown error occurred.)', 'CC_BAD_ANSWER'],
  ])('names the bulk API failure %s', (reason, code) => {
    const ps = deriveProblems(withStage(facts(), 'desired', { healthy: false, last_error: reason }));
    expect(ps.map((p) => p.code)).toEqual([code]);
    expect(ps[0]!.message).toMatch(/^CC bulk API at https:\/\/bulk:\*\*\*@cc\.example\.com: /);
    // Said once: the reason's own "CC bulk API at …" is not repeated after the problem's.
    expect(ps[0]!.message.match(/CC bulk API at/g)).toHaveLength(1);
  });

  it('names a CC that answers 404 to real starts and stops as not configured for this health manager', () => {
    const f = facts({
      stages: [
        stage('bus', 'bus', 'nats'),
        stage(
          'cc',
          'sinks',
          'notifier',
          { protocol: 'hm9000-http', cc_url: 'https://cc.internal:9023' },
          {
            healthy: false,
            last_error:
              'start MISSING for app/0 not sent: CC answered 404 for POST https://cc.internal:9023/internal/dea/hm9000/start/app: is the Cloud Controller configured to use this health manager? (it also answers 404 for an app it does not know)',
          },
        ),
      ],
    });
    const [p] = deriveProblems(f);
    expect(p!.code).toBe('CC_NOT_CONFIGURED_FOR_HM');
    expect(p!.fix).toBe('is the Cloud Controller configured to use this health manager (e.g. `hm9000_noop: false`)?');
  });

  it('names no heartbeats once 3 hb have passed with no agent, but not right after start or while NATS is down', () => {
    const none = { desiredApps: 1, liveInstances: 0, heartbeatingApps: 0, desiredHeartbeating: false, agents: 0 };
    expect(codes(facts({ state: none }))).toEqual(['NO_HEARTBEATS']);
    expect(deriveProblems(facts({ state: none }))[0]!.message).toBe('heartbeats on dea.heartbeat: none within 3.1s');
    expect(codes(facts({ state: none, uptimeMs: 2_000 }))).toEqual([]);
    expect(codes(withStage(facts({ state: none }), 'bus', { healthy: false, last_error: 'connection refused' }))).toEqual(['NATS_UNREACHABLE']);
    expect(codes(facts({ state: { ...none, agents: 2 } }))).toEqual([]);
  });

  it('names a cc_partition mismatch with both values and the key to set, only while no instance is kept', () => {
    const notice = 'agent dea-1 heartbeats instances of cc_partition "ng", this stage keeps only "default": set sources.heartbeats.cc_partition: ng';
    let f = withStage(facts({ state: { desiredApps: 1, liveInstances: 0, heartbeatingApps: 0, desiredHeartbeating: false, agents: 1 } }), 'heartbeats', {
      last_error: notice,
    });
    f = { ...f, stages: f.stages.map((s) => (s.id === 'heartbeats' ? { ...s, options: { ...s.options, cc_partition: 'default' } } : s)) };
    const [p] = deriveProblems(f);
    expect(p!.code).toBe('CC_PARTITION_MISMATCH');
    expect(p!.message).toContain('cc_partition "ng"');
    expect(p!.message).toContain('keeps only "default"');
    expect(p!.fix).toBe('set `sources.heartbeats.cc_partition: ng`');
    expect(codes({ ...f, state: { desiredApps: 1, liveInstances: 4, heartbeatingApps: 1, desiredHeartbeating: true } })).toEqual([]);
  });

  it('names nobody listening to start/stop and an unreachable monitoring endpoint', () => {
    const missing = deriveProblems(
      facts({ monitorUrl: 'http://127.0.0.1:8222', listeners: [{ stage: 'cloud_controller', missing: ['hm9000.start', 'hm9000.stop'] }] }),
    );
    expect(missing.map((p) => p.code)).toEqual(['NO_START_STOP_LISTENER']);
    expect(missing[0]!.message).toBe(
      'start/stop orders on hm9000.start, hm9000.stop: nobody subscribes to hm9000.start or hm9000.stop on NATS (asked http://127.0.0.1:8222)',
    );
    expect(missing[0]!.fix).toContain('is the Cloud Controller configured to use this health manager (e.g. `hm9000_noop: false`)?');
    expect(codes(facts({ monitorUrl: 'http://127.0.0.1:1', listeners: [{ stage: 'cloud_controller', error: 'connection refused' }] }))).toEqual([
      'NATS_MONITOR_UNREACHABLE',
    ]);
  });

  it('under the partitioned preset, every cc_partition problem names the one key that fixes them all: the top-level cc_partition', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'hmgate-problems-'));
    try {
      const file = join(dir, 'hmgate.yaml');
      await writeFile(file, 'extends: ruby-hm-partitioned\napi: { password: pw }\n');
      const loaded = await loadConfig(file, { env: {} });
      const options = (id: string) => loaded.stages.find((s) => s.id === id)!.options;
      const f = facts({
        state: { desiredApps: 0, liveInstances: 0, heartbeatingApps: 0, desiredHeartbeating: false, agents: 1 },
        monitorUrl: 'http://127.0.0.1:8222',
        listeners: [{ stage: 'cloud_controller', missing: ['cloudcontrollers.hm.requests.default'] }],
        stages: [
          stage('bus', 'bus', 'nats'),
          stage('heartbeats', 'sources', 'heartbeat', options('heartbeats'), {
            last_error: 'agent dea-1 heartbeats instances of cc_partition "ng", this stage keeps only "default": set cc_partition: ng',
          }),
          stage('desired', 'sources', 'bulk-api', options('desired'), {
            healthy: false,
            last_error:
              'Failed to request auth info on cloudcontroller.bulk.credentials.default: no reply within 5000ms (sources.desired.credentials_timeout); request ignored until the next desired-state update',
          }),
          stage('cloud_controller', 'sinks', 'notifier', options('cloud_controller')),
        ],
      });
      const ps = deriveProblems(f);
      expect(ps.map((p) => p.code)).toEqual(['CC_CREDENTIALS_UNAVAILABLE', 'CC_PARTITION_MISMATCH', 'NO_START_STOP_LISTENER']);
      const [credentials, partition, listener] = ps;
      expect(partition!.message).toBe(
        'heartbeats on dea.heartbeat: the agents heartbeat cc_partition "ng", and `cc_partition` keeps only "default": no instance is kept',
      );
      expect(partition!.fix).toBe('set `cc_partition: ng`');
      expect(credentials!.what).toBe('CC bulk API credentials on cloudcontroller.bulk.credentials.default');
      expect(listener!.fix).toBe(
        'is the Cloud Controller connected to this NATS, and on cc_partition "default"? A CC v2 listens on cloudcontrollers.hm.requests.ng: set `cc_partition: ng`. Check `sinks.cloud_controller.start_subject` / `sinks.cloud_controller.stop_subject` too',
      );
      // One key, the same in each.
      for (const p of ps) expect(p.fix.match(/set `[^`]*cc_partition[^`]*`/g)).toEqual(['set `cc_partition: ng`']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("names nobody on the Ruby HM's health.start / health.stop without HM9000's hint", () => {
    const [p] = deriveProblems(
      facts({ monitorUrl: 'http://127.0.0.1:8222', listeners: [{ stage: 'cloud_controller', missing: ['health.start', 'health.stop'] }] }),
    );
    expect(p!.fix).toBe(
      "is the Cloud Controller connected to this NATS, and one that takes the Ruby Health Manager's requests (health.start, health.stop)? Check `sinks.cloud_controller.start_subject` / `sinks.cloud_controller.stop_subject` too",
    );
  });

  it('says what stale state holds back: every start and stop with freshness.gate on, none with it off', () => {
    const stale = { desired: { fresh: false, reason: 'no complete desired-state fetch yet or within its TTL' } };
    expect(deriveProblems(facts(stale))[0]!.fix).toBe('nothing is started or stopped until both are fresh: see the other problems');
    expect(deriveProblems(facts({ ...stale, gate: true }))[0]!.fix).toBe('nothing is started or stopped until both are fresh: see the other problems');
    expect(deriveProblems(facts({ ...stale, gate: false }))[0]!.fix).toBe(
      '`freshness.gate` is off, so starts and stops go on all the same (only `INGEST_BEHIND` or `ACTUAL_COLLAPSE` holds them back): see the other problems',
    );
  });

  it('names the wrong foundation when no desired app heartbeats at all', () => {
    const ps = deriveProblems(facts({ state: { desiredApps: 3, liveInstances: 5, heartbeatingApps: 2, desiredHeartbeating: false } }));
    expect(ps.map((p) => p.code)).toEqual(['WRONG_FOUNDATION']);
    expect(ps[0]!.why).toBe('the CC desires 3 apps and the agents heartbeat 2 apps, but none of the desired apps is heartbeating');
  });

  it('names an etcd store that fails, and the state it cannot read', () => {
    const f = facts({
      stages: [
        stage('store', 'store', 'etcd', { endpoints: ['http://127.0.0.1:2379'] }, { healthy: false, last_error: 'etcd: connection refused' }),
        stage('bus', 'bus', 'nats'),
      ],
    });
    expect(codes(f)).toEqual(['ETCD_UNREACHABLE']);
    expect(deriveProblems(f)[0]!.message).toBe('etcd at http://127.0.0.1:2379: not reachable (etcd: connection refused)');
    expect(codes({ ...f, stages: [stage('store', 'store', 'etcd'), stage('bus', 'bus', 'nats')], state: { error: 'etcd request timed out' } })).toEqual([
      'ETCD_UNREACHABLE',
    ]);
  });

  it('names stale state only after the warm-up, with the reasons', () => {
    const stale = { actual: { fresh: false, reason: 'no heartbeats saved yet or within the freshness TTL' } };
    expect(codes(facts({ ...stale, uptimeMs: 1_000 }))).toEqual([]);
    // The freshness window and two heartbeats, plus 2 s of the daemon's own start-up.
    expect(codes(facts({ ...stale, uptimeMs: 5 * HB + 2_000 - 1 }))).toEqual([]);
    expect(codes(facts({ ...stale, uptimeMs: 5 * HB + 2_000 }))).toEqual(['NOT_FRESH']);
    const [p] = deriveProblems(facts(stale));
    expect(p!.code).toBe('NOT_FRESH');
    expect(p!.message).toBe('actual state: not fresh (actual: no heartbeats saved yet or within the freshness TTL)');
  });

  it('names any other unhealthy stage, and lists problems in catalogue order', () => {
    const f = withStage(
      withStage(facts({ state: { desiredApps: 3, liveInstances: 5, heartbeatingApps: 2, desiredHeartbeating: false } }), 'bus', {
        healthy: false,
        last_error: 'connection refused',
      }),
      'desired',
      { healthy: false, last_error: 'timed out: x' },
    );
    const extra = { ...f, stages: [...f.stages, stage('custom', 'sources', 'my-source', {}, { healthy: false, last_error: 'it broke' })] };
    expect(codes(extra)).toEqual(['NATS_UNREACHABLE', 'CC_TIMEOUT', 'WRONG_FOUNDATION', 'STAGE_UNHEALTHY']);
  });
});

describe('ProblemTracker', () => {
  function tracker() {
    const lines: Record<string, unknown>[] = [];
    let now = Date.parse('2026-01-01T00:00:00Z');
    const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const t = new ProblemTracker(logger, () => now);
    return { t, lines, tick: (ms: number) => (now += ms) };
  }
  const noHb = (window = '600ms') =>
    deriveProblems(
      facts({
        state: { desiredApps: 1, liveInstances: 0, heartbeatingApps: 0, desiredHeartbeating: false, agents: 0 },
        heartbeatMs: window === '600ms' ? 200 : 1000,
      }),
    );

  it('logs a problem once when it appears (warn) and once when it clears (info), however often it is evaluated', () => {
    const { t, lines, tick } = tracker();
    t.update([]);
    for (let i = 0; i < 5; i++) {
      t.update(noHb());
      tick(1000);
    }
    expect(lines.filter((l) => l.problem === 'NO_HEARTBEATS')).toEqual([
      expect.objectContaining({
        level: 40,
        problem: 'NO_HEARTBEATS',
        msg: expect.stringMatching(/^heartbeats on dea\.heartbeat: none within .*; fix: no agents, wrong NATS or wrong subject/),
      }),
    ]);
    expect(t.list()).toEqual([{ code: 'NO_HEARTBEATS', message: expect.any(String), fix: expect.any(String), since: '2026-01-01T00:00:00.000Z' }]);
    for (let i = 0; i < 3; i++) t.update([]);
    const cleared = lines.filter((l) => l.level === 30);
    expect(cleared).toEqual([
      expect.objectContaining({ problem: 'NO_HEARTBEATS', lasted_ms: 5000, msg: expect.stringMatching(/^cleared: heartbeats on dea\.heartbeat/) }),
    ]);
    expect(t.list()).toEqual([]);
  });

  it('keeps the first since while the words of a problem change, and tells apart problems of one code by key', () => {
    const { t, lines, tick } = tracker();
    t.update(noHb('600ms'));
    tick(500);
    t.update(noHb('3.1s'));
    expect(t.list()).toHaveLength(1);
    expect(t.list()[0]!.since).toBe('2026-01-01T00:00:00.000Z');
    expect(t.list()[0]!.message).toContain('3.1s');
    const two = deriveProblems(
      facts({
        stages: [
          stage('a', 'sources', 'x', {}, { healthy: false, last_error: 'boom' }),
          stage('b', 'sources', 'y', {}, { healthy: false, last_error: 'bang' }),
        ],
      }),
    );
    t.update(two);
    expect(t.list().map((p) => p.code)).toEqual(['STAGE_UNHEALTHY', 'STAGE_UNHEALTHY']);
    expect(lines.filter((l) => l.level === 40).map((l) => `${l.problem}:${l.key}`)).toEqual([
      'NO_HEARTBEATS:heartbeats',
      'STAGE_UNHEALTHY:a',
      'STAGE_UNHEALTHY:b',
    ]);
  });
});
