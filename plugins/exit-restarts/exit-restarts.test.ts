/**
 * exit-restarts: DEA_SHUTDOWN / DEA_EVACUATION exits restart the index at high priority (spec
 * ruby-hm §3.3, §9.3), after droplet-records has marked the instance down.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { DropletRegistry, getInstance, setDesiredState, type Droplet } from '../../src/pipeline/droplets.js';
import type { EventDecision, EventEnv, EventPolicyStage, ExitEvent } from '../../src/pipeline/events.js';
import { dedupeKey, RequestQueue } from '../../src/pipeline/request-queue.js';
import { stageSummary } from '../../src/pipeline/stage-summary.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import { DEFAULT_DROPLET_RECORDS, DropletRecords } from '../droplet-records/index.js';
import { DEFAULT_FLAPPING, Flapping } from '../flapping/index.js';
import plugin, { exitRestart } from './index.js';

const T0 = 1_700_000_000_000;
const env: EventEnv = { desiredAvailable: true, busConnected: true, random: () => 0.5 };

function app(id: string, instances: number, desired = true): Droplet {
  const d = new DropletRegistry().get(id, T0);
  if (desired) setDesiredState(d, { guid: id, version: 'v', instances, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, T0);
  return d;
}

const exitOf = (d: Droplet, reason: string, index: number, instance = `i${index}`, version = 'v'): ExitEvent => ({ kind: 'exit', app: d.id, version, instance, index, reason, crashTimestamp: T0 / 1000 });

describe('exit-restarts (§3.3)', () => {
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

  it('no flapping and no desired-state check: a FLAPPING record of an app still waiting for its desired state is restarted too', () => {
    const d = app('C', 0, false);
    getInstance(d, 0, 'v').state = 'FLAPPING';
    expect(exitRestart(d, exitOf(d, 'DEA_SHUTDOWN', 0), { priority: 7 })).toMatchObject([{ delivery: { queue: 7 }, request: { version: null, lastUpdated: null, indices: [0] } }]);
  });

  it('other, bad or unknown reasons start nothing', () => {
    const d = app('C', 1);
    for (const reason of ['CRASHED', 'STOPPED', 'BOGUS', '', 'dea_evacuation']) expect(exitRestart(d, exitOf(d, reason, 0), { priority: 1_000_000 })).toEqual([]);
  });
});

describe('§9.3 a DEA evacuation, through the three policies in preset order', () => {
  it('index 2 marked DOWN, grace restarted at 300, START [2] queued HIGH, taken before NORMAL and LOW starts', async () => {
    const t = makeStageContext({ id: 'policies', startMs: T0 });
    const d = app('C', 3);
    const exitStage = await plugin.create({ priority: 1_000_000 }, t.ctx);
    const stages: EventPolicyStage[] = [new DropletRecords(DEFAULT_DROPLET_RECORDS, t.ctx), new Flapping(DEFAULT_FLAPPING, t.ctx), exitStage as EventPolicyStage];
    const run = (event: Parameters<EventPolicyStage['handle']>[0]['event']): EventDecision[] =>
      stages.filter((s) => s.events.includes(event.kind)).flatMap((s) => s.handle({ event, droplet: d, now: t.clock.now(), env }));

    t.clock.advance(290_000);
    run({ kind: 'heartbeat', app: 'C', agent: 'dea', beat: { app: 'C', version: 'v', instance: 'g2', index: 2, state: 'RUNNING', stateTimestamp: 1, agent: 'dea' } });
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
    expect(data).toEqual({ priority: 1_000_000 });
    expect(v.validate(plugin.optionsSchema, { priority: 'high' })).toHaveLength(1);
    expect(v.validate(plugin.optionsSchema, { reasons: [] })).toHaveLength(1);
    expect(stageSummary({ id: 'evacuation', kind: 'policy', plugin: 'exit-restarts', options: data })).toBe(
      'evacuation: exit-restarts: restarts instances of agents that shut down or evacuate, queue priority 1000000',
    );
  });
});
