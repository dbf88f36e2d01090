/**
 * The reporter's varz: sums from the events it declares, and the desired/realtime publish split
 * (docs/ruby-hm.md#statistics, #statistics-in-the-older-design) — a figure shows in /varz only as of
 * the publish of its group.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import type { RequestOrder } from '../../src/sdk/orders.js';
import { getInstance, setDesiredState, type Droplet } from '../../src/sdk/droplets.js';
import type { PolicyEvent } from '../../src/sdk/events.js';
import type { DesiredApp } from '../../src/sdk/state.js';
import { makeStageContext, type TestContext } from '../../test/helpers/stage-context.js';
import notifierPlugin from '../notifier/index.js';
import plugin, { type Reporter } from './index.js';

const T0 = 1_700_000_000_000;
const env = { desiredAvailable: true, busConnected: true, random: () => 0.5 };

function validated<P extends { optionsSchema: unknown }>(p: P, raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  expect(makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(p.optionsSchema as never, data)).toEqual([]);
  return data as never;
}

async function setup(raw: Record<string, unknown> = {}, t: TestContext = makeStageContext({ id: 'reporter', kind: 'reporter', startMs: T0 })) {
  const reporter = (await plugin.create(validated(plugin, raw), t.ctx)) as Reporter;
  /** Hands an event to the reporter as the engine does (app events with their record). */
  const on = (event: PolicyEvent) => {
    const droplet = 'app' in event && typeof event.app === 'string' ? t.droplets.get(event.app, t.clock.now()) : undefined;
    reporter.observe({ event, droplet, now: t.clock.now(), env } as Parameters<Reporter['observe']>[0]);
  };
  return { ...t, reporter, on };
}

const desired = (guid: string, over: Partial<DesiredApp> = {}): DesiredApp => ({
  guid,
  version: 'v1',
  instances: 2,
  state: 'STARTED',
  packageState: 'STAGED',
  updatedAt: '2013-07-31 22:00:00 +0000',
  ...over,
});

function record(t: TestContext, app: DesiredApp): Droplet {
  const d = t.droplets.get(app.guid, t.clock.now());
  setDesiredState(d, app, t.clock.now());
  return d;
}

/** The varz keys without the component and process figures. */
function stats(v: Record<string, unknown>): Record<string, unknown> {
  const { type: _t, index: _i, start: _s, num_cores: _n, uptime: _u, mem: _m, cpu: _c, ...rest } = v;
  return rest;
}

describe('varz: the desired publish', () => {
  it('sums the apps of a walk and shows them, with its duration, only when the walk completes', async () => {
    const t = await setup();
    expect(stats(t.reporter.varz())).toEqual({});
    t.on({ kind: 'walk', phase: 'start' });
    t.on({ kind: 'desired', app: desired('a', { instances: 2, memory: 256 }) });
    t.on({ kind: 'desired', app: desired('b', { instances: 3, state: 'STOPPED', memory: 128 }) });
    t.on({ kind: 'desired', app: desired('c', { instances: 1 }) }); // no memory: counts 0
    expect(stats(t.reporter.varz())).toEqual({});
    t.clock.advance(1500);
    t.on({ kind: 'walk', phase: 'done' });
    const v = stats(t.reporter.varz());
    expect(v.total).toEqual({ apps: 3, started_apps: 2, instances: 6, started_instances: 3, memory: 2 * 256 + 3 * 128, started_memory: 512 });
    expect(v.bulk_update_loop_duration).toBe(1.5);
    expect(v.users).toEqual([]);
    expect(v.apps).toEqual([]);
    // The realtime figures are not part of a desired publish.
    for (const k of ['total_apps', 'total_instances', 'running_instances', 'missing_instances', 'crashed_instances', 'flapping_instances', 'running'])
      expect(v).not.toHaveProperty(k);
  });

  it('a new walk resets the sums, but /varz keeps the last complete walk until it completes', async () => {
    const t = await setup();
    t.on({ kind: 'walk', phase: 'start' });
    t.on({ kind: 'desired', app: desired('a') });
    t.on({ kind: 'walk', phase: 'done' });
    t.on({ kind: 'walk', phase: 'start' });
    expect((t.reporter.varz().total as { apps: number }).apps).toBe(1);
    t.on({ kind: 'desired', app: desired('x', { instances: 5 }) });
    t.on({ kind: 'desired', app: desired('y', { instances: 5 }) });
    t.on({ kind: 'walk', phase: 'done' });
    expect(t.reporter.varz().total).toMatchObject({ apps: 2, instances: 10 });
  });

  it('takes total_users from a walk event that carries it', async () => {
    const t = await setup();
    t.on({ kind: 'walk', phase: 'start', users: 42 } as PolicyEvent);
    t.on({ kind: 'walk', phase: 'done' });
    expect(t.reporter.varz().total_users).toBe(42);
  });
});

describe('varz: the realtime publish', () => {
  it('counts each analysed app after its analysis: running, missing, flapping over STARTED apps only', async () => {
    const t = await setup();
    const a = record(t, desired('a', { instances: 4 }));
    getInstance(a, 0).state = 'RUNNING';
    getInstance(a, 1).state = 'FLAPPING';
    getInstance(a, 3).state = 'CRASHED'; // counts in none
    getInstance(a, 0, 'old').state = 'RUNNING'; // not the live version
    a.crashes.set('g1', { timestampMs: T0, crashTimestamp: 1 });
    a.crashes.set('g2', { timestampMs: T0, crashTimestamp: 2 });
    const b = record(t, desired('b', { instances: 3, state: 'STOPPED' }));
    getInstance(b, 0).state = 'RUNNING';
    b.crashes.set('g3', { timestampMs: T0, crashTimestamp: 3 });
    const c = record(t, desired('c', { instances: 1 }));
    getInstance(c, 0).state = 'STARTING';

    t.on({ kind: 'pass', phase: 'start' });
    for (const id of ['a', 'b', 'c']) t.on({ kind: 'analyze', app: id });
    expect(stats(t.reporter.varz())).toEqual({});
    t.on({ kind: 'pass', phase: 'done', durationMs: 250 });

    const v = stats(t.reporter.varz());
    expect(v).toMatchObject({
      total_apps: 3,
      total_instances: 8,
      running_instances: 2,
      missing_instances: 1, // index 2 of a, read into being DOWN
      flapping_instances: 1,
      crashed_instances: 3,
      running: { apps: 2, crashes: 2, running_instances: 2, missing_instances: 1, flapping_instances: 1 },
      analysis_loop_duration: 0.25,
      droplets: {},
    });
    expect(v).not.toHaveProperty('total');
    expect(getInstance(a, 2).state).toBe('DOWN');
  });

  it('adds CRASHED exits received since the pass began, and starts from zero at each pass', async () => {
    const t = await setup();
    record(t, desired('a', { instances: 0 }));
    const exit = (reason: string) => t.on({ kind: 'exit', app: 'a', version: 'v1', instance: 'i', index: 0, reason, crashTimestamp: 1 });
    t.on({ kind: 'pass', phase: 'start' });
    exit('CRASHED');
    exit('CRASHED');
    exit('STOPPED');
    t.on({ kind: 'analyze', app: 'a' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
    expect(t.reporter.varz()).toMatchObject({ crashed_instances: 2, droplet_exited_msgs_received: 3 });
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'analyze', app: 'a' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
    expect(t.reporter.varz()).toMatchObject({ crashed_instances: 0, droplet_exited_msgs_received: 3 });
  });

  it('keeps the desired sums of the last walk through a realtime publish', async () => {
    const t = await setup();
    t.on({ kind: 'walk', phase: 'start' });
    t.on({ kind: 'desired', app: desired('a') });
    t.on({ kind: 'walk', phase: 'done' });
    t.on({ kind: 'walk', phase: 'start' }); // resets the private sums
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
    expect(t.reporter.varz().total).toMatchObject({ apps: 1 });
  });

  it('logs the pass as the Ruby HM did', async () => {
    const t = await setup();
    const a = record(t, desired('a', { instances: 2 }));
    getInstance(a, 0).state = 'RUNNING';
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'analyze', app: 'a' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 1200 });
    expect(t.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('Analyzed'))).toMatchObject({
      level: 30,
      msg: 'Analyzed 1 running 1 missing instances. Elapsed time: 1.2',
    });
  });

  it('with max_droplets_in_varz, dumps the records while there are at most that many', async () => {
    const t = await setup({ max_droplets_in_varz: 1 });
    record(t, desired('a', { instances: 0 }));
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
    expect(Object.keys(t.reporter.varz().droplets as object)).toEqual(['a']);
    expect((t.reporter.varz().droplets as Record<string, { numInstances: number }>).a!.numInstances).toBe(0);
    record(t, desired('b'));
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
    expect(t.reporter.varz().droplets).toEqual({});
  });
});

describe('varz: counters', () => {
  it('count messages at once but show them only as of the last publish', async () => {
    const t = await setup();
    t.on({ kind: 'heartbeat-message', agent: 'dea-1', entries: 2, accepted: 2 });
    t.on({ kind: 'heartbeat-message', agent: 'dea-2', entries: 0, accepted: 0 });
    t.on({ kind: 'updated', app: 'a' });
    t.reporter.setQueueLength(3);
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
    t.on({ kind: 'heartbeat-message', agent: 'dea-1', entries: 1, accepted: 1 });
    expect(t.reporter.varz()).toMatchObject({ heartbeat_msgs_received: 2, droplet_updated_msgs_received: 1, queue_length: 3 });
    t.on({ kind: 'walk', phase: 'start' });
    t.on({ kind: 'walk', phase: 'done' });
    expect(t.reporter.varz()).toMatchObject({ heartbeat_msgs_received: 3 });
    const metric = await t.metrics.getSingleMetric('hmgate_ruby_messages_received_total')!.get();
    expect(Object.fromEntries(metric.values.map((m) => [m.labels.message, m.value]))).toEqual({ heartbeat_msgs_received: 3, droplet_updated_msgs_received: 1 });
  });

  it('shows the requests the notifier sent (health_start/stop_messages_sent)', async () => {
    const t = makeStageContext({ id: 'reporter', kind: 'reporter', startMs: T0 });
    const r = await setup({}, t);
    const notifier = await notifierPlugin.create(validated(notifierPlugin, { protocol: 'health' }), { ...t.ctx, id: 'cc', kind: 'sink' });
    const req = (op: 'START' | 'STOP'): RequestOrder => ({
      action: 'request',
      messageId: 'm',
      app: 'a',
      reason: 'R',
      request: { op, droplet: 'a', lastUpdated: null, version: null, running: {}, ...(op === 'START' ? { indices: [0] } : { instances: [] }) },
    });
    await notifier.send(req('START'));
    await notifier.send(req('START'));
    await notifier.send(req('STOP'));
    r.on({ kind: 'walk', phase: 'start' });
    r.on({ kind: 'walk', phase: 'done' });
    expect(r.reporter.varz()).toMatchObject({ health_start_messages_sent: 2, health_stop_messages_sent: 1 });
  });

  it('has the Ruby HM keys in its order, without the start/stop counters for the older design', async () => {
    const keysAfterBoth = async (raw: Record<string, unknown>) => {
      const t = await setup(raw);
      t.on({ kind: 'walk', phase: 'start' });
      t.on({ kind: 'walk', phase: 'done' });
      t.on({ kind: 'pass', phase: 'start' });
      t.on({ kind: 'pass', phase: 'done', durationMs: 0 });
      return Object.keys(t.reporter.varz());
    };
    const counters = ['health_start_messages_sent', 'health_stop_messages_sent'];
    const ruby = (withCounters: boolean) => [
      'total_users',
      'queue_length',
      'heartbeat_msgs_received',
      'droplet_exited_msgs_received',
      'droplet_updated_msgs_received',
      'healthmanager_status_msgs_received',
      'healthmanager_health_request_msgs_received',
      'healthmanager_droplet_request_msgs_received',
      ...(withCounters ? counters : []),
      'analysis_loop_duration',
      'bulk_update_loop_duration',
      'varz_publishes',
      'varz_holds',
      'droplets',
      'state',
      'last_up_known',
      'users',
      'apps',
      'total',
      'total_apps',
      'total_instances',
      'running_instances',
      'missing_instances',
      'crashed_instances',
      'flapping_instances',
      'running',
    ];
    expect(await keysAfterBoth({})).toEqual(['type', 'index', 'start', 'num_cores', ...ruby(true), 'uptime', 'mem', 'cpu']);
    expect(await keysAfterBoth({ start_stop_counters: false })).toEqual(['type', 'index', 'start', 'num_cores', ...ruby(false), 'uptime', 'mem', 'cpu']);
  });

  it('sets the hmgate_ruby_* gauges at each publish', async () => {
    const t = await setup();
    const a = record(t, desired('a', { instances: 2, memory: 64 }));
    getInstance(a, 0).state = 'RUNNING';
    t.on({ kind: 'walk', phase: 'start' });
    t.on({ kind: 'desired', app: desired('a', { instances: 2, memory: 64 }) });
    t.on({ kind: 'walk', phase: 'done' });
    t.on({ kind: 'pass', phase: 'start' });
    t.on({ kind: 'analyze', app: 'a' });
    t.on({ kind: 'pass', phase: 'done', durationMs: 500 });
    const text = await t.metrics.metrics();
    for (const line of [
      'hmgate_ruby_running_instances 1',
      'hmgate_ruby_missing_instances 1',
      'hmgate_ruby_flapping_instances 0',
      'hmgate_ruby_analysed_apps 1',
      'hmgate_ruby_analysed_instances 2',
      'hmgate_ruby_desired_apps{state="all"} 1',
      'hmgate_ruby_desired_instances{state="started"} 2',
      'hmgate_ruby_desired_memory_mb{state="all"} 128',
      'hmgate_ruby_analysis_loop_duration_seconds 0.5',
    ]) {
      expect(text.split('\n')).toContain(line);
    }
  });

  it('shows uptime and the component card without credentials', async () => {
    const t = await setup({ component: { enabled: true, announce_host: '10.0.0.5:5155', user: 'thin', password: 's3cret' } });
    t.clock.advance(90_061_000);
    const v = t.reporter.varz();
    expect(v).toMatchObject({ type: 'HealthManager', index: 0, host: '10.0.0.5:5155', start: '2023-11-14 22:13:20 +0000', uptime: '1d:1h:1m:1s' });
    expect(v.uuid).toMatch(/^0-[0-9a-f]{32}$/);
    expect(JSON.stringify(v)).not.toContain('s3cret');
  });
});
