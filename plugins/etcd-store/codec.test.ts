/** Agent deltas as written in etcd: the rows between a record and a heartbeat, and back. */
import { describe, expect, it } from 'vitest';
import type { InstanceHeartbeat } from '../../src/pipeline/store.js';
import { instance } from '../../test/store-contract.js';
import { applyDelta, decodeAgentDelta, decodeDesiredChunk, diffInstances, encodeAgentDelta, encodeDesiredApp, joinDesiredChunk } from './codec.js';

const record: InstanceHeartbeat[] = [0, 1, 2, 3].map((i) => ({ ...instance('dea-1', `app-${i % 2}`, i), ccPartition: 'default' }));

describe('agent deltas', () => {
  it('are the changed states, timestamps and indices by position, in the record’s order, whatever the heartbeat’s order', () => {
    const next = [record[0]!, { ...record[1]!, state: 'CRASHED', stateTimestamp: 5 }, record[2]!, { ...record[3]!, index: 9 }];
    expect(diffInstances(record, next)).toEqual([
      [1, 'CRASHED', 5],
      [3, 'RUNNING', 1_700_000_000, 9],
    ]);
    expect(diffInstances(record, [...next].reverse())).toEqual(diffInstances(record, next));
    expect(diffInstances(record, record)).toEqual([]);
    expect(applyDelta('dea-1', record, diffInstances(record, next)!)).toEqual(next);
  });

  it('are not possible when the instances are not the same ones', () => {
    expect(diffInstances(record, record.slice(1))).toBeUndefined();
    expect(diffInstances(record, [...record.slice(1), instance('dea-1', 'app-0', 7)])).toBeUndefined();
    expect(diffInstances(record, [{ ...record[0]!, ccPartition: 'other' }, ...record.slice(1)])).toBeUndefined();
    expect(diffInstances(record, [{ ...record[0]!, app: 'app-9' }, ...record.slice(1)])).toBeUndefined();
    expect(diffInstances(record, [{ ...record[0]!, agent: 'dea-2' }, ...record.slice(1)])).toBeUndefined();
    // The same guid twice in the record: positions are ambiguous once the order differs.
    const twice = [record[0]!, { ...record[1]!, instance: record[0]!.instance }];
    expect(diffInstances(twice, [...twice].reverse())).toBeUndefined();
  });

  it('round-trip through their JSON, and a bad one is refused', () => {
    const delta = { base: 42, vouchedUntil: 1_000_090_000, rows: [[1, 'CRASHED', 5] as [number, string, number]] };
    expect(encodeAgentDelta(delta)).toBe('{"b":42,"x":1000090000,"i":[[1,"CRASHED",5]]}');
    expect(decodeAgentDelta('dea-1', encodeAgentDelta(delta))).toEqual(delta);
    expect(() => decodeAgentDelta('dea-1', '{"b":42,"x":1,"i":[[-1,"CRASHED",5]]}')).toThrow(/delta of agent dea-1: bad row/);
    expect(() => decodeAgentDelta('dea-1', '{"x":1,"i":[]}')).toThrow(/missing b, x or i/);
    expect(() => applyDelta('dea-1', record, [[4, 'CRASHED', 5]])).toThrow(/row for position 4 of a record of 4 instances/);
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
