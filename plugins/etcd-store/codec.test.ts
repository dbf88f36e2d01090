/** Agent deltas as written in etcd: the rows between a record and a heartbeat, and back. */
import { describe, expect, it } from 'vitest';
import type { InstanceHeartbeat } from '../../src/sdk/state.js';
import { instance } from '../../test/store-contract.js';
import { applyDelta, decodeAgentDelta, decodeDesiredChunk, diffInstances, encodeAgentDelta, encodeDesiredApp, joinDesiredChunk } from './codec.js';

const record: InstanceHeartbeat[] = [0, 1, 2, 3].map((i) => ({ ...instance('dea-1', `app-${i % 2}`, i), ccPartition: 'default' }));

describe('agent deltas', () => {
  it('are the changed states, timestamps and indices by position, in the record’s order, whatever the heartbeat’s order', () => {
    const next = [record[0]!, { ...record[1]!, state: 'CRASHED', stateTimestamp: 5 }, record[2]!, { ...record[3]!, index: 9 }];
    expect(diffInstances(record, next)).toEqual({
      rows: [
        [1, 'CRASHED', 5],
        [3, 'RUNNING', 1_700_000_000, 9],
      ],
    });
    expect(diffInstances(record, [...next].reverse())).toEqual(diffInstances(record, next));
    expect(diffInstances(record, record)).toEqual({ rows: [] });
    expect(applyDelta('dea-1', record, diffInstances(record, next)!)).toEqual(next);
  });

  it('carry the instances gone and added: a restart under a new guid, a stop, a move to another app, version, agent or partition', () => {
    const restarted = { ...instance('dea-1', 'app-1', 7), index: 1, state: 'STARTING', ccPartition: 'default' };
    const next = [record[0]!, restarted, record[2]!, { ...record[3]!, state: 'CRASHED' }];
    const changes = diffInstances(record, next)!;
    expect(changes).toEqual({ rows: [[3, 'CRASHED', 1_700_000_000]], removed: [1], added: [restarted] });
    const merged = applyDelta('dea-1', record, changes);
    expect(merged).toEqual([record[0], record[2], { ...record[3], state: 'CRASHED' }, restarted]);
    // Unchanged instances stay the record's very objects.
    expect(merged[0]).toBe(record[0]);
    expect(diffInstances(record, record.slice(1))).toEqual({ rows: [], removed: [0] });
    for (const moved of [
      { ...record[0]!, ccPartition: 'other' },
      { ...record[0]!, app: 'app-9' },
      { ...record[0]!, agent: 'dea-2' },
    ]) {
      const d = diffInstances(record, [moved, ...record.slice(1)])!;
      expect(d).toEqual({ rows: [], removed: [0], added: [moved] });
      expect(applyDelta('dea-1', record, d)).toEqual([...record.slice(1), moved]);
    }
  });

  it('are not possible when a guid is not unique', () => {
    // The same guid twice in the record: positions are ambiguous once the order differs.
    const twice = [record[0]!, { ...record[1]!, instance: record[0]!.instance }];
    expect(diffInstances(twice, [...twice].reverse())).toBeUndefined();
    expect(diffInstances(record, [...record, { ...record[0]!, state: 'CRASHED' }])).toBeUndefined();
  });

  it('round-trip through their JSON, additions with their apps and partitions, and a bad one is refused', () => {
    const delta = { base: 42, vouchedUntil: 1_000_090_000, rows: [[1, 'CRASHED', 5] as [number, string, number]] };
    expect(encodeAgentDelta('dea-1', delta)).toBe('{"b":42,"x":1000090000,"i":[[1,"CRASHED",5]]}');
    expect(decodeAgentDelta('dea-1', encodeAgentDelta('dea-1', delta))).toEqual(delta);
    const added = [
      { ...instance('dea-1', 'app-7', 3), ccPartition: 'default' },
      { ...instance('dea-2', 'app-7', 4), state: 'STARTING' },
    ];
    const full = { ...delta, removed: [0, 2], added };
    const text = encodeAgentDelta('dea-1', full);
    expect(JSON.parse(text)).toMatchObject({ r: [0, 2], p: [['app-7', 'v1']] });
    expect(decodeAgentDelta('dea-1', text)).toEqual(full);
    // Only what is written: the writer's merged instances stay with the writer.
    expect(decodeAgentDelta('dea-1', encodeAgentDelta('dea-1', { ...delta, merged: record }))).toEqual(delta);
    expect(() => decodeAgentDelta('dea-1', '{"b":42,"x":1,"i":[[-1,"CRASHED",5]]}')).toThrow(/delta of agent dea-1: bad row/);
    expect(() => decodeAgentDelta('dea-1', '{"x":1,"i":[]}')).toThrow(/missing b, x or i/);
    expect(() => decodeAgentDelta('dea-1', '{"b":1,"x":1,"i":[],"r":[1.5]}')).toThrow(/bad removed positions/);
    expect(() => decodeAgentDelta('dea-1', '{"b":1,"x":1,"i":[],"a":[[0,"g",0,"RUNNING",1]]}')).toThrow(/missing p or i/);
    expect(() => decodeAgentDelta('dea-1', '{"b":1,"x":1,"i":[],"p":[],"a":[[0,"g",0,"RUNNING",1]]}')).toThrow(/bad instance row/);
    expect(() => applyDelta('dea-1', record, { rows: [[4, 'CRASHED', 5]] })).toThrow(/row for position 4 of a record of 4 instances/);
    expect(() => applyDelta('dea-1', record, { rows: [], removed: [4] })).toThrow(/removes position 4 of a record of 4 instances/);
    expect(() => applyDelta('dea-1', record.slice(0, 1), { rows: [], removed: [4] })).toThrow(/removes position 4 of a record of 1 instance$/);
  });
});

describe('desired rows', () => {
  it('keep updatedAt and memory, either without the other', () => {
    const apps = [
      { guid: 'a', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED' },
      { guid: 'b', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2024-01-01T00:00:00Z' },
      { guid: 'c', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED', memory: 256 },
      { guid: 'd', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2024-01-01T00:00:00Z', memory: 1024 },
    ];
    expect(decodeDesiredChunk('0', joinDesiredChunk(apps.map(encodeDesiredApp)))).toEqual(apps);
  });
});
