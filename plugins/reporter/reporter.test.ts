/**
 * healthmanager.status / .health / .droplet answered from app records built with droplets.ts, over
 * the in-process bus (replies are published synchronously, so each request's replies are all in
 * once the request is published).
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { getInstance, setDesiredState, type Droplet, type InstanceRecord } from '../../src/sdk/droplets.js';
import type { DesiredApp } from '../../src/sdk/state.js';
import { makeStageContext, type TestContext } from '../../test/helpers/stage-context.js';
import plugin, { type Reporter } from './index.js';

const T0 = 1_700_000_000_000;

function options(raw: Record<string, unknown> = {}) {
  const data = structuredClone(raw);
  const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
  return { problems: problems.map((p) => p.message), data: data as Parameters<typeof plugin.create>[0] };
}

async function setup(raw: Record<string, unknown> = {}) {
  const t = makeStageContext({ id: 'reporter', kind: 'reporter', startMs: T0 });
  const { problems, data } = options(raw);
  expect(problems).toEqual([]);
  const reporter = (await plugin.create(data, t.ctx)) as Reporter;
  reporter.start();
  let inboxes = 0;
  /** Publishes a request with a fresh reply inbox; returns every reply, in order. */
  const ask = (subject: string, body: unknown): string[] => {
    const inbox = `_INBOX.test.${++inboxes}`;
    const replies: string[] = [];
    const off = t.bus.subscribe(inbox, (m) => void replies.push(new TextDecoder().decode(m.data)));
    t.bus.publish(subject, typeof body === 'string' ? body : JSON.stringify(body), inbox);
    off();
    return replies;
  };
  return { ...t, reporter, ask };
}

function app(t: TestContext, id: string, desired?: Partial<DesiredApp>): Droplet {
  const d = t.droplets.get(id, t.clock.now());
  if (desired)
    setDesiredState(
      d,
      { guid: id, version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000', ...desired },
      t.clock.now(),
    );
  return d;
}

function rec(d: Droplet, index: number, version: string | null, patch: Partial<InstanceRecord>): InstanceRecord {
  return Object.assign(getInstance(d, index, version), patch);
}

async function dropped(t: TestContext) {
  const metric = t.metrics.getSingleMetric('hmgate_dropped_messages_total');
  if (!metric) return {};
  return Object.fromEntries((await metric.get()).values.map((v) => [`${v.labels.subject} ${v.labels.reason}`, v.value]));
}

describe('healthmanager.status', () => {
  it('FLAPPING: the flapping records of the requested version, in record order, since their state timestamp', async () => {
    const t = await setup();
    const d = app(t, 'app-guid');
    rec(d, 2, 'ver', { state: 'FLAPPING', stateTimestamp: 1375300200 });
    rec(d, 1, 'ver', { state: 'RUNNING', stateTimestamp: 1375300100 });
    rec(d, 0, 'ver', { state: 'FLAPPING', stateTimestamp: 1375300123 });
    rec(d, 0, 'other', { state: 'FLAPPING', stateTimestamp: 1 });
    expect(t.ask('healthmanager.status', { droplet: 'app-guid', state: 'FLAPPING', version: 'ver' })).toEqual([
      '{"indices":[{"index":2,"since":1375300200},{"index":0,"since":1375300123}]}',
    ]);
  });

  it('FLAPPING for a version without records: an empty list, and the version entry exists afterwards (as in the Ruby HM)', async () => {
    const t = await setup();
    const d = app(t, 'app-guid', {});
    expect(t.ask('healthmanager.status', { droplet: 'app-guid', state: 'FLAPPING', version: 'gone' })).toEqual(['{"indices":[]}']);
    expect([...d.versions.keys()]).toEqual(['gone']);
  });

  it('CRASHED: every crash record, since the agent crash time', async () => {
    const t = await setup();
    const d = app(t, 'app-guid');
    d.crashes.set('inst-a', { timestampMs: T0, crashTimestamp: 1375300123 });
    d.crashes.set('inst-b', { timestampMs: T0, crashTimestamp: 1375300456 });
    expect(t.ask('healthmanager.status', { droplet: 'app-guid', state: 'CRASHED' })).toEqual([
      '{"instances":[{"instance":"inst-a","since":1375300123},{"instance":"inst-b","since":1375300456}]}',
    ]);
    d.crashes.clear();
    expect(t.ask('healthmanager.status', { droplet: 'app-guid', state: 'CRASHED' })).toEqual(['{"instances":[]}']);
  });

  it('no reply for an unknown app, which is not created, nor for another state', async () => {
    const t = await setup();
    app(t, 'known');
    expect(t.ask('healthmanager.status', { droplet: 'no-such-app', state: 'CRASHED' })).toEqual([]);
    expect(t.droplets.peek('no-such-app')).toBeUndefined();
    expect(t.droplets.size).toBe(1);
    expect(t.ask('healthmanager.status', { droplet: 'known', state: 'RUNNING', version: 'v1' })).toEqual([]);
    expect(await dropped(t)).toEqual({});
    expect(t.reporter.health()).toEqual({ healthy: true, last_error: null });
  });

  it('counts every request in varz, answered or not', async () => {
    const t = await setup();
    t.ask('healthmanager.status', { droplet: 'x', state: 'CRASHED' });
    t.ask('healthmanager.status', 'not json');
    expect(t.reporter.varz()).not.toHaveProperty('healthmanager_status_msgs_received'); // published at the next pass or walk only
    t.reporter.observe({ event: { kind: 'walk', phase: 'done' }, droplet: undefined, now: t.clock.now(), env: env() });
    expect(t.reporter.varz()).toMatchObject({ healthmanager_status_msgs_received: 2 });
  });
});

describe('healthmanager.health', () => {
  it('one reply per known app: the RUNNING desired indices of the requested version (the observed example)', async () => {
    const t = await setup();
    const d = app(t, 'app-guid-1', { version: 'app-version-1', instances: 2 });
    rec(d, 0, 'app-version-1', { state: 'RUNNING' });
    expect(
      t.ask('healthmanager.health', {
        droplets: [
          { droplet: 'app-guid-1', version: 'app-version-1' },
          { droplet: 'no-such-app', version: 'v' },
        ],
      }),
    ).toEqual(['{"droplet":"app-guid-1","version":"app-version-1","healthy":1}']);
    expect(t.droplets.peek('no-such-app')).toBeUndefined();
  });

  it('counts RUNNING only, below the desired count, of the version asked for; each app its own reply', async () => {
    const t = await setup();
    const a = app(t, 'a', { version: 'v2', instances: 3 });
    rec(a, 0, 'v2', { state: 'RUNNING' });
    rec(a, 1, 'v2', { state: 'STARTING' });
    rec(a, 2, 'v2', { state: 'RUNNING' });
    rec(a, 3, 'v2', { state: 'RUNNING' }); // beyond the desired count
    rec(a, 0, 'v1', { state: 'RUNNING' });
    const b = app(t, 'b', { version: 'v', instances: 1 });
    rec(b, 0, 'v', { state: 'FLAPPING' });
    expect(
      t.ask('healthmanager.health', {
        droplets: [
          { droplet: 'a', version: 'v2' },
          { droplet: 'b', version: 'v' },
          { droplet: 'a', version: 'v1' },
        ],
      }),
    ).toEqual(['{"droplet":"a","version":"v2","healthy":2}', '{"droplet":"b","version":"v","healthy":0}', '{"droplet":"a","version":"v1","healthy":1}']);
  });

  it('an app known only from heartbeats answers healthy 0 (no desired count), with records read into being', async () => {
    const t = await setup();
    const d = app(t, 'beats-only');
    rec(d, 0, 'v', { state: 'RUNNING' });
    expect(t.ask('healthmanager.health', { droplets: [{ droplet: 'beats-only', version: 'v' }] })).toEqual([
      '{"droplet":"beats-only","version":"v","healthy":0}',
    ]);
    const e = app(t, 'desired', { version: 'v', instances: 2 });
    t.clock.advance(5000);
    t.ask('healthmanager.health', { droplets: [{ droplet: 'desired', version: 'v' }] });
    expect([...e.versions.get('v')!.values()].map((r) => [r.index, r.state, r.stateTimestamp])).toEqual([
      [0, 'DOWN', T0 / 1000 + 5],
      [1, 'DOWN', T0 / 1000 + 5],
    ]);
  });

  it('a malformed entry ends the request there: the entries before it are answered', async () => {
    const t = await setup();
    app(t, 'a', { version: 'v', instances: 1 });
    expect(t.ask('healthmanager.health', { droplets: [{ droplet: 'a', version: 'v' }, { droplet: 'a' }, { droplet: 'a', version: 'v' }] })).toEqual([
      '{"droplet":"a","version":"v","healthy":0}',
    ]);
    expect(await dropped(t)).toEqual({ 'healthmanager.health missing_version': 1 });
    const line = t.logs.find((l) => l.reason === 'missing_version');
    expect(line).toMatchObject({ level: 40, subject: 'healthmanager.health', detail: 'droplets[1] has no "version" (1 reply sent before it)' });
  });
});

describe('healthmanager.droplet', () => {
  it("answers each known app's record as JSON, Maps as objects in insertion order", async () => {
    const t = await setup();
    const d = app(t, 'a', { version: 'v', instances: 2 });
    rec(d, 1, 'v', { state: 'RUNNING', stateTimestamp: 1375300000.5, guid: 'g1', lastHeartbeatMs: T0, guidStream: ['g1'] });
    rec(d, 0, 'v', {});
    d.crashes.set('g0', { timestampMs: T0, crashTimestamp: 1375300001 });
    const replies = t.ask('healthmanager.droplet', { droplets: [{ droplet: 'a' }, { droplet: 'nope' }] });
    const inst = (index: number, extra: string) =>
      `"${index}":{"index":${index},"version":"v",${extra},"crashCount":0,"lastCrashTimestamp":null,"pendingRestart":null,"guidStream":${index === 1 ? '["g1"]' : '[]'}}`;
    expect(replies).toEqual([
      '{"id":"a","numInstances":2,"state":"STARTED","liveVersion":"v","packageState":"STAGED","lastUpdated":1375308000,' +
        `"versions":{"v":{${inst(1, `"state":"RUNNING","stateTimestamp":1375300000.5,"guid":"g1","lastHeartbeatMs":${T0}`)},${inst(0, `"state":"DOWN","stateTimestamp":${T0 / 1000},"guid":null,"lastHeartbeatMs":null`)}}},` +
        `"crashes":{"g0":{"timestampMs":${T0},"crashTimestamp":1375300001}},"extraInstances":[],"resetTimestampMs":${T0},"desiredUpdateRequired":false,"desiredUpdateMs":${T0},"pendingRestarts":{},"nowMs":${T0}}`,
    ]);
    expect(t.droplets.peek('nope')).toBeUndefined();
  });
});

describe('bad requests', () => {
  it('are dropped with one clear line per reason, counted, never answered, never thrown', async () => {
    const t = await setup();
    app(t, 'a', {});
    const cases: [string, unknown, string][] = [
      ['healthmanager.status', '{"droplet":', 'bad_json'],
      ['healthmanager.status', '[1,2]', 'bad_shape'],
      ['healthmanager.status', { state: 'CRASHED' }, 'missing_droplet'],
      ['healthmanager.status', { droplet: { id: 1 }, state: 'CRASHED' }, 'bad_droplet'],
      ['healthmanager.status', { droplet: 'a' }, 'missing_state'],
      ['healthmanager.status', { droplet: 'a', state: 'FLAPPING' }, 'missing_version'],
      ['healthmanager.status', { droplet: 'a', state: 'FLAPPING', version: 3 }, 'bad_version'],
      ['healthmanager.health', {}, 'missing_droplets'],
      ['healthmanager.health', { droplets: { droplet: 'a' } }, 'bad_droplets'],
      ['healthmanager.health', { droplets: ['a'] }, 'bad_shape'],
      ['healthmanager.droplet', { droplets: [{ version: 'v' }] }, 'missing_droplet'],
    ];
    for (const [subject, body] of cases) expect(t.ask(subject, body), JSON.stringify(body)).toEqual([]);
    expect(await dropped(t)).toEqual(Object.fromEntries(cases.map(([s, , r]) => [`${s} ${r}`, 1])));
    const lines = t.logs.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('dropped a message'));
    expect(lines).toHaveLength(cases.length);
    expect(lines[0]).toMatchObject({ level: 40, subject: 'healthmanager.status', reason: 'bad_json' });
    expect(String(lines[0]!.msg)).toMatch(/^dropped a message on healthmanager\.status: bad_json \(not JSON: /);
  });

  it('the same reason again is counted but not logged again at once', async () => {
    const t = await setup();
    t.ask('healthmanager.health', 'x');
    t.ask('healthmanager.health', 'y');
    expect(await dropped(t)).toEqual({ 'healthmanager.health bad_json': 2 });
    expect(t.logs.filter((l) => l.reason === 'bad_json')).toHaveLength(1);
  });

  it('a request without a reply subject is counted and dropped', async () => {
    const t = await setup();
    app(t, 'a', {});
    t.bus.publish('healthmanager.status', JSON.stringify({ droplet: 'a', state: 'CRASHED' }));
    expect(t.bus.published).toHaveLength(1);
    expect(await dropped(t)).toEqual({ 'healthmanager.status no_reply_subject': 1 });
  });

  it('stops answering after stop()', async () => {
    const t = await setup();
    app(t, 'a', {});
    t.reporter.stop();
    expect(t.ask('healthmanager.status', { droplet: 'a', state: 'CRASHED' })).toEqual([]);
  });

  it('answers on the configured subjects', async () => {
    const t = await setup({ status_subject: 'hm.status', health_subject: 'hm.health', droplet_subject: 'hm.droplet' });
    app(t, 'a', { instances: 0 });
    expect(t.ask('healthmanager.status', { droplet: 'a', state: 'CRASHED' })).toEqual([]);
    expect(t.ask('hm.status', { droplet: 'a', state: 'CRASHED' })).toEqual(['{"instances":[]}']);
    expect(t.ask('hm.health', { droplets: [{ droplet: 'a', version: 'v1' }] })).toEqual(['{"droplet":"a","version":"v1","healthy":0}']);
    expect(t.ask('hm.droplet', { droplets: [{ droplet: 'a' }] })).toHaveLength(1);
  });

  it('reads a numeric app guid as its digits', async () => {
    const t = await setup();
    app(t, '42', { instances: 0 });
    expect(t.ask('healthmanager.status', { droplet: 42, state: 'CRASHED' })).toEqual(['{"instances":[]}']);
  });
});

function env() {
  return { desiredAvailable: true, busConnected: true, random: () => 0.5 };
}
