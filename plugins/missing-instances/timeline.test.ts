/**
 * The Ruby HM's "silently lost instance" timeline, driven through the four analysis rules in the
 * order of the ruby-hm preset (extra-app → missing-instances → extra-instances → droplet-gc), on
 * whole seconds. Heartbeats are applied to the record directly, as the heartbeat bookkeeping would.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { createDroplet, getInstance, setDesiredState, type Droplet } from '../../src/sdk/droplets.js';
import type { EventDecision, EventPolicyStage } from '../../src/sdk/events.js';
import type { PluginDefinition } from '../../src/sdk/plugin.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import dropletGc from '../droplet-gc/index.js';
import extraApp from '../extra-app/index.js';
import extraInstances from '../extra-instances/index.js';
import missingInstances from './index.js';

const T0 = 1_700_000_000_000;
const at = (s: number) => T0 + s * 1000;
const env = { desiredAvailable: true, busConnected: true, random: () => 0.5 };

async function stage(def: PluginDefinition): Promise<EventPolicyStage> {
  const data = {};
  expect(makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(def.optionsSchema, data)).toEqual([]);
  return (await def.create(data, makeStageContext({ id: def.name, kind: 'policy' }).ctx)) as EventPolicyStage;
}

function beat(d: Droplet, index: number, guid: string, state: 'STARTING' | 'RUNNING', s: number): void {
  const r = getInstance(d, index, 'v');
  r.state = state;
  r.guid = guid;
  r.lastHeartbeatMs = at(s);
  r.guidStream = [...r.guidStream, guid].slice(-3);
}

const startOf = (running: number): EventDecision => ({
  kind: 'request',
  request: { op: 'START', droplet: 'app-a', lastUpdated: 1375308000, version: 'v', running: { v: running }, indices: [1], flapping: false },
  delivery: { queue: 1000 },
  reason: 'MISSING',
  log: 'instance is missing',
  facts: { index: 1, instance_state: running === 2 ? 'RUNNING' : 'DOWN', last_heartbeat_ms: at(45), desired_instances: 2 },
});

/**
 * App A: 2 instances of v, STARTED and STAGED, reported by the bulk API at 1, 61, 121, 181;
 * index 0 (guid a) beats every 10 s from 5; index 1 (guid b) until 45, then its agent dies
 * silently. With `restartAt`, a new instance c of index 1 beats STARTING then RUNNING from then on.
 */
async function run(until: number, restartAt?: number) {
  const policies = [await stage(extraApp), await stage(missingInstances), await stage(extraInstances), await stage(dropletGc)];
  const d = createDroplet('app-a', at(1));
  const decided = new Map<number, EventDecision[]>();
  const b = () => getInstance(d, 1, 'v');
  const states = new Map<number, string>();
  for (let s = 1; s <= until; s++) {
    if (s % 60 === 1)
      setDesiredState(
        d,
        { guid: 'app-a', version: 'v', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' },
        at(s),
      );
    if (s % 10 === 5) {
      beat(d, 0, 'a', 'RUNNING', s);
      if (s <= 45) beat(d, 1, 'b', 'RUNNING', s);
      if (restartAt !== undefined && s >= restartAt) beat(d, 1, 'c', s === restartAt ? 'STARTING' : 'RUNNING', s);
    }
    if (s % 20 === 0) {
      const out = policies.flatMap((p) => p.handle({ event: { kind: 'analyze', app: d.id }, droplet: d, now: at(s), env }));
      if (out.length) decided.set(s, out);
      states.set(s, `${b().state}@${String(b().stateTimestamp)}`);
    }
  }
  return { d, decided, states };
}

describe('a silently lost instance (Ruby HM timeline)', () => {
  it('first start at 80 still counts the lost instance (running {v:2}); the one at 120 does not; c then keeps index 1', async () => {
    const { d, decided, states } = await run(240, 125);
    expect([...decided]).toEqual([
      [80, [startOf(2)]],
      [120, [startOf(1)]],
    ]);
    // b is marked DOWN only after the start was built, at the 80 s pass.
    expect(states.get(60)).toBe(`RUNNING@${at(1) / 1000}`); // stamped DOWN at creation (t = 1), never changed by this test's beats
    expect(states.get(80)).toBe(`DOWN@${at(80) / 1000}`);
    expect(getInstance(d, 1, 'v')).toMatchObject({ guid: 'c', state: 'RUNNING', lastHeartbeatMs: at(235) });
    expect(d.resetTimestampMs).toBe(at(120));
  });

  it('if the instance never comes back, the start is repeated every 40 s', async () => {
    const { decided } = await run(240);
    expect([...decided]).toEqual([
      [80, [startOf(2)]],
      [120, [startOf(1)]],
      [160, [startOf(1)]],
      [200, [startOf(1)]],
      [240, [startOf(1)]],
    ]);
  });

  it('without bulk appearances after 1 s, the app becomes an extra app at the 200 s pass, before the missing start', async () => {
    const policies = [await stage(extraApp), await stage(missingInstances), await stage(extraInstances), await stage(dropletGc)];
    const d = createDroplet('app-a', at(1));
    setDesiredState(d, { guid: 'app-a', version: 'v', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, at(1));
    beat(d, 0, 'a', 'RUNNING', 195);
    d.resetTimestampMs = at(160);
    const out = policies.flatMap((p) => p.handle({ event: { kind: 'analyze', app: d.id }, droplet: d, now: at(200), env }));
    expect(out.map((o) => (o.kind === 'request' ? `${o.request.op}:${o.reason}:${JSON.stringify(o.request.running)}` : o.kind))).toEqual([
      'STOP:EXTRA_APP:{"v":1}',
      'START:MISSING:{"v":1}',
    ]);
  });
});
