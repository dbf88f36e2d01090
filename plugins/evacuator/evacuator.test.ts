import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import { EVACUATING_PRIORITY, Evacuator } from './index.js';

const exited = (reason: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ cc_partition: 'default', droplet: 'app-1', version: 'v1', instance: 'i-1', index: 1, reason, exit_status: 2, exit_description: 'x', crash_timestamp: 3, ...extra });

function setup() {
  const t = makeStageContext({ id: 'evacuator' });
  const evacuator = new Evacuator({ subject: 'droplet.exited', grace_period: 30_000 }, t.ctx);
  evacuator.start();
  return { ...t, evacuator };
}

describe('evacuator (HM9000 §10)', () => {
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
      { messageId: 'old', sendOn: clock.now() + 30_000, sentOn: 0, keepAlive: 0, app: 'app-1', version: 'v1', index: 1, priority: 1, skipVerification: false, reason: 'MISSING' },
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
    for (const bad of ['{', '[]', '{"droplet":"a"}', exited('DEA_SHUTDOWN', { index: -1 }), exited('DEA_SHUTDOWN', { index: '1' }), 'x'.repeat(1024 * 1024 + 1)]) {
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
