import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import type { InstanceHeartbeat } from '../../src/sdk/state.js';
import plugin, { EVACUATING_PRIORITY, Evacuator } from './index.js';

const exited = (reason: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({
    cc_partition: 'default',
    droplet: 'app-1',
    version: 'v1',
    instance: 'i-1',
    index: 1,
    reason,
    exit_status: 2,
    exit_description: 'x',
    crash_timestamp: 3,
    ...extra,
  });

function setup(verify = false) {
  const t = makeStageContext({ id: 'evacuator' });
  const evacuator = new Evacuator({ subject: 'droplet.exited', grace_period: 30_000, verify }, t.ctx);
  evacuator.start();
  return { ...t, evacuator };
}

describe('evacuator, verify: false (docs/hm9000.md#evacuator)', () => {
  it.each(['DEA_SHUTDOWN', 'DEA_EVACUATION'])('%s writes an immediate, verification-skipping EVACUATING start', async (reason) => {
    const { bus, store, clock, logs, evacuator } = setup();
    bus.publish('droplet.exited', exited(reason));
    await evacuator.stop();
    const starts = await store.getPendingStarts();
    expect([...starts.keys()]).toEqual(['app-1-v1-1']);
    expect(starts.get('app-1-v1-1')).toEqual({
      messageId: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[4-7][0-9a-f]{3}-[0-9a-f]{12}$/),
      sendOn: clock.now(),
      sentOn: 0,
      keepAlive: 30_000,
      app: 'app-1',
      version: 'v1',
      index: 1,
      priority: EVACUATING_PRIORITY,
      skipVerification: true,
      reason: 'EVACUATING',
    });
    expect(logs.some((l) => l.msg === 'Scheduling start message for droplet.exited message' && l.exit_reason === reason)).toBe(true);
  });

  it.each(['STOPPED', 'CRASHED', 'SOMETHING_ELSE'])('%s writes nothing', async (reason) => {
    const { bus, store, evacuator } = setup();
    bus.publish('droplet.exited', exited(reason));
    await evacuator.stop();
    expect((await store.getPendingStarts()).size).toBe(0);
  });

  it('overwrites a pending start for the same index (the analyzer never does)', async () => {
    const { store, clock, evacuator } = setup();
    await store.putPendingStarts([
      {
        messageId: 'old',
        sendOn: clock.now() + 30_000,
        sentOn: 0,
        keepAlive: 0,
        app: 'app-1',
        version: 'v1',
        index: 1,
        priority: 1,
        skipVerification: false,
        reason: 'MISSING',
      },
    ]);
    await evacuator.receive(exited('DEA_EVACUATION'));
    const start = (await store.getPendingStarts()).get('app-1-v1-1')!;
    expect(start.reason).toBe('EVACUATING');
    expect(start.messageId).not.toBe('old');
    expect(start.sendOn).toBe(clock.now());
  });

  it('accepts a message without the optional crash_timestamp', async () => {
    const { store, evacuator } = setup();
    const { crash_timestamp: _c, ...rest } = JSON.parse(exited('DEA_SHUTDOWN'));
    await evacuator.receive(JSON.stringify(rest));
    expect((await store.getPendingStarts()).size).toBe(1);
  });

  it('drops bad input with a counted reason and writes nothing', async () => {
    const { store, metrics, logs, evacuator } = setup();
    for (const bad of [
      '{',
      '[]',
      '{"droplet":"a"}',
      exited('DEA_SHUTDOWN', { index: -1 }),
      exited('DEA_SHUTDOWN', { index: '1' }),
      'x'.repeat(1024 * 1024 + 1),
    ]) {
      expect(evacuator.receive(bad)).toBeUndefined();
    }
    expect((await store.getPendingStarts()).size).toBe(0);
    const dropped = (await metrics.getSingleMetric('hmgate_dropped_messages_total')!.get()).values;
    const byReason = Object.fromEntries(dropped.map((v) => [v.labels.reason, v.value]));
    expect(byReason).toEqual({ bad_json: 1, invalid: 4, too_large: 1 });
    expect(logs.filter((l) => /^dropped a message on droplet\.exited/.test(String(l.msg))).length).toBe(3); // one per reason, rate-limited
  });

  it('survives 10 000 generated messages: no throw, no write from an invalid one', async () => {
    const { store, evacuator } = setup();
    const valid = fc.record({
      droplet: fc.string({ minLength: 1 }),
      version: fc.string(),
      index: fc.nat(),
      reason: fc.constantFrom('DEA_SHUTDOWN', 'DEA_EVACUATION', 'STOPPED', 'CRASHED'),
    });
    const anything = fc.oneof(
      valid.map((v) => ({ kind: 'valid' as const, text: JSON.stringify(v), v })),
      fc.jsonValue().map((j) => ({ kind: 'json' as const, text: JSON.stringify(j), v: undefined })),
      fc.string().map((s) => ({ kind: 'text' as const, text: s, v: undefined })),
      fc.uint8Array().map((b) => ({ kind: 'bytes' as const, text: Buffer.from(b).toString('latin1'), v: undefined })),
    );
    await fc.assert(
      fc.asyncProperty(anything, async (m) => {
        const before = (await store.getPendingStarts()).size;
        const write = evacuator.receive(m.text);
        await write;
        const after = await store.getPendingStarts();
        const evacuating = m.v && (m.v.reason === 'DEA_SHUTDOWN' || m.v.reason === 'DEA_EVACUATION');
        if (m.kind === 'valid' && evacuating) {
          expect(after.get(`${m.v!.droplet}-${m.v!.version}-${m.v!.index}`)?.reason).toBe('EVACUATING');
        } else if (m.kind === 'valid' || write === undefined) {
          expect(after.size).toBe(before);
        }
      }),
      { numRuns: 10_000 },
    );
  });
});

describe('evacuator, verify: true (the default)', () => {
  const beat = (agent: string, instance: string, index: number, state = 'RUNNING'): InstanceHeartbeat => ({
    app: 'app-1',
    version: 'v1',
    instance,
    index,
    state,
    stateTimestamp: 1,
    agent,
  });

  /** app-1 v1 desired with 3 instances, desired state fresh, agents reporting `beats`. */
  async function verified(beats: InstanceHeartbeat[] = [], desired: { instances?: number; state?: string } = {}) {
    const t = setup(true);
    await t.store.replaceDesired([
      { guid: 'app-1', version: 'v1', instances: desired.instances ?? 3, state: desired.state ?? 'STARTED', packageState: 'STAGED' },
    ]);
    await t.store.bumpFreshness('desired', 120_000);
    const byAgent = new Map<string, InstanceHeartbeat[]>();
    for (const b of beats) byAgent.set(b.agent, [...(byAgent.get(b.agent) ?? []), b]);
    await t.store.saveHeartbeats(
      [...byAgent].map(([agent, instances]) => ({ agent, instances })),
      30_000,
    );
    const refused = async () => {
      const values = (await t.metrics.getSingleMetric('hmgate_orders_suppressed_total')?.get())?.values ?? [];
      return values.filter((v) => v.labels.action === 'start' && v.labels.why === 'verification').reduce((n, v) => n + v.value, 0);
    };
    const refusals = () => t.logs.filter((l) => /^Not starting /.test(String(l.msg)));
    return { ...t, refused, refusals };
  }

  it('an index beyond one desired instance says "1 desired instance"', async () => {
    const t = await verified([], { instances: 1 });
    await t.evacuator.receive(exited('DEA_SHUTDOWN', { index: 3 }));
    expect(String(t.refusals()[0]!.msg)).toMatch(/index 3 is beyond the 1 desired instance\b(?!s)/);
  });

  it('is the default of the plugin', () => {
    expect(plugin.optionsSchema.properties.verify.default).toBe(true);
  });

  it.each(['DEA_SHUTDOWN', 'DEA_EVACUATION'])('%s of a desired index that runs nowhere else: the start is written', async (reason) => {
    const t = await verified([beat('dea-1', 'i-1', 1), beat('dea-2', 'i-0', 0)]);
    await t.evacuator.receive(exited(reason));
    expect((await t.store.getPendingStarts()).get('app-1-v1-1')).toMatchObject({ reason: 'EVACUATING', priority: EVACUATING_PRIORITY, sendOn: t.clock.now() });
    expect(await t.refused()).toBe(0);
    expect(t.logs.some((l) => l.msg === 'Scheduling start message for droplet.exited message' && l.verified === true)).toBe(true);
  });

  it('the exited instance, and its agent, still listed RUNNING (an agent that shut down) do not block the start', async () => {
    const t = await verified([beat('dea-1', 'i-1', 1), beat('dea-1', 'i-1b', 1)]);
    await t.evacuator.receive(exited('DEA_SHUTDOWN'));
    expect((await t.store.getPendingStarts()).has('app-1-v1-1')).toBe(true);
  });

  it('an EVACUATING or CRASHED copy elsewhere does not block the start', async () => {
    const t = await verified([beat('dea-2', 'i-x', 1, 'EVACUATING'), beat('dea-3', 'i-y', 1, 'CRASHED')]);
    await t.evacuator.receive(exited('DEA_EVACUATION'));
    expect((await t.store.getPendingStarts()).has('app-1-v1-1')).toBe(true);
  });

  const refusedCases: [string, (t: Awaited<ReturnType<typeof verified>>) => Promise<void>, string, string, RegExp][] = [
    ['an app the CC does not desire', async () => {}, exited('DEA_EVACUATION', { droplet: 'forged-app' }), 'not_desired', /does not desire this app/],
    ['an old version of the app', async () => {}, exited('DEA_EVACUATION', { version: 'v0' }), 'not_desired', /does not desire this app at this version/],
    ['index 9999', async () => {}, exited('DEA_SHUTDOWN', { index: 9999 }), 'index_not_desired', /index 9999 is beyond the 3 desired instances/],
    [
      'the index running on another agent',
      async (t) => void (await t.store.saveHeartbeats([{ agent: 'dea-2', instances: [beat('dea-2', 'i-other', 1)] }], 30_000)),
      exited('DEA_EVACUATION'),
      'running_elsewhere',
      /already runs elsewhere \(instance i-other on dea-2\)/,
    ],
    [
      'the index starting on another agent',
      async (t) => void (await t.store.saveHeartbeats([{ agent: 'dea-2', instances: [beat('dea-2', 'i-new', 1, 'STARTING')] }], 30_000)),
      exited('DEA_EVACUATION'),
      'starting_elsewhere',
      /already starting elsewhere/,
    ],
    [
      'desired state not fresh',
      async (t) => t.store.revokeFreshness('desired'),
      exited('DEA_SHUTDOWN'),
      'desired_not_fresh',
      /desired state is not fresh .* cannot be verified/,
    ],
    [
      'a start for the index sent and still awaited',
      async (t) =>
        t.store.putPendingStarts([
          {
            messageId: 'm',
            sendOn: t.clock.now() - 5_000,
            sentOn: t.clock.now() - 5_000,
            keepAlive: 30_000,
            app: 'app-1',
            version: 'v1',
            index: 1,
            priority: 2,
            skipVerification: false,
            reason: 'EVACUATING',
          },
        ]),
      exited('DEA_EVACUATION'),
      'start_already_sent',
      /sent 5s ago and is still awaited/,
    ],
  ];

  it.each(refusedCases)('%s: not started, counted, logged with why', async (_what, arrange, message, why, detail) => {
    const t = await verified();
    await arrange(t);
    const before = new Map(await t.store.getPendingStarts());
    await t.evacuator.receive(message);
    expect(new Map(await t.store.getPendingStarts())).toEqual(before);
    expect(await t.refused()).toBe(1);
    const [line, ...more] = t.refusals();
    expect(more).toEqual([]);
    expect(line).toMatchObject({ level: 40, why, component: 'evacuator' });
    expect(String(line!.msg)).toMatch(detail);
  });

  it('a stopped app is not started', async () => {
    const t = await verified([], { state: 'STOPPED' });
    await t.evacuator.receive(exited('DEA_SHUTDOWN'));
    expect((await t.store.getPendingStarts()).size).toBe(0);
    expect(t.refusals()[0]).toMatchObject({ why: 'not_started' });
  });

  it('with no desired state at all (no fetch yet), nothing is started and the log says so', async () => {
    const t = setup(true);
    await t.evacuator.receive(exited('DEA_SHUTDOWN'));
    expect((await t.store.getPendingStarts()).size).toBe(0);
    expect(t.logs.find((l) => /^Not starting /.test(String(l.msg)))).toMatchObject({ why: 'desired_not_fresh' });
  });

  it('a flood of forged exits: each counted, logged once per reason per 10 s, nothing started', async () => {
    const t = await verified();
    for (let i = 0; i < 500; i++) await t.evacuator.receive(exited('DEA_EVACUATION', { droplet: `forged-${i}` }));
    expect((await t.store.getPendingStarts()).size).toBe(0);
    expect(await t.refused()).toBe(500);
    expect(t.refusals()).toHaveLength(1);
    t.clock.advance(10_000);
    await t.evacuator.receive(exited('DEA_EVACUATION', { droplet: 'forged-late' }));
    expect(t.refusals()).toHaveLength(2);
    expect(t.refusals()[1]).toMatchObject({ refused_since_last_log: 499 });
  });

  it('a store that cannot be read starts nothing', async () => {
    const t = await verified();
    t.store.snapshot = () => Promise.reject(new Error('etcd unreachable'));
    await t.evacuator.receive(exited('DEA_SHUTDOWN'));
    expect((await t.store.getPendingStarts()).size).toBe(0);
    expect(t.refusals()[0]).toMatchObject({ why: 'store_unreadable' });
  });

  it('10 000 generated exits against an empty store: nothing is ever written', async () => {
    const { store, evacuator } = setup(true);
    const exit = fc.record({
      droplet: fc.string({ minLength: 1 }),
      version: fc.string(),
      instance: fc.string(),
      index: fc.nat(),
      reason: fc.constantFrom('DEA_SHUTDOWN', 'DEA_EVACUATION'),
    });
    await fc.assert(
      fc.asyncProperty(exit, async (m) => {
        await evacuator.receive(JSON.stringify(m));
        expect((await store.getPendingStarts()).size).toBe(0);
      }),
      { numRuns: 10_000 },
    );
  });
});
