/**
 * Property tests of the bulk API page parsing: over ten thousand generated bodies (valid pages,
 * pages of the wrong shape, random JSON, text that is not JSON). Nothing throws, every invalid body
 * is a failure with a reason, and a walk that meets an invalid page never changes the store.
 */
import fc from 'fast-check';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import type { Bus } from '../../src/sdk/bus.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { DropletRegistry } from '../../src/sdk/droplets.js';
import { FreshnessBoard } from '../../src/pipeline/freshness/board.js';
import type { StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { type DesiredApp } from '../../src/sdk/state.js';
import { MemoryStore } from '../memory-store/memory-store.js';
import { BulkApiSource } from './bulk-api.js';
import { parseBulkPage, parseRubyPage, percentEncode, type PageResult } from './page.js';

type Json = unknown;
type Page = { results: Record<string, Record<string, Json>>; bulk_token: Record<string, Json> | null };

const STATES = ['STARTED', 'STOPPED'] as const;
const PACKAGE_STATES = ['STAGED', 'PENDING', 'FAILED'] as const;

const appEntry = fc.record(
  {
    id: fc.string({ minLength: 1, maxLength: 10 }),
    version: fc.string({ minLength: 1, maxLength: 8 }),
    instances: fc.nat({ max: 50 }),
    state: fc.constantFrom(...STATES),
    package_state: fc.constantFrom(...PACKAGE_STATES),
    memory: fc.nat({ max: 4096 }),
    updated_at: fc.string({ maxLength: 20 }),
  },
  { requiredKeys: ['id', 'version', 'instances', 'state', 'package_state'] },
);

const results = (minKeys = 0) => fc.dictionary(fc.string({ maxLength: 10 }), appEntry as fc.Arbitrary<Record<string, Json>>, { minKeys, maxKeys: 6 });

/** A page as CC sends it: results, and a token with an integer id (null on the final page). */
const validPage: fc.Arbitrary<Page> = fc.oneof(
  fc.record({ results: results(1), bulk_token: fc.record({ id: fc.integer({ min: -1_000_000, max: 1_000_000 }) }) }),
  fc.record({ results: fc.constant({}), bulk_token: fc.oneof(fc.constant(null), fc.constant({ id: null }), fc.record({ id: fc.nat() })) }),
);

/** Copies a page so mutations do not leak between runs. */
const copy = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

const notObject = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.jsonValue(), { maxLength: 3 }),
);
const notObjectNorNull = notObject.filter((v) => v !== null);
const notString = fc.oneof(
  fc.integer(),
  fc.boolean(),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 2 }),
);
const notInteger = fc.oneof(
  fc.string(),
  fc.boolean(),
  fc.array(fc.integer(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.integer(), { maxKeys: 2 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }).filter((d) => !Number.isInteger(d)),
);

/** A non-empty page with one thing wrong, as a body. Each case is invalid by the contract of docs/hm9000.md#desired-state. */
const invalidBody: fc.Arbitrary<string> = fc.oneof(
  // The body is JSON but not an object.
  notObject.map((v) => JSON.stringify(v)),
  // results missing, or not an object.
  validPage.map((p) => {
    const { bulk_token } = p;
    return JSON.stringify({ bulk_token });
  }),
  fc.tuple(validPage, notObject).map(([p, r]) => JSON.stringify({ ...p, results: r })),
  // bulk_token of the wrong type.
  fc.tuple(validPage, notObjectNorNull).map(([p, t]) => JSON.stringify({ ...p, bulk_token: t })),
  // bulk_token.id that is not an integer.
  fc.tuple(validPage, notInteger).map(([p, id]) => JSON.stringify({ ...p, bulk_token: { id } })),
  // A page with results but no usable token for the next page.
  fc
    .tuple(results(1), fc.constantFrom<Json>(null, undefined, {}, { id: null }, { other: 1 }))
    .map(([r, t]) => JSON.stringify(t === undefined ? { results: r } : { results: r, bulk_token: t })),
  // An entry that is not an app object.
  fc.tuple(results(1), fc.nat(), notObject).map(([r, i, v]) => {
    const keys = Object.keys(r);
    const bad = copy(r) as Record<string, Json>;
    bad[keys[i % keys.length]!] = v;
    return JSON.stringify({ results: bad, bulk_token: { id: 1 } });
  }),
  // A string field of an entry with another type.
  fc.tuple(results(1), fc.nat(), fc.constantFrom('id', 'version', 'state', 'package_state'), notString).map(([r, i, field, v]) => {
    const bad = copy(r);
    bad[Object.keys(bad)[i % Object.keys(bad).length]!]![field] = v;
    return JSON.stringify({ results: bad, bulk_token: { id: 1 } });
  }),
  // instances that is not a whole number.
  fc.tuple(results(1), fc.nat(), fc.oneof(notInteger, fc.integer({ max: -1 }))).map(([r, i, v]) => {
    const bad = copy(r);
    bad[Object.keys(bad)[i % Object.keys(bad).length]!]!.instances = v;
    return JSON.stringify({ results: bad, bulk_token: { id: 1 } });
  }),
  // A desired app (STARTED, STAGED or PENDING) that does not say which app, version or how many.
  fc
    .tuple(results(1), fc.nat(), fc.constantFrom('id', 'version', 'instances'), fc.constantFrom('STAGED', 'PENDING'), fc.boolean())
    .map(([r, i, field, pkg, empty]) => {
      const bad = copy(r);
      const entry = bad[Object.keys(bad)[i % Object.keys(bad).length]!]!;
      entry.state = 'STARTED';
      entry.package_state = pkg;
      if (empty && field !== 'instances') entry[field] = '';
      else delete entry[field];
      return JSON.stringify({ results: bad, bulk_token: { id: 1 } });
    }),
  // Not JSON: a valid page cut short, or with something after it.
  fc.tuple(validPage, fc.nat()).map(([p, n]) => {
    const text = JSON.stringify(p);
    return text.slice(0, n % text.length);
  }),
  fc.tuple(validPage, fc.constantFrom('x', ',', '}', '{', ']', '"', 'null')).map(([p, tail]) => JSON.stringify(p) + tail),
);

/** What the walk keeps of a page (docs/hm9000.md#desired-state): STARTED apps with a STAGED or PENDING package. */
function expectedKept(page: Page): DesiredApp[] {
  return Object.values(page.results)
    .filter((e) => e.state === 'STARTED' && (e.package_state === 'STAGED' || e.package_state === 'PENDING'))
    .map((e) => {
      const app: DesiredApp = {
        guid: e.id as string,
        version: e.version as string,
        instances: e.instances as number,
        state: 'STARTED',
        packageState: e.package_state as string,
      };
      if (typeof e.updated_at === 'string') app.updatedAt = e.updated_at;
      return app;
    });
}

/** Parses without letting anything escape: a throw fails the property with the body. */
function parse(body: string): PageResult {
  try {
    return parseBulkPage(body);
  } catch (err) {
    throw new Error(`parseBulkPage threw on ${JSON.stringify(body).slice(0, 200)}: ${String(err)}`, { cause: err });
  }
}

/** Plain checks (no expect() per run: tens of thousands of runs must stay fast). */
function check(cond: boolean, what: string, r: PageResult): void {
  if (!cond) throw new Error(`${what}: ${JSON.stringify(r).slice(0, 300)}`);
}

function expectFailure(r: PageResult): void {
  check(!r.ok && typeof r.reason === 'string' && r.reason.length > 10, 'expected a failure with a reason', r);
}

/** Invariants of any result, whatever the body. */
function expectConsistent(r: PageResult): void {
  if (!r.ok) {
    check(/\S/.test(r.reason), 'a failure without a reason', r);
    return;
  }
  check(r.done === (r.results === 0), 'done is not "results empty"', r);
  check(r.done ? r.nextToken === null : /^\{"id":-?\d+\}$/.test(r.nextToken ?? ''), 'bad next token', r);
  for (const app of r.kept) {
    check(app.state === 'STARTED' && (app.packageState === 'STAGED' || app.packageState === 'PENDING'), 'kept an app that is not desired', r);
    check(app.guid !== '' && app.version !== '' && Number.isSafeInteger(app.instances) && app.instances >= 0, 'kept an incomplete app', r);
  }
}

describe('parseBulkPage over generated bodies', () => {
  it('valid pages: the kept apps (docs/hm9000.md#desired-state) and the next token {"id":N}', () => {
    fc.assert(
      fc.property(validPage, (page) => {
        const r = parse(JSON.stringify(page));
        const n = Object.keys(page.results).length;
        check(r.ok, 'a valid page failed', r);
        if (!r.ok) return;
        check(r.results === n && r.done === (n === 0), 'wrong count', r);
        check(JSON.stringify(r.kept) === JSON.stringify(n === 0 ? [] : expectedKept(page)), 'kept is not what docs/hm9000.md#desired-state keeps', r);
        check(r.nextToken === (n === 0 ? null : `{"id":${String(page.bulk_token!.id)}}`), 'wrong next token', r);
      }),
      { numRuns: 3_000 },
    );
  });

  it('invalid pages: always a failure with a reason', () => {
    fc.assert(
      fc.property(invalidBody, (body) => {
        expectFailure(parse(body));
      }),
      { numRuns: 4_500 },
    );
  });

  it('random JSON: never throws, and what it accepts is consistent', () => {
    const shaped = fc.record(
      { results: fc.oneof(fc.jsonValue(), fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue(), { maxKeys: 4 })), bulk_token: fc.jsonValue() },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), shaped), (value) => {
        const body = JSON.stringify(value) ?? 'undefined';
        expectConsistent(parse(body));
      }),
      { numRuns: 2_000 },
    );
  });

  it('text that is not JSON: always a failure with a reason', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 200 }),
          fc.string({ unit: 'binary', maxLength: 200 }),
          fc.string({ unit: fc.constantFrom(...'{}[]":,0123456789.-eEtrufalsn \\'.split('')), maxLength: 200 }),
        ),
        (body) => {
          let isJson = true;
          try {
            JSON.parse(body);
          } catch {
            isJson = false;
          }
          const r = parse(body);
          if (isJson) expectConsistent(r);
          else expectFailure(r);
        },
      ),
      { numRuns: 2_000 },
    );
  });
});

describe('a walk over generated pages', () => {
  const registry = new Registry();
  const logger = pino({ level: 'silent' });

  /** A source whose "CC" serves `bodies` in order, the token ids rewritten to ascend, on a store holding `old`. */
  async function walk(bodies: string[], old: DesiredApp[]) {
    const clock = new VirtualClock(1_000_000);
    const store = new MemoryStore(clock);
    await store.replaceDesired(old);
    await store.bumpFreshness('desired', 120_000);
    clock.advance(1_000);
    const before = { desired: await store.getDesired(), marker: await store.getFreshness('desired') };
    const ctx = {
      id: 'desired',
      kind: 'source',
      foundation: 'fuzz',
      logger,
      clock,
      heartbeatMs: 10_000,
      configDir: '/',
      metrics: registry,
      bus: {} as Bus,
      store,
      freshness: new FreshnessBoard(() => clock.now(), 30_000, 120_000),
      isLeader: () => true,
      events: { emit: () => undefined, wants: () => false, droplets: new DropletRegistry() },
    } satisfies StageContext;
    let served = 0;
    const src = new BulkApiSource(
      {
        url: 'http://cc.invalid',
        user: 'u',
        password: 'p',
        batch_size: 3,
        poll_interval: 60_000,
        timeout: 600_000,
        network_timeout: 10_000,
        skip_cert_verify: false,
        credentials: 'static',
        cc_partition: 'default',
        credentials_subject: 'cloudcontroller.bulk.credentials.default',
        credentials_timeout: 5_000,
        walk: 'hm9000',
        user_counts: false,
        forget_unseen: false,
      },
      ctx,
      { transport: async () => ({ status: 200, body: bodies[served++] ?? '{"results":{}}' }) },
    );
    const outcome = await src.fetchOnce();
    return { outcome, store, before, served, reason: ctx.freshness.reason('desired')?.reason };
  }

  /** Valid non-final pages with ascending token ids, as a CC pages. */
  const ascending = (pages: Page[]) => pages.map((p, i) => JSON.stringify({ ...p, bulk_token: { id: i + 1 } }));
  const fullPage = fc.record({ results: results(1), bulk_token: fc.constant(null) });
  const oldApps = fc.array(
    fc.record({
      guid: fc.string({ minLength: 1, maxLength: 6 }),
      version: fc.constant('v'),
      instances: fc.nat(5),
      state: fc.constant('STARTED'),
      packageState: fc.constant('STAGED'),
    }),
    { maxLength: 4 },
  );

  it('an invalid page anywhere leaves the desired state and its marker untouched', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fullPage, { maxLength: 4 }), invalidBody, fc.nat(), oldApps, async (pages, bad, at, old) => {
        const bodies = ascending(pages);
        const position = at % (bodies.length + 1);
        bodies.splice(position, 0, bad);
        const { outcome, store, before, served, reason } = await walk(bodies, old);
        expect(outcome.result).toBe('failed');
        expect(served).toBe(position + 1); // nothing asked after the bad page
        expect(await store.getDesired()).toBe(before.desired);
        expect(await store.getFreshness('desired')).toEqual(before.marker);
        expect(reason).toMatch(/^CC bulk API at http:\/\/cc\.invalid sent .+ \(page \d+\)$/);
      }),
      { numRuns: 300 },
    );
  });

  it('valid pages then the empty page replace the desired state with every kept app', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fullPage, { maxLength: 4 }), oldApps, async (pages, old) => {
        const { outcome, store, before } = await walk(ascending(pages), old);
        const expected = new Map<string, DesiredApp>();
        for (const p of pages) for (const app of expectedKept(p)) expected.set(appKey(app.guid, app.version), app);
        expect(outcome).toEqual({ result: 'ok', apps: expected.size, pages: pages.length + 1 });
        expect(new Map(await store.getDesired())).toEqual(expected);
        const marker = await store.getFreshness('desired');
        expect(marker?.timestamp).toBe(before.marker?.timestamp); // a re-bump keeps the streak
        expect(marker?.expiresAt).toBe(1_001_000 + 120_000);
      }),
      { numRuns: 200 },
    );
  });
});

describe('walk: ruby page parsing under generated input', () => {
  const rubyEntry = fc.record(
    {
      instances: fc.oneof(fc.nat({ max: 50 }), fc.jsonValue()),
      state: fc.oneof(fc.constantFrom(...STATES), fc.jsonValue()),
      version: fc.oneof(fc.string({ maxLength: 8 }), fc.jsonValue()),
      package_state: fc.oneof(fc.constantFrom(...PACKAGE_STATES), fc.jsonValue()),
      updated_at: fc.oneof(fc.constant('2013-07-31 22:00:00 +0000'), fc.constant('2024-01-01T00:00:00Z'), fc.string({ maxLength: 12 })),
      memory: fc.oneof(fc.nat({ max: 4096 }), fc.jsonValue()),
    },
    { requiredKeys: [] },
  );
  const body = fc.oneof(
    fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
    fc
      .record(
        { results: fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(rubyEntry, fc.jsonValue()), { maxKeys: 6 }), bulk_token: fc.jsonValue() },
        { requiredKeys: [] },
      )
      .map((v) => JSON.stringify(v)),
    fc.string({ maxLength: 120 }),
  );

  it('never throws; each result entry is either an app with every field usable or skipped with a reason', () => {
    fc.assert(
      fc.property(body, (text) => {
        const r = parseRubyPage(text);
        if (!r.ok) {
          expect(r.reason).toMatch(/\S/);
          return;
        }
        expect(r.apps.length + r.skipped.length).toBe(r.results);
        if (r.done) expect(r.results).toBe(0);
        for (const a of r.apps) {
          expect(typeof a.state === 'string' && typeof a.version === 'string' && typeof a.packageState === 'string').toBe(true);
          expect(Number.isSafeInteger(a.instances) && a.instances >= 0).toBe(true);
          expect(Number.isFinite(a.memory)).toBe(true);
        }
        for (const s of r.skipped) expect(s.reason).toMatch(/\S/);
        if (r.nextToken !== null) expect(() => JSON.parse(r.nextToken!)).not.toThrow();
      }),
      { numRuns: 3_000 },
    );
  });

  it('percent-encoding leaves only A-Z a-z 0-9 _ . - and %XX, and decodes back', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }), (text) => {
        const encoded = percentEncode(text);
        expect(encoded).toMatch(/^(?:[A-Za-z0-9_.-]|%[0-9A-F]{2})*$/);
        expect(decodeURIComponent(encoded)).toBe(text);
      }),
      { numRuns: 2_000 },
    );
  });
});
