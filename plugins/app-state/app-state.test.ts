import { describe, expect, it } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import plugin, { AppStateOptions, AppStateSource } from './index.js';

const T0 = 1_700_000_000_000;
const OPTS = { subject: 'app.state', bulk_subject: 'app.state.bulk', queue: 'hm9000' };

const APP_1 =
  '{"droplet":"app-1","version":"v1","desired":{"id":"app-1","version":"v1","instances":2,"state":"STARTED","package_state":"STAGED"},' +
  '"instance_heartbeats":[{"droplet":"app-1","version":"v1","instance":"i-0","index":0,"state":"RUNNING","state_timestamp":1123.2,"dea_guid":"dea-1"}],' +
  '"crash_counts":[{"droplet":"app-1","version":"v1","instance_index":1,"crash_count":3,"created_at":1700000000}]}';
const APP_1_OLD =
  '{"droplet":"app-1","version":"v0","desired":{"id":"","version":"","instances":0,"state":"","package_state":""},' +
  '"instance_heartbeats":[{"droplet":"app-1","version":"v0","instance":"i-old","index":0,"state":"RUNNING","state_timestamp":1452700000.5,"dea_guid":"dea-1"}],' +
  '"crash_counts":[]}';
const APP_2 =
  '{"droplet":"app-2","version":"v7","desired":{"id":"app-2","version":"v7","instances":1,"state":"STARTED","package_state":"PENDING"},' +
  '"instance_heartbeats":[],"crash_counts":[]}';

/** A store with app-1 (desired, one instance, a crash count), its old version v0, app-2 (desired only) and a crash-only ghost. */
async function setup(opts: { fresh?: boolean; options?: Partial<typeof OPTS> } = {}) {
  const t = makeStageContext({ id: 'app-state', startMs: T0 });
  const { store, clock, ctx } = t;
  await store.replaceDesired([
    { guid: 'app-1', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED' },
    { guid: 'app-2', version: 'v7', instances: 1, state: 'STARTED', packageState: 'PENDING' },
  ]);
  await store.saveHeartbeats(
    [
      {
        agent: 'dea-1',
        instances: [
          { app: 'app-1', version: 'v1', instance: 'i-0', index: 0, state: 'RUNNING', stateTimestamp: 1123.2, agent: 'dea-1' },
          { app: 'app-1', version: 'v0', instance: 'i-old', index: 0, state: 'RUNNING', stateTimestamp: 1452700000.5, agent: 'dea-1' },
        ],
      },
    ],
    3_600_000,
  );
  await store.putCrashCounts(
    [
      { app: 'app-1', version: 'v1', index: 1, count: 3, createdAt: T0 + 999 },
      { app: 'ghost', version: 'v1', index: 0, count: 1, createdAt: T0 },
    ],
    3_600_000,
  );
  if (opts.fresh !== false) {
    await store.bumpFreshness('actual', 3_600_000);
    await store.bumpFreshness('desired', 3_600_000);
    clock.advance(ctx.freshness.actualTtlMs);
  }
  const source = new AppStateSource({ ...OPTS, ...opts.options }, ctx);
  source.start();
  return { ...t, source };
}

async function ask(bus: { request(s: string, d: string, t: number): Promise<{ data: Uint8Array }> }, subject: string, body: string): Promise<string> {
  const reply = await bus.request(subject, body, 1000);
  return new TextDecoder().decode(reply.data);
}

describe('app-state source (docs/hm9000.md#app-state-over-nats)', () => {
  it('app.state answers one app as its App JSON', async () => {
    const { bus } = await setup();
    expect(await ask(bus, 'app.state', '{"droplet":"app-1","version":"v1"}')).toBe(APP_1);
    expect(await ask(bus, 'app.state', '{"droplet":"app-2","version":"v7"}')).toBe(APP_2);
    expect(await ask(bus, 'app.state', '{"droplet":"app-1","version":"v0"}')).toBe(APP_1_OLD);
  });

  it('app.state answers {} for an unknown app, a crash-only app, and a request that is not the object', async () => {
    const { bus } = await setup();
    for (const body of [
      '{"droplet":"nope","version":"v1"}',
      '{"droplet":"ghost","version":"v1"}',
      '{"droplet":"app-1","version":"v9"}',
      'null',
      '{',
      '[{"droplet":"app-1","version":"v1"}]',
      '{"droplet":1}',
    ]) {
      expect(await ask(bus, 'app.state', body)).toBe('{}');
    }
  });

  it('app.state.bulk answers apps keyed by guid, unknown ones left out, two versions collapsed to the later', async () => {
    const { bus } = await setup();
    const body = JSON.stringify([
      { droplet: 'app-2', version: 'v7' },
      { droplet: 'nope', version: 'v1' },
      { droplet: 'ghost', version: 'v1' },
      { droplet: 'app-1', version: 'v1' },
    ]);
    expect(await ask(bus, 'app.state.bulk', body)).toBe(`{"app-1":${APP_1},"app-2":${APP_2}}`);
    expect(await ask(bus, 'app.state.bulk', '[{"droplet":"app-1","version":"v1"},{"droplet":"app-1","version":"v0"}]')).toBe(`{"app-1":${APP_1_OLD}}`);
    expect(await ask(bus, 'app.state.bulk', '[{"droplet":"app-1","version":"v0"},{"droplet":"app-1","version":"v1"}]')).toBe(`{"app-1":${APP_1}}`);
    expect(await ask(bus, 'app.state.bulk', '[]')).toBe('{}');
    expect(await ask(bus, 'app.state.bulk', '[{"droplet":"nope","version":"v1"}]')).toBe('{}');
  });

  it('app.state.bulk answers {} for a request that is not the array', async () => {
    const { bus } = await setup();
    for (const body of ['', '[', '{"droplet":"app-1","version":"v1"}', '[1]', '[{"droplet":"app-1","version":2}]']) {
      expect(await ask(bus, 'app.state.bulk', body)).toBe('{}');
    }
  });

  it('counts bad requests as dropped input, by subject and reason', async () => {
    const { bus, metrics } = await setup();
    await ask(bus, 'app.state', '{');
    await ask(bus, 'app.state', '[]');
    await ask(bus, 'app.state.bulk', '{}');
    await ask(bus, 'app.state.bulk', '[{"droplet":"app-1","version":"v1"}]');
    const text = await metrics.metrics();
    expect(text).toContain('hmgate_dropped_messages_total{subject="app.state",reason="bad_json"} 1');
    expect(text).toContain('hmgate_dropped_messages_total{subject="app.state",reason="invalid"} 1');
    expect(text).toContain('hmgate_dropped_messages_total{subject="app.state.bulk",reason="invalid"} 1');
    expect(text).toContain('hmgate_app_state_requests_total{subject="app.state.bulk",result="found"} 1');
    expect(text).toContain('hmgate_app_state_requests_total{subject="app.state",result="bad_request"} 2');
  });

  it('answers {} to both subjects while actual or desired state is not fresh', async () => {
    const { bus, store, clock, ctx } = await setup({ fresh: false });
    const single = () => ask(bus, 'app.state', '{"droplet":"app-1","version":"v1"}');
    const bulk = () => ask(bus, 'app.state.bulk', '[{"droplet":"app-1","version":"v1"}]');
    expect(await single()).toBe('{}');
    expect(await bulk()).toBe('{}');

    await store.bumpFreshness('actual', 3_600_000);
    clock.advance(ctx.freshness.actualTtlMs - 1);
    expect(await single()).toBe('{}'); // actual streak too young, and desired missing
    clock.advance(1);
    expect(await single()).toBe('{}'); // actual fresh, desired still missing

    await store.bumpFreshness('desired', 3_600_000);
    expect(await single()).toBe(APP_1);
    expect(await bulk()).toBe(`{"app-1":${APP_1}}`);

    await store.revokeFreshness('actual');
    expect(await single()).toBe('{}');
    expect(await bulk()).toBe('{}');
  });

  it('answers {} and reports unhealthy when the store fails, healthy again once it works', async () => {
    const { bus, store, source, logs } = await setup();
    const real = store.snapshot.bind(store);
    store.snapshot = async () => Promise.reject(new Error('store unavailable'));
    expect(await ask(bus, 'app.state', '{"droplet":"app-1","version":"v1"}')).toBe('{}');
    expect(await ask(bus, 'app.state.bulk', '[{"droplet":"app-1","version":"v1"}]')).toBe('{}');
    expect(source.health()).toEqual({ healthy: false, last_error: 'could not answer an app.state.bulk request: store unavailable' });
    expect(logs.some((l) => l.level === 50 && l.error === 'store unavailable')).toBe(true);
    store.snapshot = real;
    expect(await ask(bus, 'app.state', '{"droplet":"app-1","version":"v1"}')).toBe(APP_1);
    expect(source.health().healthy).toBe(true);
  });

  it('drops requests without a reply subject silently', async () => {
    const { bus, source, metrics, logs } = await setup();
    const before = logs.length;
    bus.publish('app.state', '{"droplet":"app-1","version":"v1"}');
    bus.publish('app.state.bulk', 'garbage');
    expect(source.receive({ subject: 'app.state', data: new TextEncoder().encode('{') }, 'single')).toBeUndefined();
    await source.stop();
    expect(bus.published.map((p) => p.subject)).toEqual(['app.state', 'app.state.bulk']);
    expect(logs.length).toBe(before);
    expect(await metrics.metrics()).not.toContain('hmgate_dropped_messages_total{');
  });

  it('subscribes both subjects in the queue group, with subjects and group configurable', async () => {
    const { bus, ctx } = makeStageContext({ id: 'app-state', startMs: T0 });
    const calls: { subject: string; queue?: string }[] = [];
    const subscribe = bus.subscribe.bind(bus);
    bus.subscribe = (subject, handler, opts) => {
      calls.push({ subject, queue: opts?.queue });
      return subscribe(subject, handler, opts);
    };
    new AppStateSource(OPTS, ctx).start();
    new AppStateSource({ subject: 'hm.app.state', bulk_subject: 'hm.app.state.bulk', queue: '' }, ctx).start();
    expect(calls).toEqual([
      { subject: 'app.state', queue: 'hm9000' },
      { subject: 'app.state.bulk', queue: 'hm9000' },
      { subject: 'hm.app.state', queue: undefined },
      { subject: 'hm.app.state.bulk', queue: undefined },
    ]);
  });

  it('answers on configured subjects and stops answering once stopped', async () => {
    const { bus, source } = await setup({ options: { subject: 'hm.state', bulk_subject: 'hm.state.bulk' } });
    expect(await ask(bus, 'hm.state', '{"droplet":"app-2","version":"v7"}')).toBe(APP_2);
    expect(await ask(bus, 'hm.state.bulk', '[{"droplet":"app-2","version":"v7"}]')).toBe(`{"app-2":${APP_2}}`);
    await source.stop();
    await expect(bus.request('hm.state', '{"droplet":"app-2","version":"v7"}', 50)).rejects.toThrow(/timed out/);
  });

  it('keeps going when the reply cannot be published', async () => {
    const { bus, source, logs } = await setup();
    const publish = bus.publish.bind(bus);
    bus.publish = (subject, data, reply) => {
      if (subject.startsWith('_INBOX.')) throw new Error('NATS is not connected');
      publish(subject, data, reply);
    };
    await source.receive({ subject: 'app.state', data: new TextEncoder().encode('{"droplet":"app-1","version":"v1"}'), reply: '_INBOX.x' }, 'single');
    expect(logs.some((l) => l.level === 40 && l.error === 'NATS is not connected')).toBe(true);
  });

  it('is a source plugin with HM9000 defaults', () => {
    expect(plugin.name).toBe('app-state');
    expect(plugin.kind).toBe('source');
    expect(Value.Default(AppStateOptions, {})).toEqual(OPTS);
  });
});
