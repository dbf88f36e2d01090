/**
 * The generic decoder and the bounds of every inbound message: each string and list hmgate reads
 * passes at its bound and is dropped one past it, with a reason of its own (too_long, too_many).
 */
import { describe, expect, it } from 'vitest';
import { makeDecoder } from './decode.js';
import { DeaAdvertiseMessage, DropletExitedMessage, DropletUpdatedMessage, MESSAGE_LIMITS as L, MESSAGE_SCHEMAS } from './schemas.js';

const reasonOf = (d: { ok: boolean; reason?: string }) => (d.ok ? 'ok' : d.reason);

/** A message at a bound and one past it: the first passes, the second is dropped with `reason`. */
function bounds(decode: (s: string) => { ok: boolean; reason?: string }, make: (n: number) => unknown, max: number, reason: string, what: string): void {
  expect(reasonOf(decode(JSON.stringify(make(max)))), `${what} at ${max}`).toBe('ok');
  expect(reasonOf(decode(JSON.stringify(make(max + 1)))), `${what} at ${max + 1}`).toBe(reason);
}

describe('message bounds', () => {
  it('droplet.exited: app guid, version, instance, reason, description and partition', () => {
    const decode = makeDecoder(DropletExitedMessage);
    const exit = {
      cc_partition: 'default',
      droplet: 'app',
      version: 'v1',
      instance: 'i-1',
      index: 1,
      reason: 'CRASHED',
      exit_status: 2,
      exit_description: 'oom',
      crash_timestamp: 3,
    };
    for (const [field, max] of [
      ['droplet', L.guid],
      ['version', L.guid],
      ['instance', L.guid],
      ['reason', L.state],
      ['exit_description', L.exitDescription],
      ['cc_partition', L.cc_partition],
    ] as const) {
      bounds(decode, (n) => ({ ...exit, [field]: 'x'.repeat(n) }), max, 'too_long', field);
    }
  });

  it('droplet.updated: app guid and partition', () => {
    const decode = makeDecoder(DropletUpdatedMessage);
    bounds(decode, (n) => ({ droplet: 'x'.repeat(n) }), L.guid, 'too_long', 'droplet');
    bounds(decode, (n) => ({ droplet: 'app', cc_partition: 'x'.repeat(n) }), L.cc_partition, 'too_long', 'cc_partition');
  });

  it('dea.advertise: id, app guids and their number, stacks, zone', () => {
    const decode = makeDecoder(DeaAdvertiseMessage);
    const ad = {
      id: 'dea-1',
      stacks: ['lucid64'],
      available_memory: 1024,
      available_disk: 2048,
      app_id_to_count: { app: 1 },
      placement_properties: { zone: 'z1' },
    };
    bounds(decode, (n) => ({ ...ad, id: 'x'.repeat(n) }), L.agentId, 'too_long', 'id');
    bounds(decode, (n) => ({ ...ad, app_id_to_count: { ['x'.repeat(n)]: 1 } }), L.guid, 'too_long', 'an app guid');
    bounds(
      decode,
      (n) => ({ ...ad, app_id_to_count: Object.fromEntries(Array.from({ length: n }, (_, i) => [`app-${i}`, 1])) }),
      L.instancesPerAgent,
      'too_many',
      'apps',
    );
    bounds(decode, (n) => ({ ...ad, stacks: ['x'.repeat(n)] }), L.stack, 'too_long', 'a stack');
    bounds(decode, (n) => ({ ...ad, stacks: Array.from({ length: n }, () => 's') }), L.stacks, 'too_many', 'stacks');
    bounds(decode, (n) => ({ ...ad, placement_properties: { zone: 'x'.repeat(n) } }), L.zone, 'too_long', 'zone');
    // Only id and app_id_to_count are required; fields it does not read may be anything.
    expect(reasonOf(decode('{"id":"dea-1","app_id_to_count":{},"prod":false,"extra":{"deep":[1]}}'))).toBe('ok');
    expect(decode(JSON.stringify({ ...ad, app_id_to_count: { ['x'.repeat(L.guid + 1)]: 1 } }))).toMatchObject({
      detail: '/app_id_to_count (a key) must NOT have more than 128 characters',
    });
  });

  it('every message schema is listed for schemas/messages', () => {
    expect(Object.keys(MESSAGE_SCHEMAS).sort()).toEqual(['dea-advertise', 'droplet-exited', 'droplet-updated', 'heartbeat']);
  });
});
