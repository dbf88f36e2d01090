import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { loadPlugin } from '../../src/pipeline/plugin-loader.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { createDroplet, getInstance, setDesiredState, type Droplet, type RecordState } from '../../src/sdk/droplets.js';
import type { EventDecision, EventEnv } from '../../src/sdk/events.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin from './index.js';

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;
const LAST_UPDATED = 1375308000;
const env = (over: Partial<EventEnv> = {}): EventEnv => ({ desiredAvailable: true, busConnected: true, random: () => 0.5, ...over });

function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  expect(problems.map((p) => p.message)).toEqual([]);
  return data as Parameters<typeof plugin.create>[0];
}

async function setup(raw: Record<string, unknown> = {}) {
  const t = makeStageContext({ id: 'extra_app', kind: 'policy' });
  const stage = await plugin.create(options(raw), t.ctx);
  const analyze = (d: Droplet, s: number, e: EventEnv = env()): EventDecision[] =>
    stage.handle({ event: { kind: 'analyze', app: d.id }, droplet: d, now: at(s), env: e });
  return { ...t, stage, analyze };
}

/** Reported by the bulk API at second `s` (live version v2), and not since. */
function app(s = 0): Droplet {
  const d = createDroplet('app-a', at(s));
  setDesiredState(d, { guid: 'app-a', version: 'v2', instances: 3, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, at(s));
  return d;
}

function rec(d: Droplet, version: string, index: number, state: RecordState, guid: string | null): void {
  const r = getInstance(d, index, version);
  r.state = state;
  r.guid = guid;
  r.lastHeartbeatMs = guid ? at(170) : null;
  r.guidStream = state === 'RUNNING' && guid ? [guid] : [];
}

/** An old-version RUNNING instance, a STARTING, a CRASHED, a DOWN one never heard from. */
function mixed(d: Droplet): Droplet {
  rec(d, 'v1', 0, 'RUNNING', 'a');
  rec(d, 'v2', 0, 'STARTING', 'b');
  rec(d, 'v2', 1, 'CRASHED', 'c');
  rec(d, 'v2', 2, 'DOWN', null);
  return d;
}

const stop = (instances: { instance: string | null; version: string | null }[], running: Record<string, number>, s: number, since = 0): EventDecision => ({
  kind: 'request',
  request: { op: 'STOP', droplet: 'app-a', lastUpdated: LAST_UPDATED, version: 'v2', running, instances },
  delivery: 'now',
  reason: 'EXTRA_APP',
  log: 'not in the desired state for more than 180s',
  facts: { instances: instances.map((i) => ({ ...i, reason: 'Extra app' })), desired_update_age_ms: (s - since) * 1000 },
});

describe('extra-app', () => {
  it('is the built-in policy "extra-app", every option described, with a start-up line', async () => {
    const { definition } = await loadPlugin('extra-app', process.cwd());
    expect([definition.name, definition.kind]).toEqual(['extra-app', 'policy']);
    const props = (definition.optionsSchema as unknown as { properties: Record<string, { description?: string }> }).properties;
    for (const [key, prop] of Object.entries(props)) expect(prop.description, key).toMatch(/\S/);
    expect(
      stageSummary({ id: 'extra_app', kind: 'policy', plugin: 'extra-app', definition: plugin, options: { desired_state_lost: 180_000, instances: 'live' } }),
    ).toBe('extra_app: extra-app: stops apps absent from the desired state for 3m');
  });

  it('options: 180 s, live instances', () => {
    expect(options({})).toEqual({ desired_state_lost: 180_000, instances: 'live' });
  });

  it('stopped once absent from the bulk API for more than desired_state_lost (strictly), then on every pass', async () => {
    const { analyze, stage } = await setup();
    expect(stage.events).toEqual(['analyze']);
    const d = mixed(app(0));
    expect(analyze(d, 160)).toEqual([]);
    expect(analyze(d, 180)).toEqual([]);
    const live = [
      { instance: 'a', version: 'v1' },
      { instance: 'b', version: 'v2' },
    ];
    // With 20 s ticks the first stop comes at 200; nothing is pruned by this rule.
    expect(analyze(d, 181)).toEqual([stop(live, { v1: 1, v2: 0 }, 181)]);
    expect(analyze(d, 200)).toEqual([stop(live, { v1: 1, v2: 0 }, 200)]);
    expect(analyze(d, 220)).toEqual([stop(live, { v1: 1, v2: 0 }, 220)]);
    expect([...d.versions.get('v2')!.keys()]).toEqual([0, 1, 2]);
  });

  it('a bulk appearance postpones it', async () => {
    const { analyze } = await setup();
    const d = mixed(app(0));
    d.desiredUpdateMs = at(100);
    expect(analyze(d, 200)).toEqual([]);
    expect(analyze(d, 281)).toEqual([
      stop(
        [
          { instance: 'a', version: 'v1' },
          { instance: 'b', version: 'v2' },
        ],
        { v1: 1, v2: 0 },
        281,
        100,
      ),
    ]);
  });

  it('not while desired state is unavailable; not held back by a pending desired-state update', async () => {
    const { analyze } = await setup();
    const d = mixed(app(0));
    expect(analyze(d, 200, env({ desiredAvailable: false }))).toEqual([]);
    d.desiredUpdateRequired = true;
    expect(analyze(d, 200)).toHaveLength(1);
  });

  it('sent even with no live instance to name (the Cloud Controller stops an app it does not know)', async () => {
    const { analyze } = await setup();
    const d = app(0);
    rec(d, 'v2', 0, 'CRASHED', 'c');
    expect(analyze(d, 200)).toEqual([stop([], { v2: 0 }, 200)]);
    expect(analyze(createDroplet('app-a', at(0)), 200)).toEqual([
      {
        ...stop([], {}, 200),
        request: { op: 'STOP', droplet: 'app-a', lastUpdated: null, version: null, running: {}, instances: [] },
      },
    ]);
  });

  it('live: a guid in two records is named once, in the first place', async () => {
    const { analyze } = await setup();
    const d = app(0);
    rec(d, 'v1', 0, 'RUNNING', 'g');
    rec(d, 'v2', 0, 'RUNNING', 'h');
    rec(d, 'v2', 1, 'STARTING', 'g');
    expect(analyze(d, 200)).toEqual([
      stop(
        [
          { instance: 'g', version: 'v2' },
          { instance: 'h', version: 'v2' },
        ],
        { v1: 1, v2: 1 },
        200,
      ),
    ]);
  });

  it('all-records: every record of every version in any state, null for one never heard from', async () => {
    const { analyze } = await setup({ instances: 'all-records' });
    const d = mixed(app(0));
    expect(analyze(d, 200)).toEqual([
      stop(
        [
          { instance: 'a', version: 'v1' },
          { instance: 'b', version: 'v2' },
          { instance: 'c', version: 'v2' },
          { instance: null, version: 'v2' },
        ],
        { v1: 1, v2: 0 },
        200,
      ),
    ]);
  });

  it('all-records: sent with an empty list when the app has no record', async () => {
    const { analyze } = await setup({ instances: 'all-records' });
    expect(analyze(app(0), 200)).toEqual([stop([], {}, 200)]);
  });
});
