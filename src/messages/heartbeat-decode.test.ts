/**
 * The fast heartbeat decoder against the generic one (JSON.parse + the schema): on generated and
 * hand-picked input both must accept the same messages with the same values for every field hmgate
 * reads, and drop the others for the same reason. And the per-agent reuse: unchanged instances come
 * back as the very same objects.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeDecoder as makeGenericDecoder, MAX_MESSAGE_BYTES } from './decode.js';
import { makeMessageDecoder as makeDecoder, makeHeartbeatDecoder } from './heartbeat-decode.js';
import { DropletExitedMessage, HeartbeatMessage, MESSAGE_LIMITS } from './schemas.js';

const encoder = new TextEncoder();
const generic = makeGenericDecoder(HeartbeatMessage);

const FIELDS = ['droplet', 'version', 'instance', 'index', 'state', 'state_timestamp', 'cc_partition'] as const;

/** What hmgate reads of a decode: ok and the read fields, or the drop reason. */
function essence(d: ReturnType<typeof generic>): unknown {
  if (!d.ok) return { ok: false, reason: d.reason };
  return {
    ok: true,
    dea: d.value.dea,
    droplets: d.value.droplets.map((x) => Object.fromEntries(FIELDS.filter((f) => x[f] !== undefined).map((f) => [f, x[f]]))),
  };
}

function agree(bytes: Uint8Array, fast = makeHeartbeatDecoder()): void {
  const want = essence(generic(bytes));
  const got = essence(fast(bytes));
  expect(got, new TextDecoder().decode(bytes).slice(0, 300)).toEqual(want);
  // Object.is: -0 and 0 differ for the timestamp too.
  if (want && (want as { ok: boolean }).ok) {
    const w = (want as { droplets: Record<string, unknown>[] }).droplets;
    const g = (got as { droplets: Record<string, unknown>[] }).droplets;
    w.forEach((d, i) => expect(Object.is(d.state_timestamp, g[i]!.state_timestamp)).toBe(true));
  }
}

const droplet = (i: number, o: Record<string, unknown> = {}) => ({
  cc_partition: 'default',
  droplet: `app-${Math.floor(i / 10)}-9f0e2d4c-5b6a-4f1e-8d2c-1a3b5c7d9e0f`,
  version: '3c1e7a52-91d8-4b2f-a1c3-0d9e8f7a6b5c',
  instance: `inst-${i}-6e8a0c2f4b1d4e9a`,
  index: i % 10,
  state: 'RUNNING',
  state_timestamp: 1_700_000_000.3,
  ...o,
});
const beat = (dea: string, droplets: unknown[], extra: Record<string, unknown> = {}) => encoder.encode(JSON.stringify({ droplets, dea, ...extra }));

describe('fast heartbeat decoder', () => {
  it('is what makeDecoder gives for heartbeats only', () => {
    const hb = makeDecoder(HeartbeatMessage) as unknown as { stats?: unknown };
    expect(hb.stats).toEqual({ fast: 0, generic: 0 });
    expect((makeDecoder(DropletExitedMessage) as unknown as { stats?: unknown }).stats).toBeUndefined();
  });

  it('takes the fast path for a DEA heartbeat and agrees with the generic decoder', () => {
    const fast = makeHeartbeatDecoder();
    const bytes = beat(
      'dea-1',
      Array.from({ length: 100 }, (_, i) => droplet(i)),
      { prod: false },
    );
    agree(bytes, fast);
    expect(fast.stats).toEqual({ fast: 1, generic: 0 });
  });

  it('agrees on hand-picked edge cases, valid and not', () => {
    const ok = droplet(1);
    const cases: (string | Uint8Array)[] = [
      '',
      ' ',
      '{}',
      '[]',
      'null',
      '{"dea":"d","droplets":[]}',
      ' \n\t{ "dea" : "d" , "droplets" : [ ] } \r\n',
      '{"dea":"d","droplets":[]}x',
      '{"dea":"d","droplets":[],}',
      '{"dea":"","droplets":[]}',
      '{"dea":"d"}',
      '{"droplets":[]}',
      '{"dea":"d","droplets":{}}',
      '{"dea":"d","droplets":[null]}',
      '{"dea":"d","droplets":[{}]}',
      '{"dea":"d","dea":"e","droplets":[]}',
      '{"dea":7,"dea":"e","droplets":[]}',
      '{"dea":"d\\u0065","droplets":[]}',
      '{"d\\u0065a":"d","droplets":[]}',
      '{"dea":"d","droplets":[],"x":{"a":[1,2,{"b":null}],"c":true,"d":false,"e":"\\n\\"\\/\\u00e9"}}',
      '{"dea":"d","droplets":[],"x":"\\x"}',
      '{"dea":"d","droplets":[],"x":"\\u12g4"}',
      '{"dea":"d","droplets":[],"x":tru}',
      '{"dea":"d","droplets":[],"x":01}',
      '{"dea":"d","droplets":[],"x":1.}',
      '{"dea":"d","droplets":[],"x":.5}',
      '{"dea":"d","droplets":[],"x":+1}',
      '{"dea":"d","droplets":[],"x":-}',
      '{"dea":"d","droplets":[],"x":1e}',
      '{"dea":"d","droplets":[],"x":"a\tb"}',
      '{"dea":"dé","droplets":[]}',
      new Uint8Array([0xef, 0xbb, 0xbf, ...encoder.encode('{"dea":"d","droplets":[]}')]),
      new Uint8Array([...encoder.encode('{"dea":"d'), 0xff, ...encoder.encode('","droplets":[]}')]),
    ];
    const withField = (k: string, raw: string) => {
      const parts = Object.entries(ok)
        .filter(([f]) => f !== k)
        .map(([f, v]) => `${JSON.stringify(f)}:${JSON.stringify(v)}`);
      parts.push(`${JSON.stringify(k)}:${raw}`);
      return `{"dea":"d","droplets":[{${parts.join(',')}}]}`;
    };
    for (const raw of ['0', '7', '007', '-1', '-0', '1.0', '1.5', '1e2', '1E+2', '123456789012345', '1234567890123456789', '"1"', 'null', 'true', '[]'])
      cases.push(withField('index', raw));
    for (const raw of [
      '0',
      '-0',
      '-0.0',
      '1700000000.3',
      '1700000000.25',
      '0.1',
      '1e3',
      '1.5e-7',
      '1e400',
      '-1e400',
      '123456789012345678901234',
      '0.1234567890123456789',
      '12345678901234.5',
      '"1"',
      'null',
    ]) {
      cases.push(withField('state_timestamp', raw));
    }
    for (const k of ['droplet', 'instance']) for (const raw of ['""', '7', 'null', '"a\\"b"', '"ü"']) cases.push(withField(k, raw));
    for (const k of ['version', 'state', 'cc_partition']) for (const raw of ['""', '7', 'null', '"x"', '{}']) cases.push(withField(k, raw));
    cases.push(withField('index', '1').replace('"index":1', '"index":"x","index":1'));
    cases.push(withField('extra', '{"nested":[1,"two",{"three":3}]}'));
    cases.push(`{"dea":"d","droplets":[${JSON.stringify(ok)}],"padding":"${'p'.repeat(MAX_MESSAGE_BYTES)}"}`);
    for (const c of cases) agree(typeof c === 'string' ? encoder.encode(c) : c);
  });

  it('holds the schema bounds: a value at its bound takes the fast path, one past it is dropped as the generic decoder drops it', () => {
    const L = MESSAGE_LIMITS;
    const fast = makeHeartbeatDecoder();
    const base = Array.from({ length: 20 }, (_, i) => droplet(i));
    // Heard first, so what follows arrives as a change to a message the decoder remembers.
    expect(fast(beat('dea-1', base)).ok).toBe(true);
    const check = (bytes: Uint8Array, want: string, what: string) => {
      const before = fast.stats.fast;
      const got = fast(bytes);
      expect(got.ok ? 'ok' : got.reason, what).toBe(want);
      expect(fast.stats.fast - before, `${what}: fast path`).toBe(want === 'ok' ? 1 : 0);
      expect(essence(got), what).toEqual(essence(generic(bytes)));
    };
    const fields: [string, number][] = [
      ['droplet', L.guid],
      ['version', L.guid],
      ['instance', L.guid],
      ['state', L.state],
      ['cc_partition', L.cc_partition],
    ];
    for (const [field, max] of fields) {
      for (const over of [0, 1]) {
        const droplets = base.map((d, i) => (i === 7 ? { ...d, [field]: 'x'.repeat(max + over) } : d));
        check(beat('dea-1', droplets), over ? 'too_long' : 'ok', `${field} of ${max + over} characters`);
      }
    }
    check(beat('d'.repeat(L.agentId), base), 'ok', `dea of ${L.agentId} characters`);
    check(beat('d'.repeat(L.agentId + 1), base), 'too_long', `dea of ${L.agentId + 1} characters`);
    check(beat('d'.repeat(900_000), base), 'too_long', 'dea of 900 000 characters');
    const many = (n: number) =>
      Array.from({ length: n }, (_, i) => ({ droplet: 'a', version: 'v', instance: `i-${i}`, index: i, state: 'RUNNING', state_timestamp: 1 }));
    check(beat('dea-2', many(L.instancesPerAgent)), 'ok', `${L.instancesPerAgent} entries`);
    check(beat('dea-2', many(L.instancesPerAgent + 1)), 'too_many', `${L.instancesPerAgent + 1} entries`);
    // Past a bound in characters, not bytes: 128 two-byte characters are 128 (the generic decoder's judgement).
    expect(fast(beat('dea-3', [droplet(0, { droplet: 'é'.repeat(L.guid) })])).ok).toBe(true);
    expect(fast(beat('dea-3', [droplet(0, { droplet: 'é'.repeat(L.guid + 1) })]))).toMatchObject({ ok: false, reason: 'too_long' });
  });

  it(`agrees with the generic decoder on generated input`, () => {
    // Strings either side of each bound too.
    const nearBounds = [MESSAGE_LIMITS.state, MESSAGE_LIMITS.cc_partition, MESSAGE_LIMITS.guid].flatMap((n) => ['x'.repeat(n), 'x'.repeat(n + 1)]);
    const str = fc.oneof(
      fc.constantFrom('a', 'v1', 'RUNNING', 'default', ''),
      fc.string({ maxLength: 8 }),
      fc.string({ unit: 'binary', maxLength: 4 }),
      fc.constantFrom(...nearBounds),
    );
    const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-0, 0.5, 1700000000.3, 1e21, 1e-7, 2 ** 53 + 1));
    const value = fc.oneof(str, num, fc.boolean(), fc.constant(null), fc.array(fc.integer(), { maxLength: 2 }));
    const dropletArb = fc.dictionary(
      fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 4 })),
      fc.oneof({ weight: 3, arbitrary: fc.oneof(str, num) }, value),
      { maxKeys: 9 },
    );
    const validish = fc.record({
      droplet: fc.oneof(fc.constantFrom('app-a', 'app-b'), str),
      version: str,
      instance: fc.oneof(fc.constantFrom('i-0', 'i-1'), str),
      index: fc.oneof(fc.nat(20), num),
      state: str,
      state_timestamp: num,
    });
    const message = fc.record(
      {
        dea: fc.oneof({ weight: 5, arbitrary: fc.constantFrom('dea-0', 'dea-1') }, { weight: 1, arbitrary: value }),
        droplets: fc.oneof({ weight: 5, arbitrary: fc.array(fc.oneof(validish, dropletArb), { maxLength: 5 }) }, { weight: 1, arbitrary: value }),
      },
      { requiredKeys: [] },
    );
    // One decoder across runs, so reuse between messages of the same agent is exercised too.
    const fast = makeHeartbeatDecoder({ agentsPerGeneration: 2 });
    fc.assert(
      fc.property(message, fc.nat(3), fc.boolean(), (m, spaces, reorder) => {
        const pad = ' '.repeat(spaces);
        const obj = reorder ? { droplets: m.droplets, dea: m.dea } : m;
        agree(encoder.encode(JSON.stringify(obj, null, spaces ? pad : undefined)), fast);
      }),
      { numRuns: 3_000 },
    );
    expect(fast.stats.fast).toBeGreaterThan(100);
    expect(fast.stats.generic).toBeGreaterThan(100);
  });

  it('returns the same objects for what an agent reported before, also around an instance added or removed', () => {
    const fast = makeHeartbeatDecoder();
    const list = Array.from({ length: 20 }, (_, i) => droplet(i));
    const first = fast(beat('dea-7', list));
    const again = fast(beat('dea-7', list));
    if (!first.ok || !again.ok) throw new Error('not decoded');
    expect(again.value.droplets).toBe(first.value.droplets);
    expect(Object.isFrozen(first.value.droplets[0])).toBe(true);

    // One instance changes state: a new array, the other 19 objects the same, its strings reused.
    const changed = list.map((d, i) => (i === 5 ? { ...d, state: 'CRASHED' } : d));
    const third = fast(beat('dea-7', changed));
    if (!third.ok) throw new Error('not decoded');
    expect(third.value.droplets).not.toBe(first.value.droplets);
    third.value.droplets.forEach((d, i) => (i === 5 ? expect(d).not.toBe(first.value.droplets[5]) : expect(d).toBe(first.value.droplets[i])));
    expect(third.value.droplets[5]!.state).toBe('CRASHED');
    expect(third.value.droplets[5]!.droplet).toBe(first.value.droplets[5]!.droplet);

    // One removed, then one added in the middle: every other instance is the object it was.
    const removed = changed.filter((_, i) => i !== 3);
    const fourth = fast(beat('dea-7', removed));
    if (!fourth.ok) throw new Error('not decoded');
    const before = new Map(third.value.droplets.map((d) => [d.instance, d]));
    for (const d of fourth.value.droplets) expect(d).toBe(before.get(d.instance));
    const added = [...removed.slice(0, 10), droplet(99), ...removed.slice(10)];
    const fifth = fast(beat('dea-7', added));
    if (!fifth.ok) throw new Error('not decoded');
    fifth.value.droplets.forEach((d, i) =>
      i === 10 ? expect(d.instance).toBe(droplet(99).instance) : expect(d).toBe(fourth.value.droplets[i < 10 ? i : i - 1]),
    );

    // Another order: the same values, read again.
    const reversed = fast(beat('dea-7', [...added].reverse()));
    if (!reversed.ok) throw new Error('not decoded');
    expect(reversed.value.droplets).toEqual([...fifth.value.droplets].reverse());

    // Another agent with the same instances does not get the first agent's array.
    const other = fast(beat('dea-8', added));
    if (!other.ok) throw new Error('not decoded');
    expect(other.value.droplets).not.toBe(fifth.value.droplets);
    expect(other.value.droplets).toEqual(fifth.value.droplets);
    expect(fast.stats.generic).toBe(0);
  });

  it('agrees with the generic decoder on heartbeats that change little from one to the next', () => {
    // The remembered-bytes paths: unchanged runs, changed droplets, an added or removed one, a
    // changed tail (dea, extra keys), whitespace; each message checked against the generic decoder.
    const fast = makeHeartbeatDecoder();
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('state' as const), at: fc.nat(), state: fc.constantFrom('RUNNING', 'CRASHED', 'STARTING', 'x"y', 'é') }),
      fc.record({ kind: fc.constant('remove' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('add' as const), at: fc.nat(), i: fc.nat(1000) }),
      fc.record({ kind: fc.constant('ts' as const), at: fc.nat(), ts: fc.oneof(fc.double({ noNaN: true }), fc.integer()) }),
      fc.record({ kind: fc.constant('index' as const), at: fc.nat(), index: fc.oneof(fc.nat(30), fc.constant(-1)) }),
      fc.record({
        kind: fc.constant('tail' as const),
        extra: fc.oneof(fc.constant(undefined), fc.jsonValue({ maxDepth: 1 })),
        dea: fc.constantFrom('dea-1', 'dea-2', ''),
      }),
      fc.record({ kind: fc.constant('order' as const), deaFirst: fc.boolean(), spaces: fc.boolean() }),
    );
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 25 }), (edits) => {
        fast.clear();
        let list: Record<string, unknown>[] = Array.from({ length: 8 }, (_, i) => droplet(i));
        let tail: { dea: string; extra?: unknown } = { dea: 'dea-1' };
        let order = { deaFirst: false, spaces: false };
        const send = () => {
          const body = order.deaFirst
            ? { dea: tail.dea, droplets: list, ...(tail.extra === undefined ? {} : { extra: tail.extra }) }
            : { droplets: list, dea: tail.dea, ...(tail.extra === undefined ? {} : { extra: tail.extra }) };
          agree(encoder.encode(JSON.stringify(body, null, order.spaces ? 1 : undefined)), fast);
        };
        send();
        for (const e of edits) {
          const at = list.length ? ('at' in e ? e.at % list.length : 0) : 0;
          if (e.kind === 'state' && list.length) list = list.map((d, i) => (i === at ? { ...d, state: e.state } : d));
          if (e.kind === 'ts' && list.length) list = list.map((d, i) => (i === at ? { ...d, state_timestamp: e.ts } : d));
          if (e.kind === 'index' && list.length) list = list.map((d, i) => (i === at ? { ...d, index: e.index } : d));
          if (e.kind === 'remove') list = list.filter((_, i) => i !== at);
          if (e.kind === 'add') list = [...list.slice(0, at), droplet(e.i), ...list.slice(at)];
          if (e.kind === 'tail') tail = { dea: e.dea, extra: e.extra };
          if (e.kind === 'order') order = e;
          send();
          send();
        }
      }),
      { numRuns: 400 },
    );
    expect(fast.stats.fast).toBeGreaterThan(1_000);
  });

  it('forgets agents not heard from for a whole generation', () => {
    const fast = makeHeartbeatDecoder({ agentsPerGeneration: 2 });
    const list = [droplet(0)];
    const a = fast(beat('dea-a', list));
    for (const id of ['dea-b', 'dea-c', 'dea-d', 'dea-e']) fast(beat(id, list));
    const a2 = fast(beat('dea-a', list));
    if (!a.ok || !a2.ok) throw new Error('not decoded');
    expect(a2.value.droplets).not.toBe(a.value.droplets);
    expect(a2.value.droplets).toEqual(a.value.droplets);
  });
});
