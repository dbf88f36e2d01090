import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { loadPlugin } from '../../src/pipeline/plugin-loader.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { createDroplet, getInstance, setDesiredState, type Droplet } from '../../src/sdk/droplets.js';
import type { EventDecision, EventEnv } from '../../src/sdk/events.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin from './index.js';

const T0 = 1_700_000_000_000;
/** Clock ms of second `s` of the scenario (whole seconds, as with time_resolution 1s). */
const at = (s: number) => T0 + s * 1000;
const UPDATED_AT = '2013-07-31 22:00:00 +0000';
const LAST_UPDATED = 1375308000;
const env = (over: Partial<EventEnv> = {}): EventEnv => ({ desiredAvailable: true, busConnected: true, random: () => 0.5, ...over });

function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  expect(problems.map((p) => p.message)).toEqual([]);
  return data as Parameters<typeof plugin.create>[0];
}

async function setup(raw: Record<string, unknown> = {}) {
  const t = makeStageContext({ id: 'missing', kind: 'policy' });
  const stage = await plugin.create(options(raw), t.ctx);
  const analyze = (d: Droplet, s: number, e: EventEnv = env()): EventDecision[] =>
    stage.handle({ event: { kind: 'analyze', app: d.id }, droplet: d, now: at(s), env: e });
  return { ...t, stage, analyze };
}

/** An app known from the bulk API since second `s`. */
function app(instances: number, s = 0, over: { state?: string; packageState?: string } = {}): Droplet {
  const d = createDroplet('app-a', at(s));
  setDesiredState(
    d,
    { guid: 'app-a', version: 'v', instances, state: over.state ?? 'STARTED', packageState: over.packageState ?? 'STAGED', updatedAt: UPDATED_AT },
    at(s),
  );
  return d;
}

function running(d: Droplet, index: number, guid: string, s: number): void {
  const r = getInstance(d, index, 'v');
  r.state = 'RUNNING';
  r.guid = guid;
  r.lastHeartbeatMs = at(s);
  r.guidStream = [guid];
}

const start = (index: number, run: Record<string, number>, facts: Record<string, unknown>): EventDecision => ({
  kind: 'request',
  request: { op: 'START', droplet: 'app-a', lastUpdated: LAST_UPDATED, version: 'v', running: run, indices: [index], flapping: false },
  delivery: { queue: 1000 },
  reason: 'MISSING',
  log: 'instance is missing',
  facts: { index, desired_instances: facts.desired_instances ?? 1, instance_state: 'DOWN', last_heartbeat_ms: null, ...facts },
});

describe('missing-instances', () => {
  it('is the built-in policy "missing-instances", every option described, with a start-up line', async () => {
    const { definition } = await loadPlugin('missing-instances', process.cwd());
    expect([definition.name, definition.kind]).toEqual(['missing-instances', 'policy']);
    const props = (definition.optionsSchema as unknown as { properties: Record<string, { description?: string }> }).properties;
    for (const [key, prop] of Object.entries(props)) expect(prop.description, key).toMatch(/\S/);
    expect(
      stageSummary({
        id: 'missing',
        kind: 'policy',
        plugin: 'missing-instances',
        definition: plugin,
        options: { rule: 'alive', droplet_lost: 30_000, priority: 1000 },
      }),
    ).toBe('missing: missing-instances: queues starts of missing instances (alive), grace and silence 30s');
  });

  it('options: the Ruby defaults, in ms', () => {
    expect(options({})).toEqual({ rule: 'alive', droplet_lost: 30_000, priority: 1000 });
    expect(options({ rule: 'by-index', droplet_lost: 3 })).toEqual({ rule: 'by-index', droplet_lost: 3000, priority: 1000 });
  });

  it('declares the analyze event only', async () => {
    const { stage } = await setup();
    expect(stage.events).toEqual(['analyze']);
  });

  it('an instance never heard from is started once the grace is over, then every other 20 s tick (40 s)', async () => {
    const { analyze } = await setup();
    const d = app(1, 0);
    expect(analyze(d, 20)).toEqual([]);
    // Within the grace the desired records are not even created (creation order decides slots).
    expect(d.versions.size).toBe(0);
    expect(d.resetTimestampMs).toBe(at(0));
    expect(analyze(d, 40)).toEqual([start(0, { v: 0 }, {})]);
    expect(d.resetTimestampMs).toBe(at(40));
    expect(analyze(d, 60)).toEqual([]);
    expect(analyze(d, 80)).toEqual([start(0, { v: 0 }, {})]);
    expect(analyze(d, 100)).toEqual([]);
    expect(analyze(d, 120)).toEqual([start(0, { v: 0 }, {})]);
  });

  it('the grace ends exactly droplet_lost after the reset (not strictly after)', async () => {
    const { analyze } = await setup();
    const d = app(1, 0);
    expect(analyze(d, 29)).toEqual([]);
    expect(analyze(d, 30)).toEqual([start(0, { v: 0 }, {})]);
  });

  it('nothing missing: no decision and the grace is not re-armed', async () => {
    const { analyze } = await setup();
    const d = app(2, 0);
    running(d, 0, 'g0', 35);
    running(d, 1, 'g1', 35);
    expect(analyze(d, 40)).toEqual([]);
    expect(d.resetTimestampMs).toBe(at(0));
    // Silent for exactly droplet_lost is still alive; one second more is not.
    expect(analyze(d, 65)).toEqual([]);
    expect(analyze(d, 66)).toEqual([
      start(0, { v: 2 }, { desired_instances: 2, instance_state: 'RUNNING', last_heartbeat_ms: at(35) }),
      start(1, { v: 2 }, { desired_instances: 2, instance_state: 'RUNNING', last_heartbeat_ms: at(35) }),
    ]);
  });

  it('only STARTED and STAGED apps have missing instances', async () => {
    const { analyze } = await setup();
    for (const over of [{ state: 'STOPPED' }, { packageState: 'PENDING' }, { packageState: 'FAILED' }]) {
      const d = app(1, 0, over);
      expect(analyze(d, 40)).toEqual([]);
      expect(d.resetTimestampMs).toBe(at(0));
    }
  });

  it('message bus not connected: nothing started, a warning, and the grace re-armed', async () => {
    const { analyze, logs } = await setup();
    const d = app(1, 0);
    expect(analyze(d, 40, env({ busConnected: false }))).toEqual([]);
    expect(d.resetTimestampMs).toBe(at(40));
    expect(logs.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([
      'actual state unavailable (message bus not connected): missing indices [0] of app-a not started',
    ]);
    expect(analyze(d, 60)).toEqual([]);
    expect(analyze(d, 70)).toEqual([start(0, { v: 0 }, {})]);
  });

  it('desired state update required: skipped quietly (alive rule), the grace re-armed', async () => {
    const { analyze, logs } = await setup();
    const d = app(1, 0);
    d.desiredUpdateRequired = true;
    expect(analyze(d, 40)).toEqual([]);
    expect(d.resetTimestampMs).toBe(at(40));
    expect(logs.filter((l) => (l.level as number) >= 40)).toEqual([]);
  });

  it('desired state update required: the by-index rule reports the error the older design died of, and goes on', async () => {
    const { analyze, logs } = await setup({ rule: 'by-index' });
    const d = app(1, 0);
    d.desiredUpdateRequired = true;
    expect(analyze(d, 40)).toEqual([]);
    expect(d.resetTimestampMs).toBe(at(40));
    const errors = logs.filter((l) => l.level === 50);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.msg).toBe(
      'missing indices [0] of app-a while its desired state awaits an update: the Ruby HM of this design exited here (NameError); skipped',
    );
    expect(errors[0]!.indices).toEqual([0]);
  });

  it('a FLAPPING missing index goes to the flapping policy (raised, silent), the others are queued, in index order', async () => {
    const { analyze } = await setup();
    const d = app(3, 0);
    running(d, 0, 'g0', 35);
    getInstance(d, 1).state = 'FLAPPING';
    getInstance(d, 1).crashCount = 2;
    expect(analyze(d, 40)).toEqual([
      { kind: 'raise', event: { kind: 'missing', app: 'app-a', index: 1, version: 'v', chatty: false } },
      start(2, { v: 1 }, { desired_instances: 3 }),
    ]);
  });

  it('a FLAPPING instance with a recent heartbeat is alive, a CRASHED one is not', async () => {
    const { analyze } = await setup();
    const d = app(2, 0);
    running(d, 0, 'g0', 35);
    getInstance(d, 0).state = 'FLAPPING';
    running(d, 1, 'g1', 35);
    getInstance(d, 1).state = 'CRASHED';
    expect(analyze(d, 40)).toEqual([start(1, { v: 0 }, { desired_instances: 2, instance_state: 'CRASHED', last_heartbeat_ms: at(35) })]);
  });

  it('pending delayed restarts: per record (alive) or per index (by-index)', async () => {
    const alive = await setup();
    const byIndex = await setup({ rule: 'by-index' });
    const crashedWith = (record: string | null, index: string | null) => {
      const d = app(1, 0);
      const r = getInstance(d, 0);
      r.state = 'CRASHED';
      r.pendingRestart = record;
      if (index) d.pendingRestarts.set(0, index);
      return d;
    };
    const crashedStart = start(0, { v: 0 }, { instance_state: 'CRASHED' });
    expect(alive.analyze(crashedWith('t1', null), 40)).toEqual([]);
    expect(byIndex.analyze(crashedWith('t1', null), 40)).toEqual([crashedStart]);
    expect(alive.analyze(crashedWith(null, 't1'), 40)).toEqual([crashedStart]);
    expect(byIndex.analyze(crashedWith(null, 't1'), 40)).toEqual([]);
  });

  it('by-index: a record never heard from is missing even when RUNNING; a silent one only after droplet_lost', async () => {
    const { analyze } = await setup({ rule: 'by-index' });
    const d = app(2, 0);
    getInstance(d, 0).state = 'RUNNING'; // no heartbeat time
    running(d, 1, 'g1', 10);
    // At 40 index 1 has been silent exactly droplet_lost: not yet missing.
    expect(analyze(d, 40)).toEqual([start(0, { v: 1 }, { desired_instances: 2, instance_state: 'RUNNING' })]);
    expect(analyze(d, 69)).toEqual([]);
    expect(analyze(d, 70)).toEqual([
      start(0, { v: 1 }, { desired_instances: 2, instance_state: 'RUNNING' }),
      start(1, { v: 1 }, { desired_instances: 2, instance_state: 'RUNNING', last_heartbeat_ms: at(10) }),
    ]);
    const e = app(1, 0);
    running(e, 0, 'g0', 10);
    expect(analyze(e, 40)).toEqual([]);
    expect(analyze(e, 41)).toEqual([start(0, { v: 1 }, { instance_state: 'RUNNING', last_heartbeat_ms: at(10) })]);
  });

  it('the priority option sets the queue', async () => {
    const { analyze } = await setup({ priority: 7 });
    const [d0] = analyze(app(1, 0), 40);
    expect(d0).toMatchObject({ kind: 'request', delivery: { queue: 7 } });
  });
});
