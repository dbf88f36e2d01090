/**
 * exit-restarts: DEA_SHUTDOWN / DEA_EVACUATION exits restart the index at high priority
 * (docs/ruby-hm.md#evacuation, #an-evacuation), after droplet-records has marked the instance down.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { DropletRegistry, getInstance, setDesiredState, type Droplet } from '../../src/sdk/droplets.js';
import type { EventDecision, EventEnv, EventPolicyStage, ExitEvent } from '../../src/sdk/events.js';
import { dedupeKey, RequestQueue } from '../../src/pipeline/event-path/request-queue.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import { DEFAULT_DROPLET_RECORDS, DropletRecords } from '../droplet-records/index.js';
import { DEFAULT_FLAPPING, Flapping } from '../flapping/index.js';
import plugin, { exitRestart, ExitRestarts, verifyExitRestart } from './index.js';

const T0 = 1_700_000_000_000;
const env: EventEnv = { desiredAvailable: true, busConnected: true, random: () => 0.5 };

function app(id: string, instances: number, desired = true): Droplet {
  const d = new DropletRegistry().get(id, T0);
  if (desired) setDesiredState(d, { guid: id, version: 'v', instances, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, T0);
  return d;
}

const exitOf = (d: Droplet, reason: string, index: number, instance = `i${index}`, version = 'v'): ExitEvent => ({
  kind: 'exit',
  app: d.id,
  version,
  instance,
  index,
  reason,
  crashTimestamp: T0 / 1000,
});

describe('exit-restarts (docs/ruby-hm.md#exits)', () => {
  it.each(['DEA_SHUTDOWN', 'DEA_EVACUATION'])('%s → START of [index] queued at 1 000 000, EVACUATING, live version', (reason) => {
    const d = app('C', 3);
    const [x, ...rest] = exitRestart(d, exitOf(d, reason, 2, 'i2', 'old'), { priority: 1_000_000 });
    expect(rest).toEqual([]);
    expect(x).toMatchObject({
      kind: 'request',
      delivery: { queue: 1_000_000 },
      reason: 'EVACUATING',
      request: { op: 'START', droplet: 'C', version: 'v', indices: [2], flapping: false, lastUpdated: 1_375_308_000 },
      facts: { index: 2, exit_reason: reason, exit_version: 'old' },
    });
  });

  it('exitRestart itself (verify: false) makes no flapping and no desired-state check: a FLAPPING record of an app still waiting for its desired state is restarted too', () => {
    const d = app('C', 0, false);
    getInstance(d, 0, 'v').state = 'FLAPPING';
    expect(exitRestart(d, exitOf(d, 'DEA_SHUTDOWN', 0), { priority: 7 })).toMatchObject([
      { delivery: { queue: 7 }, request: { version: null, lastUpdated: null, indices: [0] } },
    ]);
  });

  it('other, bad or unknown reasons start nothing', () => {
    const d = app('C', 1);
    for (const reason of ['CRASHED', 'STOPPED', 'BOGUS', '', 'dea_evacuation'])
      expect(exitRestart(d, exitOf(d, reason, 0), { priority: 1_000_000 })).toEqual([]);
  });
});

describe('a DEA evacuation (docs/ruby-hm.md#an-evacuation), through the three policies in preset order', () => {
  it('index 2 marked DOWN, grace restarted at 300, START [2] queued HIGH, taken before NORMAL and LOW starts', async () => {
    const t = makeStageContext({ id: 'policies', startMs: T0 });
    const d = app('C', 3);
    const exitStage = await plugin.create({ priority: 1_000_000, verify: true, droplet_lost: 30_000 }, t.ctx);
    const stages: EventPolicyStage[] = [
      new DropletRecords(DEFAULT_DROPLET_RECORDS, t.ctx),
      new Flapping(DEFAULT_FLAPPING, t.ctx),
      exitStage as EventPolicyStage,
    ];
    const run = (event: Parameters<EventPolicyStage['handle']>[0]['event']): EventDecision[] =>
      stages.filter((s) => s.events.includes(event.kind)).flatMap((s) => s.handle({ event, droplet: d, now: t.clock.now(), env }));

    t.clock.advance(290_000);
    run({
      kind: 'heartbeat',
      app: 'C',
      agent: 'dea',
      beat: { app: 'C', version: 'v', instance: 'g2', index: 2, state: 'RUNNING', stateTimestamp: 1, agent: 'dea' },
    });
    t.clock.advance(10_000);
    const out = run(exitOf(d, 'DEA_EVACUATION', 2, 'g2'));
    expect(getInstance(d, 2, 'v')).toMatchObject({ state: 'DOWN', stateTimestamp: T0 / 1000 + 300, guidStream: [] });
    expect(d.resetTimestampMs).toBe(T0 + 300_000);
    expect(out).toHaveLength(1);
    const evac = out[0]!;
    if (evac.kind !== 'request' || evac.delivery === 'now') throw new Error('expected a queued request');
    expect(evac.delivery.queue).toBe(1_000_000);
    expect(evac.request).toMatchObject({ indices: [2], running: { v: 0 } });

    // A crash start (LOW) and a missing start (NORMAL) queued first are still taken after it.
    const q = new RequestQueue<string>();
    const crash = run(exitOf(d, 'CRASHED', 0, 'g0'))[0]!;
    if (crash.kind !== 'request' || crash.delivery === 'now') throw new Error('expected a queued crash start');
    q.insert('crash', crash.delivery.queue, dedupeKey(crash.request, 'payload'));
    q.insert('missing', 1_000, 'missing-1');
    q.insert('evacuation', evac.delivery.queue, dedupeKey(evac.request, 'payload'));
    expect([q.remove()!.item, q.remove()!.item, q.remove()!.item]).toEqual(['evacuation', 'missing', 'crash']);
  });
});

describe('exit-restarts options', () => {
  it('defaults to HIGH_PRIORITY, rejects unknown keys, and says what it does', () => {
    const data: Record<string, unknown> = {};
    const v = makeValidator({ heartbeatMs: 10_000, convertDurations: true });
    expect(v.validate(plugin.optionsSchema, data)).toEqual([]);
    expect(data).toEqual({ priority: 1_000_000, verify: true, droplet_lost: 30_000 });
    expect(v.validate(plugin.optionsSchema, { priority: 'high' })).toHaveLength(1);
    expect(v.validate(plugin.optionsSchema, { reasons: [] })).toHaveLength(1);
    expect(stageSummary({ id: 'evacuation', kind: 'policy', plugin: 'exit-restarts', definition: plugin, options: data })).toBe(
      'evacuation: exit-restarts: restarts instances of agents that shut down or evacuate, queue priority 1000000',
    );
  });
});

describe('exit-restarts verify (the default)', () => {
  const DROPLET_LOST = 30_000;

  function stageWith(verify?: boolean) {
    const t = makeStageContext({ id: 'exit_restarts', kind: 'policy', startMs: T0 });
    const stage = new ExitRestarts({ priority: 1_000_000, droplet_lost: DROPLET_LOST, ...(verify === undefined ? {} : { verify }) }, t.ctx);
    const refused = async () => {
      const values = (await t.metrics.getSingleMetric('hmgate_orders_suppressed_total')?.get())?.values ?? [];
      return values.filter((v) => v.labels.action === 'start' && v.labels.why === 'verification').reduce((n, v) => n + v.value, 0);
    };
    const refusals = () => t.logs.filter((l) => /^Not starting /.test(String(l.msg)));
    const run = (d: Droplet, exit: ExitEvent, e: EventEnv = env) => stage.handle({ event: exit, droplet: d, now: t.clock.now(), env: e });
    return { ...t, stage, refused, refusals, run };
  }

  /** The record at index of the live version heartbeating `guid` in `state` at `atMs`. */
  function heard(d: Droplet, index: number, guid: string, state: 'RUNNING' | 'STARTING', atMs: number) {
    Object.assign(getInstance(d, index), { guid, state, lastHeartbeatMs: atMs, guidStream: [guid] });
  }

  it('a desired index that runs nowhere else is restarted', () => {
    const t = stageWith();
    const d = app('C', 3);
    expect(t.run(d, exitOf(d, 'DEA_EVACUATION', 2))).toMatchObject([{ kind: 'request', reason: 'EVACUATING', request: { indices: [2] } }]);
    expect(t.refusals()).toEqual([]);
  });

  const cases: [string, (d: Droplet) => void, (d: Droplet) => ExitEvent, EventEnv, string, RegExp][] = [
    ['an app the CC never reported', () => {}, (d) => exitOf(d, 'DEA_EVACUATION', 0), env, 'not_desired', /has not reported this app/],
    ['index 9999', () => {}, (d) => exitOf(d, 'DEA_SHUTDOWN', 9999), env, 'index_not_desired', /index 9999 is beyond the 3 desired instances/],
    [
      'another guid RUNNING at the index',
      (d) => heard(d, 1, 'other', 'RUNNING', T0),
      (d) => exitOf(d, 'DEA_EVACUATION', 1, 'exited'),
      env,
      'running_elsewhere',
      /already runs elsewhere \(instance other\)/,
    ],
    [
      'another guid STARTING at the index',
      (d) => heard(d, 1, 'new', 'STARTING', T0),
      (d) => exitOf(d, 'DEA_EVACUATION', 1, 'exited'),
      env,
      'starting_elsewhere',
      /already starting elsewhere/,
    ],
    [
      'desired state unavailable',
      () => {},
      (d) => exitOf(d, 'DEA_SHUTDOWN', 0),
      { ...env, desiredAvailable: false },
      'desired_not_fresh',
      /desired state is not available .* cannot be verified/,
    ],
    [
      'an app updated since its last bulk appearance',
      (d) => void (d.desiredUpdateRequired = true),
      (d) => exitOf(d, 'DEA_SHUTDOWN', 0),
      env,
      'desired_not_fresh',
      /has not been fetched since/,
    ],
  ];

  it.each(cases)('%s: not started, counted, logged with why', async (what, arrange, exit, e, why, detail) => {
    const t = stageWith();
    const d = what === 'an app the CC never reported' ? new DropletRegistry().get('forged', T0) : app('C', 3);
    arrange(d);
    expect(t.run(d, exit(d), e)).toEqual([]);
    expect(await t.refused()).toBe(1);
    expect(t.refusals()).toHaveLength(1);
    expect(t.refusals()[0]).toMatchObject({ level: 40, why, component: 'exit_restarts' });
    expect(String(t.refusals()[0]!.msg)).toMatch(detail);
  });

  it('an index beyond one desired instance says "1 desired instance"', () => {
    const t = stageWith();
    const d = app('C', 1);
    expect(t.run(d, exitOf(d, 'DEA_SHUTDOWN', 3))).toEqual([]);
    expect(String(t.refusals()[0]!.msg)).toMatch(/index 3 is beyond the 1 desired instance\b(?!s)/);
  });

  it('a STOPPED app, or one whose package is not staged, is not restarted', () => {
    const t = stageWith();
    for (const [state, packageState] of [
      ['STOPPED', 'STAGED'],
      ['STARTED', 'PENDING'],
    ]) {
      const d = new DropletRegistry().get('C', T0);
      setDesiredState(d, { guid: 'C', version: 'v', instances: 3, state: state!, packageState: packageState! }, T0);
      expect(t.run(d, exitOf(d, 'DEA_SHUTDOWN', 0))).toEqual([]);
    }
    expect(t.refusals()[0]).toMatchObject({ why: 'not_started' });
  });

  it('another guid last heard longer than droplet_lost ago does not count as running there', () => {
    const t = stageWith();
    const d = app('C', 3);
    heard(d, 1, 'other', 'RUNNING', T0);
    t.clock.advance(DROPLET_LOST + 1_000);
    expect(t.run(d, exitOf(d, 'DEA_EVACUATION', 1, 'exited'))).toHaveLength(1);
  });

  it('the exited guid itself (not yet marked down) does not block its own restart', () => {
    const d = app('C', 3);
    heard(d, 1, 'g1', 'RUNNING', T0);
    expect(verifyExitRestart(d, exitOf(d, 'DEA_SHUTDOWN', 1, 'g1'), T0, env, DROPLET_LOST)).toBeNull();
  });

  it('verify: false restarts whatever the message names (the Ruby HM)', async () => {
    const t = stageWith(false);
    const forged = new DropletRegistry().get('forged', T0);
    expect(t.run(forged, exitOf(forged, 'DEA_SHUTDOWN', 9999), { ...env, desiredAvailable: false })).toMatchObject([{ request: { indices: [9999] } }]);
    expect(await t.refused()).toBe(0);
  });

  it('a flood of forged exits: each counted, logged once per reason per 10 s', async () => {
    const t = stageWith();
    const reg = new DropletRegistry();
    for (let i = 0; i < 300; i++) {
      const d = reg.get(`forged-${i}`, T0);
      expect(t.run(d, exitOf(d, 'DEA_EVACUATION', 0))).toEqual([]);
    }
    expect(await t.refused()).toBe(300);
    expect(t.refusals()).toHaveLength(1);
    t.clock.advance(10_000);
    const d = reg.get('late', T0);
    t.run(d, exitOf(d, 'DEA_EVACUATION', 0));
    expect(t.refusals()[1]).toMatchObject({ refused_since_last_log: 299 });
  });

  it('other exit reasons are not counted as refusals', async () => {
    const t = stageWith();
    const d = new DropletRegistry().get('forged', T0);
    expect(t.run(d, exitOf(d, 'CRASHED', 0))).toEqual([]);
    expect(await t.refused()).toBe(0);
  });
});
