import { describe, expect, it, vi } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { VirtualClock } from '../../src/sdk/clock.js';
import { isPluginDefinition, type StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { type StoreChange } from '../../src/sdk/state.js';
import { crashCount, describeStoreContract, desiredApp, heartbeat, instance, pendingStart } from '../../test/store-contract.js';
import memoryPlugin, { MemoryStore } from './index.js';

describeStoreContract('memory', async (clock) => ({ store: new MemoryStore(clock) }));

const TTL = 30_000;

describe('memory store plugin definition', () => {
  it('is a store plugin named memory with no options', () => {
    expect(isPluginDefinition(memoryPlugin)).toBe(true);
    expect(memoryPlugin.name).toBe('memory');
    expect(memoryPlugin.kind).toBe('store');
    expect(memoryPlugin.description).toMatch(/\S/);
    expect(Value.Check(memoryPlugin.optionsSchema, {})).toBe(true);
    expect(Value.Check(memoryPlugin.optionsSchema, { path: '/tmp/x' })).toBe(false);
  });

  it('creates a MemoryStore on the context clock, logging listener errors', async () => {
    const clock = new VirtualClock(42);
    const logger = { error: vi.fn() };
    const ctx = { clock, logger } as unknown as StageContext;
    const store = await memoryPlugin.create({}, ctx);
    expect(store).toBeInstanceOf(MemoryStore);
    store.onChange(() => {
      throw new Error('listener bug');
    });
    await store.bumpFreshness('actual', 1_000);
    expect((await store.snapshot()).now).toBe(42);
    expect(logger.error).toHaveBeenCalledTimes(1);
    expect(logger.error.mock.calls[0]?.[0]).toMatchObject({ change: { kind: 'freshness', which: 'actual' } });
  });
});

describe('MemoryStore', () => {
  it('uses one clock timer for all deadlines, and stop() clears it', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    store.start();
    const batch = Array.from({ length: 50 }, (_, i) => heartbeat(`dea-${i}`, [instance(`dea-${i}`, 'app-a', i)]));
    await store.saveHeartbeats(batch, TTL);
    await store.putCrashCounts([crashCount('app-a', 0, 1)], 2 * TTL);
    await store.bumpFreshness('actual', TTL / 2);
    expect(clock.pendingTimers()).toBe(1);
    expect(clock.nextDue()).toBe(TTL / 2);
    store.stop();
    expect(clock.pendingTimers()).toBe(0);
  });

  it('after stop() still drops expired records when read, and start() re-arms the timer', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    await store.saveHeartbeats([heartbeat('dea-1', [])], TTL);
    await store.saveHeartbeats([heartbeat('dea-2', [])], 3 * TTL);
    store.stop();
    changes.length = 0;
    await clock.advanceAsync(TTL);
    expect(changes).toEqual([]);
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-2']);
    expect(changes).toEqual([{ kind: 'agent', agent: 'dea-1', apps: [] }]);
    expect(clock.pendingTimers()).toBe(0);
    store.start();
    expect(clock.nextDue()).toBe(3 * TTL);
    await clock.advanceAsync(2 * TTL);
    expect(changes.at(-1)).toEqual({ kind: 'agent', agent: 'dea-2', apps: [] });
  });

  it('a bump after a deadline whose timer has not fired yet still starts a new streak', async () => {
    const clock = new VirtualClock(5_000);
    const store = new MemoryStore(clock);
    await store.bumpFreshness('actual', TTL);
    // Stopped, so no timer removes the marker: the bump itself must see it has expired.
    store.stop();
    await clock.advanceAsync(TTL);
    await store.bumpFreshness('actual', TTL);
    expect(await store.getFreshness('actual')).toEqual({ timestamp: 5_000 + TTL, expiresAt: 5_000 + 2 * TTL });
  });

  it('a renewal does not move the timer earlier or add timers', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const hb = heartbeat('dea-1', [instance('dea-1', 'app-a', 0)]);
    await store.saveHeartbeats([hb], TTL);
    for (let i = 0; i < 10; i++) {
      await clock.advanceAsync(10_000);
      await store.saveHeartbeats([hb], TTL);
    }
    expect(clock.pendingTimers()).toBe(1);
    expect((await store.getAgents()).get('dea-1')?.expiresAt).toBe(100_000 + TTL);
  });

  it('is exact at a deadline even when another timer due then fires first', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    let seen: string[] | undefined;
    // Set before the store's timer, so it fires first at the shared due time.
    clock.setTimeout(() => {
      void store.getAgents().then((agents) => {
        seen = [...agents.keys()];
      });
    }, TTL);
    await store.saveHeartbeats([heartbeat('dea-1', [])], TTL);
    await clock.advanceAsync(TTL);
    expect(seen).toEqual([]);
  });

  it('shares unchanged collections between snapshots and copies only what a write touches', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    await store.replaceDesired([desiredApp('app-a')]);
    await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
    await store.putPendingStarts([pendingStart('app-a', 1)]);
    const s1 = await store.snapshot();
    const s2 = await store.snapshot();
    expect(s2.instances).toBe(s1.instances);
    expect(s2.starts).toBe(s1.starts);
    expect(s2.desired).toBe(s1.desired);

    await store.putPendingStarts([pendingStart('app-a', 2)]);
    const s3 = await store.snapshot();
    expect(s3.starts).not.toBe(s1.starts);
    expect(s1.starts.size).toBe(1);
    expect(s3.starts.size).toBe(2);
    expect(s3.instances).toBe(s1.instances);
  });

  it('rebuilds only the apps whose instances changed, and names only those', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const a = instance('dea-1', 'app-a', 0);
    const b = instance('dea-1', 'app-b', 0);
    await store.saveHeartbeats([heartbeat('dea-1', [a, b])], TTL);
    const before = (await store.snapshot()).instances;
    const changes: StoreChange[] = [];
    store.onChange((c) => changes.push(c));
    await store.saveHeartbeats([heartbeat('dea-1', [a, { ...b, state: 'CRASHED' }])], TTL);
    const after = (await store.snapshot()).instances;
    expect(after.get(appKey('app-a', 'v1'))).toBe(before.get(appKey('app-a', 'v1')));
    expect(after.get(appKey('app-b', 'v1'))?.[0]?.state).toBe('CRASHED');
    expect(changes).toEqual([{ kind: 'agent', agent: 'dea-1', apps: [appKey('app-b', 'v1')] }]);
  });

  it('keeps the stored order when only the order of reported instances changes', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const a = instance('dea-1', 'app-a', 0);
    const b = instance('dea-1', 'app-a', 1);
    await store.saveHeartbeats([heartbeat('dea-1', [a, b])], TTL);
    await store.saveHeartbeats([heartbeat('dea-1', [b, a])], TTL);
    expect((await store.getAgents()).get('dea-1')?.instances.map((i) => i.index)).toEqual([0, 1]);
  });

  it('treats an explicitly undefined optional field like an absent one', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const a = instance('dea-1', 'app-a', 0);
    await store.saveHeartbeats([heartbeat('dea-1', [a])], TTL);
    expect((await store.saveHeartbeats([heartbeat('dea-1', [{ ...a, ccPartition: undefined }])], TTL)).changed).toEqual([]);
    expect((await store.saveHeartbeats([heartbeat('dea-1', [{ ...a, ccPartition: 'p1' }])], TTL)).changed).toEqual(['dea-1']);
  });

  it('uses the last heartbeat of an agent that appears twice in a batch', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const result = await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)]), heartbeat('dea-1', [instance('dea-1', 'app-a', 1)])], TTL);
    expect(result.changed).toEqual(['dea-1']);
    expect((await store.getAgents()).get('dea-1')?.instances.map((i) => i.index)).toEqual([1]);
  });

  it('keeps its own copies: changing what a writer passed in does not change the store', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    const inst = instance('dea-1', 'app-a', 0);
    await store.saveHeartbeats([heartbeat('dea-1', [inst])], TTL);
    inst.state = 'CRASHED';
    expect((await store.snapshot()).instances.get(appKey('app-a', 'v1'))?.[0]?.state).toBe('RUNNING');
  });

  it('rejects malformed writes without changing state', async () => {
    const clock = new VirtualClock();
    const store = new MemoryStore(clock);
    await store.replaceDesired([desiredApp('app-a')]);
    await expect(store.replaceDesired([desiredApp('app-b'), { ...desiredApp('x'), guid: '' }])).rejects.toThrow(/guid/);
    expect([...(await store.getDesired()).keys()]).toEqual([appKey('app-a', 'v1')]);
    await expect(store.saveHeartbeats([heartbeat('dea-1', []), { agent: 'dea-2', instances: undefined as never }], TTL)).rejects.toThrow(/instances/);
    expect((await store.getAgents()).size).toBe(0);
    await expect(store.bumpFreshness('bogus' as never, TTL)).rejects.toThrow(/freshness kind/);
    expect((await store.snapshot()).freshness).toEqual({});
  });

  it('a throwing listener neither fails the write nor starves other listeners', async () => {
    const clock = new VirtualClock();
    const errors: unknown[] = [];
    const store = new MemoryStore(clock, { onListenerError: (err) => errors.push(err) });
    const seen: StoreChange[] = [];
    store.onChange(() => {
      throw new Error('listener bug');
    });
    store.onChange((c) => seen.push(c));
    await expect(store.replaceDesired([desiredApp('app-a')])).resolves.toBeUndefined();
    expect(seen).toEqual([{ kind: 'desired' }]);
    expect(errors).toHaveLength(1);
    expect((await store.getDesired()).size).toBe(1);
  });

  it('the same listener subscribed twice is called twice and unsubscribed once per handle', async () => {
    const store = new MemoryStore(new VirtualClock());
    const calls: StoreChange[] = [];
    const listener = (c: StoreChange) => calls.push(c);
    const off1 = store.onChange(listener);
    store.onChange(listener);
    await store.revokeFreshness('actual');
    await store.bumpFreshness('actual', TTL);
    expect(calls).toHaveLength(2);
    off1();
    await store.bumpFreshness('actual', TTL);
    expect(calls).toHaveLength(3);
  });
});
