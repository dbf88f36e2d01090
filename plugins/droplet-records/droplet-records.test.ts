/**
 * droplet-records: the Ruby HM's instance records (docs/ruby-hm.md#duplicate-guids with all its
 * examples, #exits, #app-updates, #heartbeats-in-the-older-design, #the-older-design), on a virtual clock.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { DropletRegistry, getInstance, setDesiredState, type Droplet } from '../../src/sdk/droplets.js';
import type { AppEvent, EventDecision, EventEnv } from '../../src/sdk/events.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin, { DEFAULT_DROPLET_RECORDS, DropletRecords, extraInstanceGuidToPrune, type DropletRecordsConfig } from './index.js';

const T0 = 1_700_000_000_000;
const env: EventEnv = { desiredAvailable: true, busConnected: true, random: () => 0.5 };
const OLDER: DropletRecordsConfig = { duplicates: 'instance-mismatch', heartbeat_stop_list: 'kept-until-analysis', exit_markdown: 'state-only' };

function setup(o: DropletRecordsConfig = DEFAULT_DROPLET_RECORDS, desired = true) {
  const t = makeStageContext({ id: 'records', startMs: T0 });
  const stage = new DropletRecords(o, t.ctx);
  const registry = new DropletRegistry();
  const d = registry.get('app', T0);
  if (desired)
    setDesiredState(d, { guid: 'app', version: 'v', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, T0);
  const run = (event: AppEvent): EventDecision[] => stage.handle({ event, droplet: d, now: t.clock.now(), env });
  const beat = (instance: string, state = 'RUNNING', index = 0, version = 'v', stateTimestamp = 1_375_300_000) =>
    run({ kind: 'heartbeat', app: 'app', agent: 'dea-1', beat: { app: 'app', version, instance, index, state, stateTimestamp, agent: 'dea-1' } });
  const exit = (instance: string, reason: string, index = 0, version = 'v') =>
    run({ kind: 'exit', app: 'app', version, instance, index, reason, crashTimestamp: 1_375_300_100 });
  return { t, d, run, beat, exit };
}

/** The instance guids of each STOP, per decision list. */
const stopped = (ds: EventDecision[]) =>
  ds.flatMap((x) => (x.kind === 'request' && x.request.op === 'STOP' ? [x.request.instances!.map((i) => i.instance)] : []));

/** Feeds running beats (one letter = one beat) and returns the guid stopped by the last one, if any. */
function lastPrune(beats: string): string | null {
  const s = setup();
  let last: EventDecision[] = [];
  for (const g of beats) last = s.beat(g);
  const list = stopped(last);
  return list.length === 0 ? null : list[0]!.join(',');
}

describe('duplicate guids at one index, docs/ruby-hm.md#duplicate-guids (guid stream, the last 3 running beats)', () => {
  it('α α β → none', () => expect(lastPrune('aab')).toBeNull());
  it('α α β β → stop α', () => expect(lastPrune('aabb')).toBe('a'));
  it('…β γ γ → stop β', () => expect(lastPrune('abcc')).toBe('b'));
  it('α α β α → stop β, and the kept guid is α', () => {
    expect(lastPrune('aaba')).toBe('b');
    const s = setup();
    for (const g of 'aaba') s.beat(g);
    expect(getInstance(s.d, 0, 'v').guid).toBe('a');
  });
  it('α α β β → stop α, and the kept guid is β', () => {
    const s = setup();
    for (const g of 'aab') expect(s.beat(g)).toEqual([]);
    expect(stopped(s.beat('b'))).toEqual([['a']]);
    expect(getInstance(s.d, 0, 'v').guid).toBe('b');
  });

  it('the prune rule itself: fewer than 3 → none; keeps only the last 3', () => {
    const s = setup();
    const inst = getInstance(s.d, 0, 'v');
    inst.guid = 'c';
    inst.guidStream = ['a', 'b'];
    expect(extraInstanceGuidToPrune(inst)).toBeNull();
    inst.guidStream = ['x', 'x', 'a', 'b', 'c'];
    expect(extraInstanceGuidToPrune(inst)).toBe('a');
    expect(inst.guidStream).toEqual(['a', 'b', 'c']);
  });

  it('the STOP goes out at once, DUPLICATE, with the running map and the beat version', () => {
    const s = setup();
    for (const g of 'aab') s.beat(g);
    const [d] = s.beat('b');
    expect(d).toMatchObject({
      kind: 'request',
      delivery: 'now',
      reason: 'DUPLICATE',
      log: 'Instance mismatch, pruning: a',
      request: { op: 'STOP', droplet: 'app', version: 'v', lastUpdated: 1_375_308_000, instances: [{ instance: 'a', version: 'v' }], running: { v: 2 } },
    });
  });

  it('start-then-crash cycles do not produce stops: CRASHED beats take their guid out of the stream', () => {
    const s = setup();
    const all: EventDecision[] = [];
    for (const [g, st] of [
      ['a', 'STARTING'],
      ['a', 'RUNNING'],
      ['a', 'CRASHED'],
      ['b', 'STARTING'],
      ['b', 'RUNNING'],
      ['b', 'CRASHED'],
      ['c', 'STARTING'],
      ['c', 'RUNNING'],
      ['c', 'RUNNING'],
    ] as const)
      all.push(...s.beat(g, st));
    expect(all).toEqual([]);
    expect(getInstance(s.d, 0, 'v').guidStream).toEqual(['c', 'c', 'c']);
  });

  it('exits take the guid out: an evacuated guid followed by a new one stops nothing', () => {
    const s = setup();
    s.beat('a');
    s.beat('a');
    s.exit('a', 'DEA_EVACUATION');
    expect([...s.beat('b'), ...s.beat('b')]).toEqual([]);
  });

  it('with a state-only mark-down the evacuated guid stays in the stream and is stopped', () => {
    const s = setup({ ...DEFAULT_DROPLET_RECORDS, exit_markdown: 'state-only' });
    s.beat('a');
    s.beat('a');
    s.exit('a', 'DEA_EVACUATION');
    expect(s.beat('b')).toEqual([]);
    expect(stopped(s.beat('b'))).toEqual([['a']]);
  });

  it('the list is cleared per beat: the next beat of another index sends nothing again', () => {
    const s = setup();
    for (const g of 'aab') s.beat(g);
    expect(stopped(s.beat('b'))).toEqual([['a']]);
    expect(s.beat('z', 'RUNNING', 1)).toEqual([]);
    expect(s.d.extraInstances).toEqual([]);
  });

  it('while the app waits for its desired state the stop is only logged (docs/ruby-hm.md#heartbeats)', () => {
    const s = setup(DEFAULT_DROPLET_RECORDS, false);
    for (const g of 'aab') s.beat(g);
    expect(s.beat('b')).toEqual([]);
    expect(s.d.extraInstances).toEqual([{ instance: 'a', version: 'v', reason: 'Instance mismatch, pruning: a' }]);
    expect(s.t.logs.some((l) => /extra instances ignored/.test(String(l.msg)))).toBe(true);
  });
});

describe('what a beat writes (docs/ruby-hm.md#heartbeats)', () => {
  it('a running beat refreshes heartbeat time, guid, state and agent state time', () => {
    const s = setup();
    s.t.clock.advance(5_000);
    s.beat('a', 'STARTING', 1, 'v', 1_375_300_005.5);
    expect(getInstance(s.d, 1, 'v')).toMatchObject({
      lastHeartbeatMs: T0 + 5_000,
      guid: 'a',
      state: 'STARTING',
      stateTimestamp: 1_375_300_005.5,
      guidStream: ['a'],
    });
  });

  it('a record is created at the beat version (old versions included), DOWN until a running beat', () => {
    const s = setup();
    s.beat('x', 'CRASHED', 3, 'old');
    expect(s.d.versions.get('old')!.get(3)).toMatchObject({ state: 'DOWN', guid: null, lastHeartbeatMs: null });
  });

  it('a non-running beat changes no state; a CRASHED one writes (and refreshes) the crash record', () => {
    const s = setup();
    s.beat('a');
    s.beat('a', 'CRASHED', 0, 'v', 1_375_300_050);
    expect(getInstance(s.d, 0, 'v')).toMatchObject({ state: 'RUNNING', guidStream: [] });
    expect(s.d.crashes.get('a')).toEqual({ timestampMs: T0, crashTimestamp: 1_375_300_050 });
    s.t.clock.advance(10_000);
    s.beat('a', 'CRASHED', 0, 'v', 1_375_300_050);
    expect(s.d.crashes.get('a')!.timestampMs).toBe(T0 + 10_000);
    s.beat('b', 'EVACUATING');
    expect(s.d.crashes.size).toBe(1);
  });
});

describe('the older design (docs/ruby-hm.md#heartbeats-in-the-older-design): instance mismatch, the list kept until analysis', () => {
  it('an intruding guid B is stopped on every beat, the list piling up: ["B"], ["B","B"], … and ["B"] after analysis', () => {
    const s = setup(OLDER);
    expect(s.beat('A')).toEqual([]);
    const record = { ...getInstance(s.d, 0, 'v'), guidStream: [] };
    s.t.clock.advance(1_000);
    expect(stopped(s.beat('B'))).toEqual([['B']]);
    s.t.clock.advance(1_000);
    expect(stopped(s.beat('B'))).toEqual([['B', 'B']]);
    expect(stopped(s.beat('B'))).toEqual([['B', 'B', 'B']]);
    // The RUNNING record keeps its guid and is not refreshed by B's beats.
    expect(getInstance(s.d, 0, 'v')).toMatchObject({ guid: 'A', lastHeartbeatMs: record.lastHeartbeatMs, state: 'RUNNING' });
    s.d.extraInstances = []; // the app's analysis (update_extra_instances) starts the list again
    expect(stopped(s.beat('B'))).toEqual([['B']]);
  });

  it('every entry of the app publishes the list as it stands after that entry, whatever its index', () => {
    const s = setup(OLDER);
    s.beat('A');
    s.beat('C', 'RUNNING', 1);
    const first = s.beat('B');
    const second = s.beat('C', 'RUNNING', 1);
    expect(stopped(first)).toEqual([['B']]);
    expect(stopped(second)).toEqual([['B']]);
    expect(first[0]).toMatchObject({ reason: 'DUPLICATE', log: 'Instance mismatch, actual: B, desired: A' });
  });

  it('analysis extras left in the list are re-sent by every entry (reason EXTRA)', () => {
    const s = setup(OLDER);
    s.beat('A');
    s.d.extraInstances.push({ instance: 'E', version: 'v', reason: 'Extra instance' });
    const [d] = s.beat('A');
    expect(d).toMatchObject({ reason: 'EXTRA', request: { instances: [{ instance: 'E', version: 'v' }] } });
  });

  it('a STARTING record is simply overwritten by another guid', () => {
    const s = setup(OLDER);
    s.beat('A', 'STARTING');
    expect(s.beat('B', 'RUNNING')).toEqual([]);
    expect(getInstance(s.d, 0, 'v')).toMatchObject({ guid: 'B', state: 'RUNNING', guidStream: [] });
  });

  it('CRASHED beats add crash records; other states only create the record', () => {
    const s = setup(OLDER);
    s.beat('A');
    s.beat('A', 'CRASHED', 0, 'v', 1_375_300_070);
    expect(getInstance(s.d, 0, 'v').state).toBe('RUNNING');
    expect(s.d.crashes.get('A')).toEqual({ timestampMs: T0, crashTimestamp: 1_375_300_070 });
    s.beat('Q', 'EVACUATING', 4);
    expect(s.d.versions.get('v')!.get(4)).toMatchObject({ state: 'DOWN', guid: null });
  });
});

describe('exit mark-down (docs/ruby-hm.md#exits, #the-older-design) and the grace reset', () => {
  it('guid match: out of the stream, DOWN, state time = HM seconds; heartbeat time kept', () => {
    const s = setup();
    s.beat('a');
    s.beat('b');
    s.t.clock.advance(7_400);
    expect(s.exit('b', 'CRASHED')).toEqual([]);
    expect(getInstance(s.d, 0, 'v')).toMatchObject({ state: 'DOWN', stateTimestamp: Math.floor((T0 + 7_400) / 1000), guidStream: ['a'], lastHeartbeatMs: T0 });
  });

  it('another guid: nothing changes', () => {
    const s = setup();
    s.beat('a');
    s.exit('zzz', 'CRASHED');
    expect(getInstance(s.d, 0, 'v')).toMatchObject({ state: 'RUNNING', guidStream: ['a'] });
  });

  it('the message version is looked up (and created)', () => {
    const s = setup();
    s.exit('a', 'STOPPED', 2, 'old');
    expect(s.d.versions.get('old')!.get(2)).toMatchObject({ state: 'DOWN', guid: null });
  });

  it('the older design: DOWN only, state time kept', () => {
    const s = setup(OLDER);
    s.beat('A', 'RUNNING', 0, 'v', 1_375_300_001);
    s.t.clock.advance(60_000);
    s.exit('A', 'CRASHED');
    expect(getInstance(s.d, 0, 'v')).toMatchObject({ state: 'DOWN', stateTimestamp: 1_375_300_001 });
  });

  it('STOPPED, DEA_SHUTDOWN and DEA_EVACUATION restart the missing-check grace; CRASHED does not', () => {
    for (const reason of ['STOPPED', 'DEA_SHUTDOWN', 'DEA_EVACUATION']) {
      const s = setup();
      s.t.clock.advance(40_000);
      s.exit('a', reason);
      expect(s.d.resetTimestampMs).toBe(T0 + 40_000);
    }
    const s = setup();
    s.t.clock.advance(40_000);
    s.exit('a', 'CRASHED');
    expect(s.d.resetTimestampMs).toBe(T0);
  });

  it('bad or unknown reasons do nothing but the mark-down', () => {
    for (const reason of ['BOGUS', '', 'crashed']) {
      const s = setup();
      s.beat('a');
      s.t.clock.advance(40_000);
      expect(s.exit('a', reason)).toEqual([]);
      expect(s.d.resetTimestampMs).toBe(T0);
      expect(getInstance(s.d, 0, 'v').state).toBe('DOWN');
      expect(s.d.desiredUpdateRequired).toBe(false);
    }
  });
});

describe('droplet.updated (docs/ruby-hm.md#app-updates)', () => {
  it('restarts the grace, marks the app update-required and asks for a desired-state refresh', () => {
    const s = setup();
    s.t.clock.advance(12_000);
    expect(s.run({ kind: 'updated', app: 'app' })).toEqual([{ kind: 'refresh-desired' }]);
    expect(s.d).toMatchObject({ resetTimestampMs: T0 + 12_000, desiredUpdateRequired: true } satisfies Partial<Droplet>);
  });
});

describe('droplet-records options', () => {
  const validate = (raw: Record<string, unknown>) => {
    const data = { ...raw };
    const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
    return { problems: problems.map((p) => p.message), data };
  };

  it('defaults to the Ruby HM at its last commit', () => {
    expect(validate({}).data).toEqual(DEFAULT_DROPLET_RECORDS);
  });

  it('rejects unknown keys and values', () => {
    expect(validate({ duplicates: 'both' }).problems).toHaveLength(1);
    expect(validate({ droplet_lost: 30 }).problems).toHaveLength(1);
  });

  it('declares its events and says what it does in the start-up log', async () => {
    const t = makeStageContext({ id: 'records' });
    const stage = await plugin.create(validate({}).data as unknown as DropletRecordsConfig, t.ctx);
    expect([...(stage as DropletRecords).events]).toEqual(['heartbeat', 'exit', 'updated']);
    expect(
      stageSummary({ id: 'records', kind: 'policy', plugin: 'droplet-records', definition: plugin, options: OLDER as unknown as Record<string, unknown> }),
    ).toBe(
      'records: droplet-records: instance records from heartbeats and exits; duplicates by instance-mismatch, stop list kept-until-analysis, exit mark-down state-only',
    );
  });
});
