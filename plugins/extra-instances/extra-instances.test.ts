import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { loadPlugin } from '../../src/pipeline/plugin-loader.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { createDroplet, getInstance, setDesiredState, type Droplet, type RecordState } from '../../src/sdk/droplets.js';
import type { EventDecision } from '../../src/sdk/events.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin from './index.js';

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;
const LAST_UPDATED = 1375308000;

function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  expect(problems.map((p) => p.message)).toEqual([]);
  return data as Parameters<typeof plugin.create>[0];
}

async function setup(raw: Record<string, unknown> = {}) {
  const t = makeStageContext({ id: 'extras', kind: 'policy' });
  const stage = await plugin.create(options(raw), t.ctx);
  const analyze = (d: Droplet, s: number): EventDecision[] =>
    stage.handle({ event: { kind: 'analyze', app: d.id }, droplet: d, now: at(s), env: { desiredAvailable: true, busConnected: true, random: () => 0.5 } });
  return { ...t, stage, analyze };
}

function app(instances: number, version = 'v', state = 'STARTED'): Droplet {
  const d = createDroplet('app-a', at(0));
  setDesiredState(d, { guid: 'app-a', version, instances, state, packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, at(0));
  return d;
}

/** A record as the heartbeat and exit paths leave it; `heard` is the second of its last running beat. */
function rec(d: Droplet, version: string, index: number, state: RecordState, guid: string | null, heard: number | null = 100) {
  const r = getInstance(d, index, version);
  r.state = state;
  r.guid = guid;
  r.lastHeartbeatMs = heard === null ? null : at(heard);
  r.guidStream = state === 'RUNNING' && guid ? [guid] : [];
  return r;
}

const keys = (d: Droplet) => [...d.versions].map(([v, m]) => [v, [...m.keys()]]);

const stop = (
  instances: { instance: string | null; version: string; reason: string }[],
  o: { running: Record<string, number>; version?: string; desired?: number; appState?: string },
): EventDecision => ({
  kind: 'request',
  request: {
    op: 'STOP',
    droplet: 'app-a',
    lastUpdated: LAST_UPDATED,
    version: o.version ?? 'v',
    running: o.running,
    instances: instances.map(({ instance, version }) => ({ instance, version })),
  },
  delivery: 'now',
  reason: 'EXTRA',
  log: `not desired (${[...new Set(instances.map((i) => i.reason))].join('; ')})`,
  facts: { instances, desired_instances: o.desired ?? 2, app_state: o.appState ?? 'STARTED' },
});

describe('extra-instances', () => {
  it('is the built-in policy "extra-instances", every option described, with a start-up line', async () => {
    const { definition } = await loadPlugin('extra-instances', process.cwd());
    expect([definition.name, definition.kind]).toEqual(['extra-instances', 'policy']);
    const props = (definition.optionsSchema as unknown as { properties: Record<string, { description?: string }> }).properties;
    for (const [key, prop] of Object.entries(props)) expect(prop.description, key).toMatch(/\S/);
    expect(
      stageSummary({ id: 'extras', kind: 'policy', plugin: 'extra-instances', definition: plugin, options: { slots: 'index', droplet_lost: 30_000 } }),
    ).toBe('extras: extra-instances: stops instances beyond the desired indices, of other versions or of stopped apps');
  });

  it('options: count slots and a 30 s droplet_lost by default', () => {
    expect(options({})).toEqual({ slots: 'count', droplet_lost: 30_000 });
    expect(options({ slots: 'index', droplet_lost: '3s' })).toEqual({ slots: 'index', droplet_lost: 3000 });
  });

  it('count slots: any record of the live version takes a slot, whatever its state or index, in creation order', async () => {
    const { analyze } = await setup();
    const d = app(2);
    rec(d, 'v', 3, 'CRASHED', 'g3'); // created first (an exit at index 3)
    rec(d, 'v', 0, 'RUNNING', 'g0');
    rec(d, 'v', 1, 'RUNNING', 'g1');
    expect(analyze(d, 110)).toEqual([stop([{ instance: 'g1', version: 'v', reason: 'Extra instance' }], { running: { v: 1 } })]);
    expect(keys(d)).toEqual([['v', [3, 0]]]);
    expect(d.extraInstances).toEqual([{ instance: 'g1', version: 'v', reason: 'Extra instance' }]);
  });

  it('index slots: the same records keep indices 0 and 1, and the CRASHED index 3 is pruned without a stop', async () => {
    const { analyze } = await setup({ slots: 'index' });
    const d = app(2);
    rec(d, 'v', 3, 'CRASHED', 'g3');
    rec(d, 'v', 0, 'RUNNING', 'g0');
    rec(d, 'v', 1, 'RUNNING', 'g1');
    expect(analyze(d, 110)).toEqual([]);
    expect(keys(d)).toEqual([['v', [0, 1]]]);
    expect(d.extraInstances).toEqual([]);
  });

  it('index slots: a RUNNING index 2 is stopped while index 1 is missing; count slots keep it', async () => {
    const build = () => {
      const d = app(2);
      rec(d, 'v', 0, 'RUNNING', 'g0');
      rec(d, 'v', 2, 'RUNNING', 'g2');
      return d;
    };
    const byIndex = await setup({ slots: 'index' });
    const d = build();
    expect(byIndex.analyze(d, 110)).toEqual([stop([{ instance: 'g2', version: 'v', reason: 'Extra instance' }], { running: { v: 1 } })]);
    expect(keys(d)).toEqual([['v', [0]]]);
    const byCount = await setup();
    const e = build();
    expect(byCount.analyze(e, 110)).toEqual([]);
    expect(keys(e)).toEqual([['v', [0, 2]]]);
  });

  it('a STOPPED app: every record deleted, only STARTING/RUNNING ones stopped, running {} (counted after pruning)', async () => {
    const { analyze } = await setup();
    const d = app(2, 'v', 'STOPPED');
    rec(d, 'v', 0, 'RUNNING', 'g0');
    rec(d, 'v', 1, 'STARTING', 'g1');
    rec(d, 'v', 2, 'DOWN', null, null);
    rec(d, 'old', 0, 'CRASHED', 'g9');
    const reason = 'Droplet state is STOPPED';
    expect(analyze(d, 110)).toEqual([
      stop(
        [
          { instance: 'g0', version: 'v', reason },
          { instance: 'g1', version: 'v', reason },
        ],
        { running: {}, appState: 'STOPPED' },
      ),
    ]);
    expect(d.versions.size).toBe(0);
  });

  it('a version change: the old version is stopped and its emptied version deleted; the live one is counted', async () => {
    const { analyze } = await setup();
    const d = app(2, 'v2');
    rec(d, 'v1', 0, 'RUNNING', 'a');
    rec(d, 'v1', 1, 'RUNNING', 'b');
    rec(d, 'v2', 0, 'RUNNING', 'c');
    const reason = 'Live version mismatch';
    expect(analyze(d, 110)).toEqual([
      stop(
        [
          { instance: 'a', version: 'v1', reason },
          { instance: 'b', version: 'v1', reason },
        ],
        { running: { v2: 1 }, version: 'v2' },
      ),
    ]);
    expect(keys(d)).toEqual([['v2', [0]]]);
  });

  it('count slots: once the live version fills them, old-version records are "Extra instance"', async () => {
    const { analyze } = await setup();
    const d = app(1, 'v2');
    rec(d, 'v2', 0, 'RUNNING', 'c');
    rec(d, 'v1', 0, 'RUNNING', 'a');
    rec(d, 'v1', 1, 'DOWN', 'b');
    expect(analyze(d, 110)).toEqual([stop([{ instance: 'a', version: 'v1', reason: 'Extra instance' }], { running: { v2: 1 }, version: 'v2', desired: 1 })]);
    expect(keys(d)).toEqual([['v2', [0]]]);
  });

  it('the live version stays when emptied; an app with no records yields nothing', async () => {
    const { analyze } = await setup();
    const d = app(0);
    rec(d, 'v', 0, 'DOWN', null, null);
    expect(analyze(d, 110)).toEqual([]);
    expect(keys(d)).toEqual([['v', []]]);
    expect(analyze(app(2), 110)).toEqual([]);
  });

  it('silent STARTING/RUNNING records are marked DOWN (state timestamp = now) first, and then not stopped', async () => {
    const { analyze } = await setup();
    const d = app(1, 'v', 'STOPPED');
    rec(d, 'v', 0, 'RUNNING', 'g0', 79); // 31 s silent at 110
    rec(d, 'v', 1, 'STARTING', 'g1', 80); // exactly 30 s: still live
    const stale = getInstance(d, 0);
    expect(analyze(d, 110)).toEqual([
      stop([{ instance: 'g1', version: 'v', reason: 'Droplet state is STOPPED' }], { running: {}, desired: 1, appState: 'STOPPED' }),
    ]);
    expect(stale.state).toBe('DOWN');
    expect(stale.stateTimestamp).toBe(at(110) / 1000);

    const e = app(1);
    const kept = rec(e, 'v', 0, 'RUNNING', 'g0', 79);
    expect(analyze(e, 110)).toEqual([]);
    expect(kept).toMatchObject({ state: 'DOWN', stateTimestamp: at(110) / 1000 });
    expect(keys(e)).toEqual([['v', [0]]]);
  });

  it('silence: count slots treat a running record never heard from as silent, index slots only look at a heartbeat time', async () => {
    for (const [slots, expected] of [
      ['count', 'DOWN'],
      ['index', 'RUNNING'],
    ] as const) {
      const { analyze } = await setup({ slots });
      const d = app(1);
      const r = rec(d, 'v', 0, 'RUNNING', 'g0', null);
      expect(analyze(d, 110)).toEqual([]);
      expect(r.state).toBe(expected);
    }
  });

  it('desired state update required: records pruned, nothing stopped, one info line; the list is kept on the record', async () => {
    const { analyze, logs } = await setup();
    const d = app(1);
    d.desiredUpdateRequired = true;
    rec(d, 'v', 0, 'RUNNING', 'g0');
    rec(d, 'v', 1, 'RUNNING', 'g1');
    expect(analyze(d, 110)).toEqual([]);
    expect(keys(d)).toEqual([['v', [0]]]);
    expect(d.extraInstances).toEqual([{ instance: 'g1', version: 'v', reason: 'Extra instance' }]);
    const info = logs.filter((l) => l.level === 30);
    expect(info.map((l) => l.msg)).toEqual(['extra instances of app-a not stopped: desired state update required']);
    expect(info[0]!.instances).toEqual([{ instance: 'g1', version: 'v', reason: 'Extra instance' }]);
  });

  it('an app never reported by the bulk API (0 instances) has every record pruned, and nothing is stopped', async () => {
    const { analyze } = await setup({ slots: 'index' });
    const d = createDroplet('app-a', at(0));
    rec(d, 'v', 0, 'RUNNING', 'g0');
    expect(analyze(d, 110)).toEqual([]);
    expect(keys(d)).toEqual([]);
  });

  it('one guid in two records: named once with count slots (map by guid), twice with index slots', async () => {
    const build = () => {
      const d = app(1, 'v2');
      rec(d, 'v1', 0, 'RUNNING', 'g');
      rec(d, 'v1', 1, 'RUNNING', 'h');
      rec(d, 'v1', 2, 'STARTING', 'g');
      return d;
    };
    const reason = 'Live version mismatch';
    const byCount = await setup();
    expect(byCount.analyze(build(), 110)).toEqual([
      stop(
        [
          { instance: 'g', version: 'v1', reason },
          { instance: 'h', version: 'v1', reason },
        ],
        { running: {}, version: 'v2', desired: 1 },
      ),
    ]);
    const byIndex = await setup({ slots: 'index' });
    // index slots: indices 1 and 2 are beyond one instance before the version is looked at.
    expect(byIndex.analyze(build(), 110)).toEqual([
      stop(
        [
          { instance: 'g', version: 'v1', reason },
          { instance: 'h', version: 'v1', reason: 'Extra instance' },
          { instance: 'g', version: 'v1', reason: 'Extra instance' },
        ],
        { running: {}, version: 'v2', desired: 1 },
      ),
    ]);
  });

  it('the analysis replaces the list the heartbeat path gathered', async () => {
    const { analyze } = await setup({ slots: 'index' });
    const d = app(1);
    rec(d, 'v', 0, 'RUNNING', 'g0');
    d.extraInstances = [{ instance: 'B', version: 'v', reason: 'Instance mismatch, actual: B, desired: g0' }];
    expect(analyze(d, 110)).toEqual([]);
    expect(d.extraInstances).toEqual([]);
  });
});
