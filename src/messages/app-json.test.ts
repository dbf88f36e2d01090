import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  appExists,
  appJson,
  appViewLookup,
  bulkAppStateBody,
  decodeRequestBody,
  goFloat,
  goInt,
  goJsonString,
  parseAppStateRequest,
  parseBulkAppStateRequest,
  singleAppStateBody,
  UnsupportedValueError,
} from './app-json.js';
import { buildAppViews } from '../sdk/app-view.js';
import { appKey } from '../sdk/app-key.js';
import { type CrashCount, type DesiredApp, type InstanceHeartbeat, type StoreSnapshot } from '../sdk/state.js';

const desired = (guid: string, version: string, extra: Partial<DesiredApp> = {}): DesiredApp => ({
  guid,
  version,
  instances: 2,
  state: 'STARTED',
  packageState: 'STAGED',
  ...extra,
});
const hb = (app: string, version: string, instance: string, index: number, extra: Partial<InstanceHeartbeat> = {}): InstanceHeartbeat => ({
  app,
  version,
  instance,
  index,
  state: 'RUNNING',
  stateTimestamp: 1123.2,
  agent: 'dea-1',
  ...extra,
});
const crash = (app: string, version: string, index: number, count: number, createdAt: number): CrashCount => ({ app, version, index, count, createdAt });

function snapshot(parts: { desired?: DesiredApp[]; instances?: InstanceHeartbeat[]; crashes?: CrashCount[] }): StoreSnapshot {
  const group = <T extends { app: string; version: string }>(list: T[]) => {
    const m = new Map<string, T[]>();
    for (const x of list) m.set(appKey(x.app, x.version), [...(m.get(appKey(x.app, x.version)) ?? []), x]);
    return m;
  };
  return {
    now: 0,
    desired: new Map((parts.desired ?? []).map((d) => [appKey(d.guid, d.version), d])),
    instances: group(parts.instances ?? []),
    crashCounts: group(parts.crashes ?? []),
    starts: new Map(),
    stops: new Map(),
    freshness: {},
  };
}

const ZERO_DESIRED = '{"id":"","version":"","instances":0,"state":"","package_state":""}';

describe('Go JSON primitives', () => {
  it('escapes strings as Go does: HTML characters, U+2028/2029, control characters, lone surrogates', () => {
    expect(goJsonString('plain-guid_1.2')).toBe('"plain-guid_1.2"');
    expect(goJsonString('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(goJsonString('<a href="x">&</a>')).toBe('"\\u003ca href=\\"x\\"\\u003e\\u0026\\u003c/a\\u003e"');
    expect(goJsonString('\n\r\t\b\f\u0000\u001f\u007f')).toBe('"\\n\\r\\t\\u0008\\u000c\\u0000\\u001f\u007f"');
    expect(goJsonString('\u2028\u2029')).toBe('"\\u2028\\u2029"');
    expect(goJsonString('é中😀')).toBe('"é中😀"');
    expect(goJsonString('x\ud800y\udc00')).toBe('"x\\ufffdy\\ufffd"');
  });

  it('every string it writes parses back (lone surrogates aside)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        expect(JSON.parse(goJsonString(s))).toBe(s);
      }),
    );
  });

  it.each([
    [0, '0', '0'],
    [-0, '-0', '-0'],
    [12, '12', '12'],
    [1123.2, '1123.2', '1123.2'],
    [0.0001, '0.0001', '0.0001'],
    [0.00001, '1e-05', '0.00001'],
    [1.5e-7, '1.5e-07', '1.5e-7'],
    [999999, '999999', '999999'],
    [123456.7, '123456.7', '123456.7'],
    [1e6, '1e+06', '1000000'],
    [1452700000.5, '1.4527000005e+09', '1452700000.5'],
    [1452700000, '1.4527e+09', '1452700000'],
    [-1234567.8, '-1.2345678e+06', '-1234567.8'],
    [1e21, '1e+21', '1e+21'],
    [1e100, '1e+100', '1e+100'],
  ])('float64 %s is %s before Go 1.8 and %s after', (x, g, es6) => {
    expect(goFloat(x)).toBe(es6); // the default: HM9000 as built today
    expect(goFloat(x, 'g')).toBe(g);
    expect(goFloat(x, 'es6')).toBe(es6);
  });

  it('refuses non-finite numbers as Go does', () => {
    for (const x of [NaN, Infinity, -Infinity]) {
      expect(() => goFloat(x)).toThrow(UnsupportedValueError);
      expect(() => goInt(x)).toThrow(UnsupportedValueError);
    }
  });

  it('writes integers without exponent or fraction', () => {
    expect(goInt(3)).toBe('3');
    expect(goInt(-0)).toBe('0');
    expect(goInt(1e21)).toBe('1000000000000000000000');
  });
});

describe('App JSON (docs/hm9000.md#app-json, B format)', () => {
  const full = snapshot({
    desired: [desired('app-1', 'v1', { instances: 3 })],
    instances: [hb('app-1', 'v1', 'i-0', 0), hb('app-1', 'v1', 'i-1', 1, { state: 'CRASHED', stateTimestamp: 0, agent: 'dea-2' })],
    crashes: [crash('app-1', 'v1', 2, 5, 1_700_000_001_999), crash('app-1', 'v1', 1, 2, 172_000)],
  });

  it('renders every field in HM9000 order, crash counts by index with created_at in seconds', () => {
    const app = buildAppViews(full).get('app-1,v1')!;
    expect(appJson(app)).toBe(
      '{"droplet":"app-1","version":"v1",' +
        '"desired":{"id":"app-1","version":"v1","instances":3,"state":"STARTED","package_state":"STAGED"},' +
        '"instance_heartbeats":[' +
        '{"droplet":"app-1","version":"v1","instance":"i-0","index":0,"state":"RUNNING","state_timestamp":1123.2,"dea_guid":"dea-1"},' +
        '{"droplet":"app-1","version":"v1","instance":"i-1","index":1,"state":"CRASHED","state_timestamp":0,"dea_guid":"dea-2"}],' +
        '"crash_counts":[' +
        '{"droplet":"app-1","version":"v1","instance_index":1,"crash_count":2,"created_at":172},' +
        '{"droplet":"app-1","version":"v1","instance_index":2,"crash_count":5,"created_at":1700000001}]}',
    );
  });

  it('a desired app without instances or crash counts has empty lists, never null', () => {
    const app = buildAppViews(snapshot({ desired: [desired('app-2', 'v9', { instances: 1, packageState: 'PENDING' })] })).get('app-2,v9')!;
    expect(appJson(app)).toBe(
      '{"droplet":"app-2","version":"v9","desired":{"id":"app-2","version":"v9","instances":1,"state":"STARTED","package_state":"PENDING"},"instance_heartbeats":[],"crash_counts":[]}',
    );
  });

  it('an app that is not desired (an old version) has the zero desired object', () => {
    const app = buildAppViews(snapshot({ desired: [desired('app-1', 'v2')], instances: [hb('app-1', 'v1', 'i-9', 4, { stateTimestamp: 12 })] })).get(
      'app-1,v1',
    )!;
    expect(appJson(app)).toBe(
      `{"droplet":"app-1","version":"v1","desired":${ZERO_DESIRED},"instance_heartbeats":[{"droplet":"app-1","version":"v1","instance":"i-9","index":4,"state":"RUNNING","state_timestamp":12,"dea_guid":"dea-1"}],"crash_counts":[]}`,
    );
  });

  it("writes a real agent timestamp as HM9000 built with today's Go does, or as Go before 1.8 when asked", () => {
    const app = buildAppViews(snapshot({ instances: [hb('a', 'v', 'i', 0, { stateTimestamp: 1452700000.5 })] })).get('a,v')!;
    expect(appJson(app)).toContain('"state_timestamp":1452700000.5,');
    expect(appJson(app, { floatFormat: 'g' })).toContain('"state_timestamp":1.4527000005e+09,');
  });

  it('escapes what it writes as Go does', () => {
    const app = buildAppViews(snapshot({ desired: [desired('<app>', 'v&1', { instances: 0 })] })).get('<app>,v&1')!;
    expect(appJson(app)).toBe(
      '{"droplet":"\\u003capp\\u003e","version":"v\\u00261","desired":{"id":"\\u003capp\\u003e","version":"v\\u00261","instances":0,"state":"STARTED","package_state":"STAGED"},"instance_heartbeats":[],"crash_counts":[]}',
    );
  });

  it('is JSON that parses to the documented shape', () => {
    const app = buildAppViews(full).get('app-1,v1')!;
    const parsed = JSON.parse(appJson(app));
    expect(Object.keys(parsed)).toEqual(['droplet', 'version', 'desired', 'instance_heartbeats', 'crash_counts']);
    expect(Object.keys(parsed.desired)).toEqual(['id', 'version', 'instances', 'state', 'package_state']);
    expect(Object.keys(parsed.instance_heartbeats[0])).toEqual(['droplet', 'version', 'instance', 'index', 'state', 'state_timestamp', 'dea_guid']);
    expect(Object.keys(parsed.crash_counts[0])).toEqual(['droplet', 'version', 'instance_index', 'crash_count', 'created_at']);
  });
});

describe('app existence and lookup', () => {
  const snap = snapshot({
    desired: [desired('d', 'v1')],
    instances: [hb('r', 'v1', 'i-1', 0)],
    crashes: [crash('c', 'v1', 0, 3, 5000), crash('d', 'v1', 1, 1, 9000)],
  });

  it('an app exists through desired state or a live instance; crash counts alone do not make one', () => {
    const lookup = appViewLookup(snap);
    expect(lookup.get('d,v1')).toBeDefined();
    expect(lookup.get('r,v1')).toBeDefined();
    expect(lookup.get('c,v1')).toBeUndefined();
    expect(lookup.get('nope,v1')).toBeUndefined();
    expect(appExists(buildAppViews(snapshot({ instances: [hb('g', '', 'i', 0)] })).get('g,')!)).toBe(false);
  });

  it('builds the same views as buildAppViews', () => {
    const views = buildAppViews(snap);
    const lookup = appViewLookup(snap);
    for (const key of ['d,v1', 'r,v1', 'c,v1', 'x,y']) {
      const a = views.get(key);
      const b = lookup.get(key);
      expect(b === undefined ? undefined : appJson(b)).toBe(a === undefined ? undefined : appJson(a));
    }
  });
});

describe('bulk and single answers', () => {
  const snap = snapshot({
    desired: [desired('b-app', 'v1', { instances: 1 }), desired('a-app', 'v2', { instances: 1 })],
    instances: [hb('a-app', 'v1', 'i-old', 0), hb('b-app', 'v1', 'i-b', 0)],
    crashes: [crash('crash-only', 'v1', 0, 3, 5000)],
  });
  const lookup = () => appViewLookup(snap);
  const one = (guid: string, version: string) => appJson(lookup().get(appKey(guid, version))!);

  it('keys found apps by guid, in Go order (sorted), and omits unknown and crash-only apps', () => {
    const body = bulkAppStateBody(lookup(), [
      { droplet: 'b-app', version: 'v1' },
      { droplet: 'unknown', version: 'v1' },
      { droplet: 'crash-only', version: 'v1' },
      { droplet: 'a-app', version: 'v2' },
    ]);
    expect(body).toBe(`{"a-app":${one('a-app', 'v2')},"b-app":${one('b-app', 'v1')}}`);
  });

  it('two versions of one guid collapse; the later request wins', () => {
    expect(
      bulkAppStateBody(lookup(), [
        { droplet: 'a-app', version: 'v1' },
        { droplet: 'a-app', version: 'v2' },
      ]),
    ).toBe(`{"a-app":${one('a-app', 'v2')}}`);
    expect(
      bulkAppStateBody(lookup(), [
        { droplet: 'a-app', version: 'v2' },
        { droplet: 'a-app', version: 'v1' },
      ]),
    ).toBe(`{"a-app":${one('a-app', 'v1')}}`);
    // a version that does not exist does not displace one that does
    expect(
      bulkAppStateBody(lookup(), [
        { droplet: 'a-app', version: 'v2' },
        { droplet: 'a-app', version: 'v3' },
      ]),
    ).toBe(`{"a-app":${one('a-app', 'v2')}}`);
  });

  it('is {} when nothing is found or nothing is asked', () => {
    expect(bulkAppStateBody(lookup(), [])).toBe('{}');
    expect(
      bulkAppStateBody(lookup(), [
        { droplet: 'unknown', version: 'v1' },
        { droplet: '', version: '' },
      ]),
    ).toBe('{}');
  });

  it('sorts guids by their UTF-8 bytes, as Go sorts map keys', () => {
    const s = snapshot({ desired: ['\uff5a', '😀', 'Z', 'a'].map((g) => desired(g, 'v', { instances: 0 })) });
    const body = bulkAppStateBody(
      appViewLookup(s),
      ['a', '\uff5a', 'Z', '😀'].map((droplet) => ({ droplet, version: 'v' })),
    );
    expect(Object.keys(JSON.parse(body))).toEqual(['Z', 'a', '\uff5a', '😀']);
  });

  it('is {} when a value cannot be written (Go refuses NaN and infinities)', () => {
    const s = snapshot({ instances: [hb('x', 'v', 'i', 0, { stateTimestamp: Infinity })], desired: [desired('y', 'v')] });
    expect(
      bulkAppStateBody(appViewLookup(s), [
        { droplet: 'y', version: 'v' },
        { droplet: 'x', version: 'v' },
      ]),
    ).toBe('{}');
    expect(singleAppStateBody(appViewLookup(s), { droplet: 'x', version: 'v' })).toBe('{}');
  });

  it('answers one app as its App JSON, or {}', () => {
    expect(singleAppStateBody(lookup(), { droplet: 'b-app', version: 'v1' })).toBe(one('b-app', 'v1'));
    expect(singleAppStateBody(lookup(), { droplet: 'crash-only', version: 'v1' })).toBe('{}');
    expect(singleAppStateBody(lookup(), { droplet: '', version: '' })).toBe('{}');
  });

  it('also takes the Map of buildAppViews', () => {
    expect(bulkAppStateBody(buildAppViews(snap), [{ droplet: 'b-app', version: 'v1' }])).toBe(`{"b-app":${one('b-app', 'v1')}}`);
  });
});

describe('request parsing (Go json.Unmarshal semantics)', () => {
  it.each([
    ['[]', []],
    ['null', []],
    [' [ {"droplet":"a","version":"v"} ] \n', [{ droplet: 'a', version: 'v' }]],
    ['[{"droplet":"a"}]', [{ droplet: 'a', version: '' }]],
    [
      '[null, {}]',
      [
        { droplet: '', version: '' },
        { droplet: '', version: '' },
      ],
    ],
    ['[{"droplet":null,"version":"v","extra":[1,{"x":2}]}]', [{ droplet: '', version: 'v' }]],
    ['[{"DROPLET":"a","Version":"v"}]', [{ droplet: 'a', version: 'v' }]],
    ['[{"ver\u017fion":"v"}]', [{ droplet: '', version: 'v' }]],
    ['[{"droplet":"a","droplet":"b"}]', [{ droplet: 'b', version: '' }]],
  ])('accepts %s', (text, value) => {
    expect(parseBulkAppStateRequest(text)).toEqual({ ok: true, value });
  });

  it.each([
    ['', 'bad_json'],
    ['[', 'bad_json'],
    ['not json', 'bad_json'],
    ["[{'droplet':'a'}]", 'bad_json'],
    ['\ufeff[]', 'bad_json'],
    ['{}', 'invalid'],
    ['{"droplet":"a","version":"v"}', 'invalid'],
    ['"x"', 'invalid'],
    ['3', 'invalid'],
    ['[1]', 'invalid'],
    ['[["a","v"]]', 'invalid'],
    ['[{"droplet":1,"version":"v"}]', 'invalid'],
    ['[{"droplet":"a","version":{"v":1}}]', 'invalid'],
    ['[{"droplet":"a"},"b"]', 'invalid'],
  ])('refuses %j (%s)', (text, reason) => {
    expect(parseBulkAppStateRequest(text)).toMatchObject({ ok: false, reason });
  });

  it('parses single requests the same way', () => {
    expect(parseAppStateRequest('{"droplet":"a","version":"v"}')).toEqual({ ok: true, value: { droplet: 'a', version: 'v' } });
    expect(parseAppStateRequest('null')).toEqual({ ok: true, value: { droplet: '', version: '' } });
    expect(parseAppStateRequest('[{"droplet":"a","version":"v"}]')).toMatchObject({ ok: false, reason: 'invalid' });
    expect(parseAppStateRequest('{"droplet":true}')).toMatchObject({ ok: false, reason: 'invalid' });
    expect(parseAppStateRequest('{')).toMatchObject({ ok: false, reason: 'bad_json' });
  });

  it('keeps a byte-order mark (Go refuses it) and replaces invalid UTF-8', () => {
    expect(decodeRequestBody(new Uint8Array([0xef, 0xbb, 0xbf, 0x5b, 0x5d]))).toBe('\ufeff[]');
    expect(decodeRequestBody(new Uint8Array([0x22, 0xff, 0x22]))).toBe('"\ufffd"');
    expect(decodeRequestBody('[]')).toBe('[]');
  });

  it('never throws on any input', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.jsonValue().map((v) => JSON.stringify(v)),
        ),
        (text) => {
          const bulk = parseBulkAppStateRequest(text);
          const single = parseAppStateRequest(text);
          expect(typeof bulk.ok).toBe('boolean');
          expect(typeof single.ok).toBe('boolean');
        },
      ),
      { numRuns: 2000 },
    );
  });
});
