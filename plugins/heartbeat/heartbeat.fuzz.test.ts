/**
 * Generated input through the real decode path: valid heartbeats, structurally wrong JSON, random
 * bytes, text that is not UTF-8 and bodies around the 1 MiB limit. Nothing may throw, and no
 * invalid message may change the store. Strings and lists at their bound pass, one over it is
 * dropped. dea.advertise only ever touches actual freshness: with advertise_payload: ignored, any
 * payload bumps when HM9000 would; by default only a valid advertise naming no instance does, and
 * every other is dropped and counted or, naming instances, holds bumps back.
 */
import fc from 'fast-check';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { createLoggerFactory } from '../../src/log.js';
import { MAX_MESSAGE_BYTES } from '../../src/messages/decode.js';
import { MESSAGE_LIMITS } from '../../src/messages/schemas.js';
import type { Bus, BusMessage } from '../../src/sdk/bus.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { DropletRegistry } from '../../src/sdk/droplets.js';
import { FreshnessBoard } from '../../src/pipeline/freshness/board.js';
import type { StageContext } from '../../src/sdk/plugin.js';
import { MemoryStore } from '../memory-store/memory-store.js';
import heartbeatPlugin, { type HeartbeatSource } from './index.js';

/** The options as the plugin's create() receives them: validated, defaults filled. */
type HeartbeatOptions = Parameters<typeof heartbeatPlugin.create>[0];

const RUNS = 10_000;
const ACTUAL_TTL = 200;
const encoder = new TextEncoder();

class MemoryBus implements Bus {
  readonly connected = true;
  private readonly subs = new Map<string, ((msg: BusMessage) => void)[]>();
  subscribe(subject: string, handler: (msg: BusMessage) => void): () => void {
    const list = this.subs.get(subject) ?? [];
    list.push(handler);
    this.subs.set(subject, list);
    return () =>
      this.subs.set(
        subject,
        (this.subs.get(subject) ?? []).filter((h) => h !== handler),
      );
  }
  publish(subject: string, data: string | Uint8Array): void {
    const bytes = typeof data === 'string' ? encoder.encode(data) : data;
    for (const h of this.subs.get(subject) ?? []) h({ subject, data: bytes });
  }
  request(): Promise<BusMessage> {
    return Promise.reject(new Error('no requests here'));
  }
  async flush(): Promise<void> {}
}

// --- generators ---

type Sample = { kind: 'valid' | 'invalid'; data: Uint8Array; what: string };

const AGENTS = ['dea-0', 'dea-1', 'dea-2', 'dea-3', 'dea-4'];
const STATES = ['STARTING', 'RUNNING', 'CRASHED', 'EVACUATING'];

const nonEmpty = fc.string({ minLength: 1, maxLength: 12 });
const dropletArb = fc.record(
  {
    droplet: fc.oneof(fc.constantFrom('app-a', 'app-b', 'app-c'), nonEmpty),
    version: fc.oneof(fc.constantFrom('v1', 'v2'), nonEmpty),
    instance: fc.oneof(fc.constantFrom('i-0', 'i-1', 'i-2', 'i-3'), nonEmpty),
    index: fc.oneof(fc.nat(20), fc.maxSafeNat()),
    state: fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...STATES) }, { weight: 1, arbitrary: fc.string({ maxLength: 10 }) }),
    state_timestamp: fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.constantFrom(1123.25, 1123.75, 0.05)),
    cc_partition: fc.string({ maxLength: 8 }),
    extra: fc.oneof(fc.string({ maxLength: 6 }), fc.integer(), fc.constant(null), fc.constant({ nested: [1, 'two'] })),
  },
  { requiredKeys: ['droplet', 'version', 'instance', 'index', 'state', 'state_timestamp'] },
);
const heartbeatArb = fc.record({
  dea: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(...AGENTS) }, { weight: 1, arbitrary: nonEmpty }),
  droplets: fc.array(dropletArb, { maxLength: 6 }),
});
type Hb = { dea: unknown; droplets: unknown } & Record<string, unknown>;

/** A value of every JSON type but the one named. */
function wrongType(not: 'string' | 'integer' | 'number' | 'array' | 'object'): fc.Arbitrary<unknown> {
  const all: [string, fc.Arbitrary<unknown>][] = [
    ['string', fc.string({ maxLength: 6 })],
    ['number', fc.double({ noNaN: true, noDefaultInfinity: true })],
    ['boolean', fc.boolean()],
    ['null', fc.constant(null)],
    ['array', fc.array(fc.integer(), { maxLength: 3 })],
    ['object', fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 3 })],
  ];
  // An integer is a number too: for integer fields, only non-integral and negative numbers are wrong.
  const arbs = all.filter(([t]) => t !== not && !(not === 'integer' && t === 'number')).map(([, a]) => a);
  if (not === 'integer')
    arbs.push(
      fc.double({ noNaN: true, noDefaultInfinity: true }).filter((n) => !Number.isInteger(n)),
      fc.integer({ max: -1 }),
    );
  return fc.oneof(...arbs);
}

const DROPLET_FIELDS: [string, 'string' | 'integer' | 'number', boolean][] = [
  ['droplet', 'string', true],
  ['version', 'string', false],
  ['instance', 'string', true],
  ['index', 'integer', false],
  ['state', 'string', false],
  ['state_timestamp', 'number', false],
];

/** A valid heartbeat broken in exactly one way the schema forbids. */
const brokenArb: fc.Arbitrary<Sample> = fc
  .tuple(
    heartbeatArb.map(
      (h) =>
        ({
          ...h,
          droplets: h.droplets.length > 0 ? h.droplets : [{ droplet: 'a', version: 'v', instance: 'i', index: 0, state: 'RUNNING', state_timestamp: 1 }],
        }) as Hb,
    ),
    fc.nat(),
    fc.oneof(
      fc.constant({ kind: 'delete-dea' as const }),
      fc.constant({ kind: 'delete-droplets' as const }),
      fc.constant({ kind: 'empty-dea' as const }),
      wrongType('string').map((v) => ({ kind: 'dea' as const, v })),
      wrongType('array').map((v) => ({ kind: 'droplets' as const, v })),
      wrongType('object').map((v) => ({ kind: 'droplet-not-object' as const, v })),
      fc.constantFrom(...DROPLET_FIELDS).map(([field]) => ({ kind: 'delete-field' as const, field })),
      fc
        .constantFrom(...DROPLET_FIELDS)
        .chain(([field, type, nonEmptyString]) =>
          fc.oneof(wrongType(type), ...(nonEmptyString ? [fc.constant('')] : [])).map((v) => ({ kind: 'field' as const, field, v })),
        ),
      wrongType('string').map((v) => ({ kind: 'field' as const, field: 'cc_partition', v })),
    ),
  )
  .map(([hb, pick, how]) => {
    const m = structuredClone(hb) as Hb;
    const droplets = m.droplets as Record<string, unknown>[];
    const i = pick % droplets.length;
    switch (how.kind) {
      case 'delete-dea':
        delete m.dea;
        break;
      case 'delete-droplets':
        delete m.droplets;
        break;
      case 'empty-dea':
        m.dea = '';
        break;
      case 'dea':
        m.dea = how.v;
        break;
      case 'droplets':
        m.droplets = how.v;
        break;
      case 'droplet-not-object':
        droplets[i] = how.v as Record<string, unknown>;
        break;
      case 'delete-field':
        delete droplets[i]![how.field];
        break;
      case 'field':
        droplets[i]![how.field] = how.v;
        break;
    }
    return { kind: 'invalid' as const, data: encoder.encode(JSON.stringify(m)), what: `broken (${how.kind})` };
  });

const validArb: fc.Arbitrary<Sample> = fc
  .tuple(heartbeatArb, fc.option(fc.jsonValue({ maxDepth: 2 }), { nil: undefined }))
  .map(([hb, extra]) => ({ kind: 'valid' as const, data: encoder.encode(JSON.stringify(extra === undefined ? hb : { ...hb, extra })), what: 'valid' }));

const isHeartbeatShaped = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && ('dea' in v || 'droplets' in v);
const utf8 = new TextDecoder('utf-8', { fatal: true });
function parsesAsHeartbeatShape(bytes: Uint8Array): boolean {
  try {
    return isHeartbeatShaped(JSON.parse(utf8.decode(bytes)));
  } catch {
    return false;
  }
}

const otherJsonArb: fc.Arbitrary<Sample> = fc
  .jsonValue({ maxDepth: 3 })
  .filter((v) => !isHeartbeatShaped(v))
  .map((v) => ({ kind: 'invalid' as const, data: encoder.encode(JSON.stringify(v) ?? 'null'), what: 'other JSON value' }));

const bytesArb: fc.Arbitrary<Sample> = fc
  .uint8Array({ maxLength: 300 })
  .filter((b) => !parsesAsHeartbeatShape(b))
  .map((data) => ({ kind: 'invalid' as const, data, what: 'random bytes' }));

/** Valid JSON text of a heartbeat with one byte that can never occur in UTF-8. */
const notUtf8Arb: fc.Arbitrary<Sample> = fc.tuple(validArb, fc.nat(), fc.constantFrom(0xc0, 0xc1, 0xf5, 0xfe, 0xff)).map(([v, at, byte]) => {
  const data = new Uint8Array(v.data.byteLength + 1);
  const i = at % (v.data.byteLength + 1);
  data.set(v.data.subarray(0, i), 0);
  data[i] = byte;
  data.set(v.data.subarray(i), i + 1);
  return { kind: 'invalid' as const, data, what: 'not UTF-8' };
});

/** Built once: slices of these are cheap. */
const P_MB = 'p'.repeat(MAX_MESSAGE_BYTES + 128);
const X_BIG = 'x'.repeat(100_000);
const BACKSLASH_BIG = '\\'.repeat(100_000);

/** A valid heartbeat padded to just under or just over the limit. */
const hugeArb: fc.Arbitrary<Sample> = fc.tuple(heartbeatArb, fc.integer({ min: -64, max: 64 })).map(([hb, delta]) => {
  const base = encoder.encode(JSON.stringify({ ...hb, padding: '' })).byteLength;
  const padding = P_MB.slice(0, Math.max(0, MAX_MESSAGE_BYTES - base + delta));
  const data = encoder.encode(JSON.stringify({ ...hb, padding }));
  return { kind: data.byteLength > MAX_MESSAGE_BYTES ? ('invalid' as const) : ('valid' as const), data, what: 'near the size limit' };
});

/** Huge strings in the fields themselves (over their bounds) or garbage of that size. */
const bigFieldArb: fc.Arbitrary<Sample> = fc.tuple(heartbeatArb, fc.integer({ min: 10_000, max: 100_000 }), fc.boolean()).map(([hb, n, asGarbage]) => {
  if (asGarbage) return { kind: 'invalid' as const, data: encoder.encode(`"${BACKSLASH_BIG.slice(0, n)}`), what: 'huge garbage' };
  return { kind: 'invalid' as const, data: encoder.encode(JSON.stringify({ ...hb, dea: `dea-${X_BIG.slice(0, n)}` })), what: 'huge agent name' };
});

const L = MESSAGE_LIMITS;
const BOUNDED: [string, number][] = [
  ['droplet', L.guid],
  ['version', L.guid],
  ['instance', L.guid],
  ['state', L.state],
  ['cc_partition', L.cc_partition],
];

/** One string at its bound (valid) or one past it (invalid), in ASCII or in characters of two and four UTF-8 bytes. */
const atBoundArb: fc.Arbitrary<Sample> = fc
  .tuple(heartbeatArb, fc.constantFrom<[string, number]>(['dea', L.agentId], ...BOUNDED), fc.boolean(), fc.constantFrom('x', 'é', '😀'), fc.nat())
  .map(([hb, [field, max], over, char, pick]) => {
    const value = char.repeat(max + (over ? 1 : 0));
    const m = structuredClone(hb) as Hb;
    const droplets = m.droplets as Record<string, unknown>[];
    if (field === 'dea') m.dea = value;
    else if (droplets.length === 0)
      droplets.push({ droplet: 'a', version: 'v', instance: 'i', index: 0, state: 'RUNNING', state_timestamp: 1, [field]: value });
    else droplets[pick % droplets.length]![field] = value;
    return {
      kind: over ? ('invalid' as const) : ('valid' as const),
      data: encoder.encode(JSON.stringify(m)),
      what: `${field} of ${max + (over ? 1 : 0)} × ${char}`,
    };
  });

/** As many instance entries as a heartbeat may hold, or one more. */
const manyDropletsArb: fc.Arbitrary<Sample> = fc.boolean().map((over) => {
  const n = L.instancesPerAgent + (over ? 1 : 0);
  const droplets = Array.from({ length: n }, (_, i) => ({ droplet: 'a', version: 'v', instance: `i-${i}`, index: i, state: 'RUNNING', state_timestamp: 1 }));
  return {
    kind: over ? ('invalid' as const) : ('valid' as const),
    data: encoder.encode(JSON.stringify({ dea: 'dea-many', droplets })),
    what: `${n} instance entries`,
  };
});

const heartbeatSamples: fc.Arbitrary<Sample> = fc.oneof(
  { weight: 60, arbitrary: validArb },
  { weight: 60, arbitrary: brokenArb },
  { weight: 30, arbitrary: otherJsonArb },
  { weight: 30, arbitrary: bytesArb },
  { weight: 16, arbitrary: notUtf8Arb },
  { weight: 1, arbitrary: hugeArb },
  { weight: 1, arbitrary: bigFieldArb },
  { weight: 10, arbitrary: atBoundArb },
  { weight: 1, arbitrary: manyDropletsArb },
);

const advertiseSamples = fc.oneof(
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 200 }) },
  { weight: 4, arbitrary: fc.jsonValue({ maxDepth: 3 }).map((v) => encoder.encode(JSON.stringify(v) ?? '')) },
  { weight: 1, arbitrary: fc.constant(new Uint8Array(0)) },
  { weight: 1, arbitrary: fc.integer({ min: MAX_MESSAGE_BYTES - 8, max: MAX_MESSAGE_BYTES + 8 }).map((n) => new Uint8Array(n).fill(0xff)) },
);

type AdvertiseSample = { kind: 'empty' | 'busy' | 'invalid'; data: Uint8Array; what: string };

const advertiseAppsArb = fc.dictionary(fc.constantFrom('app-a', 'app-b', 'app-c'), fc.nat(3), { maxKeys: 3 });
const validAdvertiseArb: fc.Arbitrary<AdvertiseSample> = fc
  .record(
    {
      id: fc.oneof(fc.constantFrom(...AGENTS), nonEmpty),
      app_id_to_count: advertiseAppsArb,
      stacks: fc.array(fc.constantFrom('lucid64', 'cflinuxfs2'), { maxLength: 2 }),
      available_memory: fc.nat(),
      available_disk: fc.nat(),
      placement_properties: fc.record({ zone: fc.constantFrom('default', 'z1') }),
    },
    { requiredKeys: ['id', 'app_id_to_count'] },
  )
  .map((m) => {
    const busy = Object.values(m.app_id_to_count).some((n) => n > 0);
    return { kind: busy ? ('busy' as const) : ('empty' as const), data: encoder.encode(JSON.stringify(m)), what: `${busy ? 'busy' : 'empty'} advertise` };
  });

/** A valid advertise broken in one way: a wrong type, a missing key, a bound passed. */
const brokenAdvertiseArb: fc.Arbitrary<AdvertiseSample> = fc
  .tuple(
    validAdvertiseArb,
    fc.constantFrom(
      (m: Record<string, unknown>) => delete m.id,
      (m: Record<string, unknown>) => delete m.app_id_to_count,
      (m: Record<string, unknown>) => (m.id = ''),
      (m: Record<string, unknown>) => (m.id = 7),
      (m: Record<string, unknown>) => (m.id = 'd'.repeat(L.agentId + 1)),
      (m: Record<string, unknown>) => (m.app_id_to_count = { 'app-a': -1 }),
      (m: Record<string, unknown>) => (m.app_id_to_count = { 'app-a': 1.5 }),
      (m: Record<string, unknown>) => (m.app_id_to_count = [1]),
      (m: Record<string, unknown>) => (m.app_id_to_count = { ['a'.repeat(L.guid + 1)]: 0 }),
      (m: Record<string, unknown>) => (m.stacks = ['s'.repeat(L.stack + 1)]),
      (m: Record<string, unknown>) => (m.available_memory = 'lots'),
    ),
  )
  .map(([v, breakIt]) => {
    const m = JSON.parse(new TextDecoder().decode(v.data)) as Record<string, unknown>;
    breakIt(m);
    return { kind: 'invalid' as const, data: encoder.encode(JSON.stringify(m)), what: 'broken advertise' };
  });

const hasAdvertiseKeys = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && 'id' in v && 'app_id_to_count' in v;
const checkedAdvertiseSamples: fc.Arbitrary<AdvertiseSample> = fc.oneof(
  { weight: 4, arbitrary: validAdvertiseArb },
  { weight: 2, arbitrary: brokenAdvertiseArb },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 200 }).map((data) => ({ kind: 'invalid' as const, data, what: 'random bytes' })) },
  {
    weight: 2,
    arbitrary: fc
      .jsonValue({ maxDepth: 3 })
      .filter((v) => !hasAdvertiseKeys(v))
      .map((v) => ({ kind: 'invalid' as const, data: encoder.encode(JSON.stringify(v) ?? ''), what: 'other JSON value' })),
  },
);

// --- harness ---

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function harness(opts: Partial<HeartbeatOptions> = {}) {
  const clock = new VirtualClock(1_700_000_000_000);
  const store = new MemoryStore(clock);
  store.start();
  const bus = new MemoryBus();
  const metrics = new Registry();
  const logged: Record<string, any>[] = [];
  const loggers = createLoggerFactory({ foundation: 'fuzz', level: 'warn', destination: { write: (s: string) => void logged.push(JSON.parse(s)) } });
  const ctx: StageContext = {
    id: 'heartbeats',
    kind: 'source',
    foundation: 'fuzz',
    logger: loggers.component('heartbeats'),
    clock,
    heartbeatMs: 100,
    configDir: '/nonexistent',
    metrics,
    bus,
    store,
    freshness: new FreshnessBoard(() => clock.now(), ACTUAL_TTL, 1_000),
    isLeader: () => true,
    events: { emit: () => undefined, wants: () => false, droplets: new DropletRegistry() },
  };
  // A short presence TTL keeps the state small while time moves on.
  const stage = (await heartbeatPlugin.create(
    { subject: 'dea.heartbeat', advertise_subject: 'dea.advertise', sync_interval: 50, heartbeat_ttl: 500, cc_partition_filter: false, ...opts },
    ctx,
  )) as HeartbeatSource;
  await stage.start();
  cleanups.push(async () => {
    await stage.stop();
    store.stop();
  });
  const total = async (name: string) => ((await metrics.getSingleMetric(name)?.get())?.values ?? []).reduce((s, v) => s + v.value, 0);
  /**
   * Everything the store holds that a heartbeat could touch. The memory store publishes frozen
   * records and replaces them on every write — a renewed presence included — so the same records
   * by reference means nothing was written, which is stricter than equal contents.
   */
  const actualState = async (): Promise<unknown[]> => {
    const refs: unknown[] = [];
    for (const [agent, record] of await store.getAgents()) refs.push(agent, record);
    for (const [app, list] of (await store.snapshot()).instances) refs.push(app, list);
    return refs;
  };
  const sameState = (a: unknown[], b: unknown[]) => a.length === b.length && a.every((x, i) => x === b[i]);
  const marker = async () => JSON.stringify((await store.getFreshness('actual')) ?? null);
  return { clock, store, bus, stage, logged, total, actualState, sameState, marker };
}

describe('heartbeat source under generated input', () => {
  it(`survives ${RUNS} generated messages on dea.heartbeat; invalid ones change nothing`, async () => {
    const h = await harness();
    const seen = { valid: 0, invalid: 0 };
    await fc.assert(
      fc.asyncProperty(heartbeatSamples, fc.nat(40), async (sample, step) => {
        h.clock.advance(step);
        await h.stage.idle();
        const invalid = sample.kind === 'invalid';
        const before = invalid ? await h.actualState() : [];
        const markerBefore = invalid ? await h.marker() : '';
        h.bus.publish('dea.heartbeat', sample.data);
        await h.stage.syncNow();
        seen[sample.kind]++;
        if (invalid) {
          const after = await h.actualState();
          if (!h.sameState(before, after)) expect(after, `${sample.what} changed the store`).toEqual(before);
          const markerAfter = await h.marker();
          if (markerAfter !== markerBefore) expect(markerAfter, sample.what).toBe(markerBefore);
        }
        // Every invalid message is counted as dropped, and no valid one.
        const dropped = await h.total('hmgate_dropped_messages_total');
        if (dropped !== seen.invalid) expect(dropped, sample.what).toBe(seen.invalid);
        const received = await h.total('hmgate_heartbeats_received_total');
        if (received !== seen.valid) expect(received, sample.what).toBe(seen.valid);
      }),
      { numRuns: RUNS },
    );
    expect(seen.valid).toBeGreaterThan(RUNS / 5);
    expect(seen.invalid).toBeGreaterThan(RUNS / 2);
    expect(h.stage.health().healthy).toBe(true);
    expect(h.logged.filter((l) => l.level === 'error')).toEqual([]);
  });

  it(`survives ${RUNS} generated payloads on dea.advertise, which with advertise_payload: ignored only bump actual freshness as HM9000 does`, async () => {
    const h = await harness({ advertise_payload: 'ignored' });
    let lastHeartbeat: number | undefined;
    let bumps = 0;
    const beat = encoder.encode(
      JSON.stringify({ dea: 'dea-0', droplets: [{ droplet: 'a', version: 'v', instance: 'i', index: 0, state: 'RUNNING', state_timestamp: 1 }] }),
    );
    await fc.assert(
      fc.asyncProperty(advertiseSamples, fc.nat(ACTUAL_TTL), fc.nat(9), async (payload, step, roll) => {
        h.clock.advance(step);
        if (roll === 0) {
          h.bus.publish('dea.heartbeat', beat);
          lastHeartbeat = h.clock.now();
        }
        await h.stage.idle();
        const before = await h.actualState();
        const markerBefore = await h.marker();
        const due = lastHeartbeat === undefined || h.clock.now() - lastHeartbeat >= ACTUAL_TTL;
        h.bus.publish('dea.advertise', payload);
        await h.stage.idle();
        const after = await h.actualState();
        if (!h.sameState(before, after)) expect(after, 'dea.advertise changed the actual state').toEqual(before);
        const marker = await h.store.getFreshness('actual');
        if (due) {
          bumps++;
          if (marker?.expiresAt !== h.clock.now() + ACTUAL_TTL) expect(marker?.expiresAt, 'bumped').toBe(h.clock.now() + ACTUAL_TTL);
        } else if (JSON.stringify(marker ?? null) !== markerBefore) {
          expect(JSON.stringify(marker ?? null), 'not bumped').toBe(markerBefore);
        }
      }),
      { numRuns: RUNS },
    );
    expect(bumps).toBeGreaterThan(RUNS / 10);
    expect(bumps).toBeLessThan(RUNS);
    expect(await h.total('hmgate_dropped_messages_total')).toBe(0);
    expect(h.logged.filter((l) => l.level === 'error')).toEqual([]);
  });
  it(`survives ${RUNS} generated payloads on dea.advertise, checked: only valid ones naming no instance bump, as the rule says`, async () => {
    const h = await harness();
    const beat = encoder.encode(
      JSON.stringify({ dea: 'dea-0', droplets: [{ droplet: 'a', version: 'v', instance: 'i', index: 0, state: 'RUNNING', state_timestamp: 1 }] }),
    );
    // The rule, kept apart from the code: when heartbeats, advertises naming instances and advertise bumps last came.
    let lastHeartbeat: number | undefined;
    let lastBusy: number | undefined;
    let lastAdvertiseBump: number | undefined;
    const seen = { bumps: 0, revokes: 0, held: 0, invalid: 0 };
    await fc.assert(
      fc.asyncProperty(checkedAdvertiseSamples, fc.nat(ACTUAL_TTL), fc.nat(9), async (sample, step, roll) => {
        h.clock.advance(step);
        if (roll === 0) {
          h.bus.publish('dea.heartbeat', beat);
          lastHeartbeat = h.clock.now();
        }
        await h.stage.idle();
        const before = await h.actualState();
        const markerBefore = await h.marker();
        const now = h.clock.now();
        h.bus.publish('dea.advertise', sample.data);
        await h.stage.idle();
        const after = await h.actualState();
        if (!h.sameState(before, after)) expect(after, 'dea.advertise changed the actual state').toEqual(before);
        const marker = await h.store.getFreshness('actual');
        const silent = lastHeartbeat === undefined || now - lastHeartbeat >= ACTUAL_TTL;
        let want: 'bump' | 'revoke' | 'same' = 'same';
        if (sample.kind === 'invalid') seen.invalid++;
        else if (sample.kind === 'busy') {
          lastBusy = now;
          if (silent && lastAdvertiseBump !== undefined && (lastHeartbeat === undefined || lastAdvertiseBump >= lastHeartbeat)) {
            want = 'revoke';
            lastAdvertiseBump = undefined;
          }
        } else if (silent && (lastBusy === undefined || now - lastBusy >= ACTUAL_TTL)) {
          want = 'bump';
          lastAdvertiseBump = now;
        } else if (silent) seen.held++;
        if (want === 'bump') {
          seen.bumps++;
          if (marker?.expiresAt !== now + ACTUAL_TTL) expect(marker?.expiresAt, `${sample.what} bumped`).toBe(now + ACTUAL_TTL);
        } else if (want === 'revoke') {
          seen.revokes++;
          if (marker !== undefined) expect(marker, `${sample.what} revoked`).toBeUndefined();
        } else if (JSON.stringify(marker ?? null) !== markerBefore) {
          expect(JSON.stringify(marker ?? null), `${sample.what} left freshness alone`).toBe(markerBefore);
        }
        const dropped = await h.total('hmgate_dropped_messages_total');
        if (dropped !== seen.invalid) expect(dropped, sample.what).toBe(seen.invalid);
      }),
      { numRuns: RUNS },
    );
    // Each path was taken often enough to mean something.
    expect(seen.bumps).toBeGreaterThan(RUNS / 50);
    expect(seen.revokes).toBeGreaterThan(RUNS / 200);
    expect(seen.held).toBeGreaterThan(RUNS / 50);
    expect(seen.invalid).toBeGreaterThan(RUNS / 4);
    expect(h.logged.filter((l) => l.level === 'error')).toEqual([]);
  });
});
