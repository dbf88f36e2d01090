import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { loadPlugin } from '../../src/pipeline/plugin-loader.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { createDroplet, type Droplet } from '../../src/sdk/droplets.js';
import type { AppEvent, EventDecision } from '../../src/sdk/events.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin from './index.js';

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;
const env = { desiredAvailable: true, busConnected: true, random: () => 0.5 };

function options(raw: Record<string, unknown>) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  expect(problems.map((p) => p.message)).toEqual([]);
  return data as Parameters<typeof plugin.create>[0];
}

async function setup(raw: Record<string, unknown> = {}) {
  const t = makeStageContext({ id: 'gc', kind: 'policy' });
  const stage = await plugin.create(options(raw), t.ctx);
  const on = (kind: 'analyze' | 'sweep', d: Droplet, s: number): EventDecision[] =>
    stage.handle({ event: { kind, app: d.id } as AppEvent, droplet: d, now: at(s), env });
  return { ...t, stage, on };
}

describe('droplet-gc', () => {
  it('is the built-in policy "droplet-gc", every option described, with a start-up line', async () => {
    const { definition } = await loadPlugin('droplet-gc', process.cwd());
    expect([definition.name, definition.kind]).toEqual(['droplet-gc', 'policy']);
    const props = (definition.optionsSchema as unknown as { properties: Record<string, { description?: string }> }).properties;
    for (const [key, prop] of Object.entries(props)) expect(prop.description, key).toMatch(/\S/);
    expect(
      stageSummary({
        id: 'gc',
        kind: 'policy',
        plugin: 'droplet-gc',
        definition: plugin,
        options: { flapping_timeout: 500_000, droplet_gc: 300_000, droplet_gc_grace_period: 240_000 },
      }),
    ).toBe('gc: droplet-gc: drops crash records after 8m20s, forgets apps absent for 4m every 5m');
  });

  it('options: the Ruby defaults, in ms; sweeps every droplet_gc', async () => {
    expect(options({})).toEqual({ flapping_timeout: 500_000, droplet_gc: 300_000, droplet_gc_grace_period: 240_000 });
    const { stage } = await setup({ droplet_gc: '5m' });
    expect(stage.events).toEqual(['analyze', 'sweep', 'walk']);
    expect(stage.everyMs).toBe(300_000);
    expect((await setup({ droplet_gc: 7 })).stage.everyMs).toBe(7000);
  });

  it('analysis end: crash records older than flapping_timeout (strictly) are dropped, the rest kept', async () => {
    const { on } = await setup();
    const d = createDroplet('app-a', at(0));
    d.crashes.set('g1', { timestampMs: at(0), crashTimestamp: 1 });
    d.crashes.set('g2', { timestampMs: at(100), crashTimestamp: 2 });
    expect(on('analyze', d, 500)).toEqual([]);
    expect([...d.crashes.keys()]).toEqual(['g1', 'g2']);
    expect(on('analyze', d, 501)).toEqual([]);
    expect([...d.crashes.keys()]).toEqual(['g2']);
    // A CRASHED heartbeat refreshing the record keeps it.
    d.crashes.set('g2', { timestampMs: at(550), crashTimestamp: 2 });
    expect(on('analyze', d, 601)).toEqual([]);
    expect([...d.crashes.keys()]).toEqual(['g2']);
    expect(on('analyze', d, 1051)).toEqual([]);
    expect(d.crashes.size).toBe(0);
  });

  it('a sweep does not touch crash records, and an analysis never forgets', async () => {
    const { on } = await setup();
    const d = createDroplet('app-a', at(0));
    d.crashes.set('g1', { timestampMs: at(0), crashTimestamp: 1 });
    expect(on('sweep', d, 600)).toEqual([{ kind: 'forget' }]);
    expect(d.crashes.size).toBe(1);
    expect(on('analyze', d, 600)).toEqual([]);
  });

  it('sweep: an app absent from the bulk API for more than the grace period (strictly) is forgotten', async () => {
    const { on, logs } = await setup();
    const d = createDroplet('app-a', at(0));
    expect(on('sweep', d, 240)).toEqual([]);
    expect(on('sweep', d, 241)).toEqual([{ kind: 'forget' }]);
    expect(logs.map((l) => l.msg)).toEqual(['forgetting app-a: not in the desired state for more than 240s']);
    // A bulk appearance (heartbeats do not count) keeps it.
    d.desiredUpdateMs = at(200);
    expect(on('sweep', d, 300)).toEqual([]);
    expect(on('sweep', d, 441)).toEqual([{ kind: 'forget' }]);
  });
});

describe('apps a completed walk did not see (older design)', () => {
  it('forgets every record whose app the walk did not report, and nothing on a walk that reports no list', async () => {
    const { DropletRegistry } = await import('../../src/sdk/droplets.js');
    const { dropletGcRule: rule } = await import('./index.js');
    const { pino } = await import('pino');
    const records = new DropletRegistry();
    for (const id of ['a', 'b', 'c']) records.get(id, 0);
    const o = { flapping_timeout: 500_000, droplet_gc: 300_000, droplet_gc_grace_period: 240_000 };
    const env = { desiredAvailable: true, busConnected: true, random: () => 0.5 };
    const logger = pino({ level: 'silent' });
    const walk = (seen?: string[]) =>
      rule({ event: { kind: 'walk', phase: 'done', ...(seen ? { seen } : {}) }, droplet: undefined, now: 1, env } as never, o, logger, records);
    expect(walk(['b'])).toEqual([{ kind: 'forget', apps: ['a', 'c'] }]);
    expect(walk()).toEqual([]);
    expect(walk(['a', 'b', 'c'])).toEqual([]);
  });
});
