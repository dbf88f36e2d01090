/**
 * The behaviour every Store plugin must have. A store's test file calls describeStoreContract with a
 * factory; all TTLs run on the VirtualClock handed to the factory, and time only moves through
 * advanceAsync, so a store whose expiries involve async work is exercised the same way.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VirtualClock } from '../src/sdk/clock.js';
import { isActualFresh, isDesiredFresh } from '../src/sdk/freshness.js';
import { appKey } from '../src/sdk/app-key.js';
import {
  crashKey,
  startKey,
  stopKey,
  type AgentHeartbeat,
  type CrashCount,
  type DesiredApp,
  type InstanceHeartbeat,
  type PendingStart,
  type PendingStop,
  type StoreChange,
  type StoreSnapshot,
} from '../src/sdk/state.js';
import { type Store } from '../src/sdk/store.js';

export type StoreFactory = (clock: VirtualClock) => Promise<{ store: Store; cleanup?: () => Promise<void> }>;

const START = 1_000_000;
const TTL = 30_000;

export function desiredApp(guid: string, version = 'v1', instances = 1, state = 'STARTED'): DesiredApp {
  return { guid, version, instances, state, packageState: 'STAGED', updatedAt: '2024-01-01T00:00:00Z' };
}

export function instance(agent: string, app: string, index: number, state = 'RUNNING', version = 'v1'): InstanceHeartbeat {
  return { app, version, instance: `${app}-${version}-${index}@${agent}`, index, state, stateTimestamp: 1_700_000_000, agent };
}

/** A heartbeat whose instance list the test may still change (to check the store copied it). */
export function heartbeat(agent: string, instances: InstanceHeartbeat[]): AgentHeartbeat & { instances: InstanceHeartbeat[] } {
  return { agent, instances };
}

export function crashCount(app: string, index: number, count: number, createdAt = 0, version = 'v1'): CrashCount {
  return { app, version, index, count, createdAt };
}

export function pendingStart(app: string, index: number, sendOn = 0, version = 'v1'): PendingStart {
  return {
    messageId: `start-${app}-${index}-${sendOn}`,
    sendOn,
    sentOn: 0,
    keepAlive: 10_000,
    app,
    version,
    index,
    priority: 1,
    skipVerification: false,
    reason: 'missing',
  };
}

export function pendingStop(instanceGuid: string, app = 'app-a', sendOn = 0, version = 'v1'): PendingStop {
  return { messageId: `stop-${instanceGuid}-${sendOn}`, sendOn, sentOn: 0, keepAlive: 10_000, app, version, instance: instanceGuid, reason: 'extra' };
}

/** Order-independent plain form of a snapshot, for deep comparison across time. */
export function plainSnapshot(s: StoreSnapshot): unknown {
  const sortedEntries = <V>(m: ReadonlyMap<string, V>, norm: (v: V) => unknown = (v) => v) =>
    [...m.entries()].map(([k, v]) => [k, norm(v)] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const sortInstances = (list: readonly InstanceHeartbeat[]) => [...list].sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
  const sortCrashes = (list: readonly CrashCount[]) => [...list].sort((a, b) => (crashKey(a) < crashKey(b) ? -1 : 1));
  return structuredClone({
    now: s.now,
    desired: sortedEntries(s.desired),
    instances: sortedEntries(s.instances, sortInstances),
    crashCounts: sortedEntries(s.crashCounts, sortCrashes),
    starts: sortedEntries(s.starts),
    stops: sortedEntries(s.stops),
    freshness: { actual: s.freshness.actual, desired: s.freshness.desired },
  });
}

function sortedKeys(m: ReadonlyMap<string, unknown>): string[] {
  return [...m.keys()].sort();
}

function instanceIds(list: readonly InstanceHeartbeat[] | undefined): string[] {
  return (list ?? []).map((i) => i.instance).sort();
}

export function describeStoreContract(name: string, make: StoreFactory): void {
  describe(`Store contract: ${name}`, () => {
    let clock: VirtualClock;
    let store: Store;
    let changes: StoreChange[];
    let opened: { store: Store; cleanup?: () => Promise<void> }[] = [];

    const advance = (ms: number) => clock.advanceAsync(ms);
    const advanceTo = (t: number) => clock.advanceToAsync(t);

    /** A started store on a clock starting at `startMs`, stopped and cleaned up after the test. */
    async function open(startMs: number): Promise<{ clock: VirtualClock; store: Store }> {
      const c = new VirtualClock(startMs);
      const made = await make(c);
      opened.push(made);
      await made.store.start?.();
      return { clock: c, store: made.store };
    }

    beforeEach(async () => {
      // Not 0, so a store that treats time 0 as "unset" fails.
      ({ clock, store } = await open(START));
      changes = [];
      store.onChange((c) => changes.push(c));
    });

    afterEach(async () => {
      for (const made of opened.reverse()) {
        await made.store.stop?.();
        await made.cleanup?.();
      }
      opened = [];
    });

    describe('desired state', () => {
      it('is empty at first', async () => {
        expect((await store.getDesired()).size).toBe(0);
      });

      it('is keyed by appKey(guid, version), with versions as separate apps', async () => {
        const a1 = desiredApp('app-a', 'v1', 2);
        const a2 = desiredApp('app-a', 'v2', 3);
        const b = desiredApp('app-b', 'v1', 1, 'STOPPED');
        await store.replaceDesired([a1, a2, b]);
        const desired = await store.getDesired();
        expect(sortedKeys(desired)).toEqual([appKey('app-a', 'v1'), appKey('app-a', 'v2'), appKey('app-b', 'v1')].sort());
        expect(desired.get(appKey('app-a', 'v1'))).toEqual(a1);
        expect(desired.get(appKey('app-a', 'v2'))).toEqual(a2);
        expect(desired.get(appKey('app-b', 'v1'))).toEqual(b);
      });

      it('replaces the whole set: apps absent from the new set disappear', async () => {
        await store.replaceDesired([desiredApp('app-a'), desiredApp('app-b')]);
        await store.replaceDesired([desiredApp('app-b', 'v1', 5), desiredApp('app-c')]);
        const desired = await store.getDesired();
        expect(sortedKeys(desired)).toEqual([appKey('app-b', 'v1'), appKey('app-c', 'v1')]);
        expect(desired.get(appKey('app-b', 'v1'))?.instances).toBe(5);
        await store.replaceDesired([]);
        expect((await store.getDesired()).size).toBe(0);
      });

      it('accepts any iterable', async () => {
        function* apps() {
          yield desiredApp('app-a');
          yield desiredApp('app-b');
        }
        await store.replaceDesired(apps());
        expect(sortedKeys(await store.getDesired())).toEqual([appKey('app-a', 'v1'), appKey('app-b', 'v1')]);
      });

      it('emits a desired change', async () => {
        await store.replaceDesired([desiredApp('app-a')]);
        expect(changes).toEqual([{ kind: 'desired' }]);
      });

      it('is not affected by the caller mutating its input afterwards', async () => {
        const app = desiredApp('app-a', 'v1', 2);
        await store.replaceDesired([app]);
        app.instances = 99;
        expect((await store.getDesired()).get(appKey('app-a', 'v1'))?.instances).toBe(2);
      });

      it('keeps a returned map unchanged by a later replace', async () => {
        await store.replaceDesired([desiredApp('app-a')]);
        const before = await store.getDesired();
        await store.replaceDesired([desiredApp('app-b')]);
        expect(sortedKeys(before)).toEqual([appKey('app-a', 'v1')]);
        expect(sortedKeys(await store.getDesired())).toEqual([appKey('app-b', 'v1')]);
      });
    });

    describe('heartbeats and agent presence', () => {
      it('saves each agent with its instances and a presence deadline of now + ttl', async () => {
        const i1 = instance('dea-1', 'app-a', 0);
        const i2 = instance('dea-1', 'app-b', 0);
        const result = await store.saveHeartbeats([heartbeat('dea-1', [i1, i2])], TTL);
        expect(result.changed).toEqual(['dea-1']);
        const agents = await store.getAgents();
        expect(sortedKeys(agents)).toEqual(['dea-1']);
        const rec = agents.get('dea-1')!;
        expect(rec.agent).toBe('dea-1');
        expect(rec.expiresAt).toBe(START + TTL);
        expect(instanceIds(rec.instances)).toEqual([i1.instance, i2.instance].sort());
        expect(rec.instances.find((i) => i.instance === i1.instance)).toEqual(i1);
      });

      it('renews the deadline on every save, changed or not', async () => {
        const hb = heartbeat('dea-1', [instance('dea-1', 'app-a', 0)]);
        await store.saveHeartbeats([hb], TTL);
        await advance(10_000);
        await store.saveHeartbeats([hb], TTL);
        expect((await store.getAgents()).get('dea-1')?.expiresAt).toBe(START + 10_000 + TTL);
        // The first save's deadline passes: still present.
        await advanceTo(START + TTL);
        expect((await store.getAgents()).has('dea-1')).toBe(true);
        await advanceTo(START + 10_000 + TTL - 1);
        expect((await store.getAgents()).has('dea-1')).toBe(true);
        await advance(1);
        expect((await store.getAgents()).has('dea-1')).toBe(false);
      });

      it('reports an identical save, or the same instances in another order, as unchanged', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-1', 'app-a', 1);
        const c = instance('dea-1', 'app-b', 0);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [a, b, c])], TTL)).changed).toEqual(['dea-1']);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [a, b, c])], TTL)).changed).toEqual([]);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [{ ...c }, { ...a }, { ...b }])], TTL)).changed).toEqual([]);
      });

      it('reports a state change, a new instance and a removed instance as changed', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-1', 'app-a', 1);
        await store.saveHeartbeats([heartbeat('dea-1', [a])], TTL);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [{ ...a, state: 'CRASHED' }])], TTL)).changed).toEqual(['dea-1']);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [{ ...a, state: 'CRASHED' }, b])], TTL)).changed).toEqual(['dea-1']);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [b])], TTL)).changed).toEqual(['dea-1']);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [])], TTL)).changed).toEqual(['dea-1']);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [])], TTL)).changed).toEqual([]);
      });

      it('lists only the agents of a batch whose instance set changed', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-2', 'app-a', 1);
        const c = instance('dea-3', 'app-b', 0);
        const first = await store.saveHeartbeats([heartbeat('dea-1', [a]), heartbeat('dea-2', [b]), heartbeat('dea-3', [c])], TTL);
        expect([...first.changed].sort()).toEqual(['dea-1', 'dea-2', 'dea-3']);
        const second = await store.saveHeartbeats([heartbeat('dea-1', [a]), heartbeat('dea-2', [{ ...b, state: 'STARTING' }]), heartbeat('dea-3', [c])], TTL);
        expect(second.changed).toEqual(['dea-2']);
      });

      it('reads an agent of many instances back exactly through state changes, a change back, another order and set changes', async () => {
        // Large enough that a store may write only what changed (the etcd store's deltas).
        const agent = 'dea-big';
        const make = (changed: Record<number, Partial<InstanceHeartbeat>> = {}, n = 60): InstanceHeartbeat[] =>
          Array.from({ length: n }, (_, i) => ({ ...instance(agent, `app-${i % 3}`, i), ...changed[i] }));
        const crashed = { state: 'CRASHED', stateTimestamp: 1_700_000_050 };
        const steps: InstanceHeartbeat[][] = [
          make(),
          make({ 4: crashed, 17: crashed }),
          make({ 17: crashed }),
          make({ 17: crashed, 5: { index: 99 } }),
          make({ 17: crashed, 5: { ...crashed, index: 98 } }),
          make(),
          make({ 9: crashed }).reverse(),
          make({ 9: crashed }, 61),
          make({ 9: crashed, 60: crashed }, 61),
          make({ 9: crashed, 60: crashed, 30: { ccPartition: 'other' } }, 61),
        ];
        const byInstance = (list: readonly InstanceHeartbeat[]) => [...list].sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
        for (const [n, list] of steps.entries()) {
          await advance(10_000);
          expect((await store.saveHeartbeats([heartbeat(agent, list)], TTL)).changed, `step ${n}`).toEqual([agent]);
          expect(byInstance((await store.getAgents()).get(agent)!.instances), `step ${n}`).toEqual(byInstance(list));
          const snap = await store.snapshot();
          for (const app of ['app-0', 'app-1', 'app-2']) {
            expect(byInstance(snap.instances.get(appKey(app, 'v1')) ?? []), `step ${n} ${app}`).toEqual(byInstance(list.filter((i) => i.app === app)));
          }
        }
        // Unchanged heartbeats keep it, as saved, until it lapses.
        for (let t = 0; t < 6; t++) {
          await advance(10_000);
          expect((await store.saveHeartbeats([heartbeat(agent, steps.at(-1)!)], TTL)).changed).toEqual([]);
        }
        expect(byInstance((await store.getAgents()).get(agent)!.instances)).toEqual(byInstance(steps.at(-1)!));
        await advance(TTL);
        expect((await store.getAgents()).has(agent)).toBe(false);
        expect((await store.snapshot()).instances.size).toBe(0);
      });

      it('counts a newly present agent as changed even without instances', async () => {
        expect((await store.saveHeartbeats([heartbeat('dea-1', [])], TTL)).changed).toEqual(['dea-1']);
        expect((await store.getAgents()).get('dea-1')?.instances).toEqual([]);
      });

      it('replaces the instance set: an instance the agent stops reporting is gone after its next save', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-1', 'app-a', 1);
        await store.saveHeartbeats([heartbeat('dea-1', [a, b])], TTL);
        expect(instanceIds((await store.snapshot()).instances.get(appKey('app-a', 'v1')))).toEqual([a.instance, b.instance].sort());
        await store.saveHeartbeats([heartbeat('dea-1', [b])], TTL);
        expect(instanceIds((await store.getAgents()).get('dea-1')?.instances)).toEqual([b.instance]);
        expect(instanceIds((await store.snapshot()).instances.get(appKey('app-a', 'v1')))).toEqual([b.instance]);
      });

      it('keeps other agents\u2019 instances when one agent saves', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-2', 'app-a', 1);
        await store.saveHeartbeats([heartbeat('dea-1', [a]), heartbeat('dea-2', [b])], TTL);
        await store.saveHeartbeats([heartbeat('dea-1', [])], TTL);
        expect(instanceIds((await store.snapshot()).instances.get(appKey('app-a', 'v1')))).toEqual([b.instance]);
      });

      it('drops an agent whose presence lapses: alive iff now < last save + ttl', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-2', 'app-a', 1);
        await store.saveHeartbeats([heartbeat('dea-1', [a])], TTL);
        await advance(5_000);
        await store.saveHeartbeats([heartbeat('dea-2', [b])], TTL);
        await advanceTo(START + TTL - 1);
        expect(sortedKeys(await store.getAgents())).toEqual(['dea-1', 'dea-2']);
        await advance(1);
        expect(sortedKeys(await store.getAgents())).toEqual(['dea-2']);
        const snap = await store.snapshot();
        expect(instanceIds(snap.instances.get(appKey('app-a', 'v1')))).toEqual([b.instance]);
        await advanceTo(START + 5_000 + TTL);
        expect((await store.getAgents()).size).toBe(0);
        expect((await store.snapshot()).instances.size).toBe(0);
      });

      it('emits the expiry from a clock timer, with the apps it affected, without any read', async () => {
        await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0), instance('dea-1', 'app-b', 0, 'RUNNING', 'v2')])], TTL);
        changes.length = 0;
        await advance(TTL - 1);
        expect(changes).toEqual([]);
        await advance(1);
        expect(changes).toHaveLength(1);
        const change = changes[0]!;
        expect(change.kind).toBe('agent');
        if (change.kind !== 'agent') return;
        expect(change.agent).toBe('dea-1');
        expect([...change.apps].sort()).toEqual([appKey('app-a', 'v1'), appKey('app-b', 'v2')].sort());
      });

      it('emits an agent change naming the affected apps when instances change, and none for a pure renewal', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-1', 'app-b', 0);
        await store.saveHeartbeats([heartbeat('dea-1', [a, b])], TTL);
        expect(changes).toHaveLength(1);
        expect(changes[0]).toMatchObject({ kind: 'agent', agent: 'dea-1' });
        changes.length = 0;
        await store.saveHeartbeats([heartbeat('dea-1', [b, a])], TTL);
        expect(changes).toEqual([]);
        await store.saveHeartbeats([heartbeat('dea-1', [a, { ...b, state: 'CRASHED' }])], TTL);
        expect(changes).toHaveLength(1);
        const change = changes[0]!;
        // Which other apps of the agent are named is up to the store; the changed one must be.
        expect(change.kind === 'agent' && change.apps).toContain(appKey('app-b', 'v1'));
      });

      it('removeAgent removes the agent and its instances at once', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const b = instance('dea-2', 'app-a', 1);
        await store.saveHeartbeats([heartbeat('dea-1', [a]), heartbeat('dea-2', [b])], TTL);
        changes.length = 0;
        await store.removeAgent('dea-1');
        expect(sortedKeys(await store.getAgents())).toEqual(['dea-2']);
        expect(instanceIds((await store.snapshot()).instances.get(appKey('app-a', 'v1')))).toEqual([b.instance]);
        expect(changes).toEqual([{ kind: 'agent', agent: 'dea-1', apps: [appKey('app-a', 'v1')] }]);
        // Its old deadline passing later does nothing more.
        changes.length = 0;
        await advance(TTL);
        expect(changes.filter((c) => c.kind === 'agent' && c.agent === 'dea-1')).toEqual([]);
      });

      it('removeAgent of an unknown agent is a no-op', async () => {
        await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
        await expect(store.removeAgent('nope')).resolves.toBeUndefined();
        expect(sortedKeys(await store.getAgents())).toEqual(['dea-1']);
      });

      it('an agent that lapsed and heartbeats again is present and changed', async () => {
        const a = instance('dea-1', 'app-a', 0);
        await store.saveHeartbeats([heartbeat('dea-1', [a])], TTL);
        await advance(TTL);
        expect((await store.getAgents()).has('dea-1')).toBe(false);
        expect((await store.saveHeartbeats([heartbeat('dea-1', [a])], TTL)).changed).toEqual(['dea-1']);
        expect(instanceIds((await store.snapshot()).instances.get(appKey('app-a', 'v1')))).toEqual([a.instance]);
      });

      it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY])('rejects ttl %s with an Error and leaves state unchanged', async (ttl) => {
        const a = instance('dea-1', 'app-a', 0);
        await store.saveHeartbeats([heartbeat('dea-1', [a])], TTL);
        const before = plainSnapshot(await store.snapshot());
        changes.length = 0;
        await expect(store.saveHeartbeats([heartbeat('dea-1', []), heartbeat('dea-2', [instance('dea-2', 'app-b', 0)])], ttl)).rejects.toThrow(/ttl/i);
        expect(plainSnapshot(await store.snapshot())).toEqual(before);
        expect(sortedKeys(await store.getAgents())).toEqual(['dea-1']);
        expect((await store.getAgents()).get('dea-1')?.expiresAt).toBe(START + TTL);
        expect(changes).toEqual([]);
      });

      it('is not affected by the caller mutating its input afterwards', async () => {
        const a = instance('dea-1', 'app-a', 0);
        const hb = heartbeat('dea-1', [a]);
        await store.saveHeartbeats([hb], TTL);
        a.state = 'CRASHED';
        hb.instances.push(instance('dea-1', 'app-a', 1));
        const rec = (await store.getAgents()).get('dea-1')!;
        expect(rec.instances).toHaveLength(1);
        expect(rec.instances[0]?.state).toBe('RUNNING');
      });
    });

    describe('crash counts', () => {
      it('are keyed by crashKey and read back as written', async () => {
        const c1 = crashCount('app-a', 0, 1, START);
        const c2 = crashCount('app-a', 1, 3, START);
        const c3 = crashCount('app-a', 0, 2, START, 'v2');
        await store.putCrashCounts([c1, c2, c3], TTL);
        const counts = await store.getCrashCounts();
        expect(sortedKeys(counts)).toEqual([crashKey(c1), crashKey(c2), crashKey(c3)].sort());
        expect(counts.get(crashKey(c2))).toEqual(c2);
        expect(counts.get(crashKey(c3))).toEqual(c3);
      });

      it('put overwrites the count under the same key', async () => {
        await store.putCrashCounts([crashCount('app-a', 0, 1, START)], TTL);
        await store.putCrashCounts([crashCount('app-a', 0, 2, START)], TTL);
        const counts = await store.getCrashCounts();
        expect(counts.size).toBe(1);
        expect(counts.get(crashKey({ app: 'app-a', version: 'v1', index: 0 }))?.count).toBe(2);
      });

      it('expire at put time + ttl, whatever createdAt says', async () => {
        const old = crashCount('app-a', 0, 1, 0);
        const future = crashCount('app-b', 0, 1, START + 10 * TTL);
        await store.putCrashCounts([old, future], TTL);
        await advance(TTL - 1);
        expect(sortedKeys(await store.getCrashCounts())).toEqual([crashKey(old), crashKey(future)].sort());
        await advance(1);
        expect((await store.getCrashCounts()).size).toBe(0);
        expect((await store.snapshot()).crashCounts.size).toBe(0);
      });

      it('a later put renews the ttl', async () => {
        const c = crashCount('app-a', 0, 1, START);
        await store.putCrashCounts([c], TTL);
        await advance(20_000);
        await store.putCrashCounts([{ ...c, count: 2 }], TTL);
        await advanceTo(START + 20_000 + TTL - 1);
        expect((await store.getCrashCounts()).get(crashKey(c))?.count).toBe(2);
        await advance(1);
        expect((await store.getCrashCounts()).has(crashKey(c))).toBe(false);
      });

      it('deleteCrashCounts removes the given keys only, and ignores unknown keys', async () => {
        const c1 = crashCount('app-a', 0, 1, START);
        const c2 = crashCount('app-a', 1, 1, START);
        await store.putCrashCounts([c1, c2], TTL);
        await store.deleteCrashCounts([crashKey(c1), 'no-such-key']);
        expect(sortedKeys(await store.getCrashCounts())).toEqual([crashKey(c2)]);
        expect((await store.snapshot()).crashCounts.get(appKey('app-a', 'v1'))).toEqual([c2]);
      });

      it('emit crash changes on put, delete and expiry', async () => {
        const c1 = crashCount('app-a', 0, 1, START);
        const c2 = crashCount('app-a', 1, 1, START);
        await store.putCrashCounts([c1, c2], TTL);
        expect(changes).toEqual([
          { kind: 'crash', key: crashKey(c1), app: appKey('app-a', 'v1') },
          { kind: 'crash', key: crashKey(c2), app: appKey('app-a', 'v1') },
        ]);
        changes.length = 0;
        await store.deleteCrashCounts([crashKey(c1)]);
        expect(changes).toEqual([{ kind: 'crash', key: crashKey(c1), app: appKey('app-a', 'v1') }]);
        changes.length = 0;
        await advance(TTL);
        expect(changes).toEqual([{ kind: 'crash', key: crashKey(c2), app: appKey('app-a', 'v1') }]);
      });

      it('rejects an invalid ttl and leaves state unchanged', async () => {
        const c = crashCount('app-a', 0, 1, START);
        await store.putCrashCounts([c], TTL);
        changes.length = 0;
        await expect(store.putCrashCounts([{ ...c, count: 5 }, crashCount('app-b', 0, 1)], 0)).rejects.toThrow(Error);
        const counts = await store.getCrashCounts();
        expect(counts.size).toBe(1);
        expect(counts.get(crashKey(c))?.count).toBe(1);
        expect(changes).toEqual([]);
      });
    });

    describe('pending starts and stops', () => {
      it('starts are keyed by startKey, overwritten by put, removed by delete', async () => {
        const s1 = pendingStart('app-a', 0, 100);
        const s2 = pendingStart('app-a', 1, 100);
        await store.putPendingStarts([s1, s2]);
        let starts = await store.getPendingStarts();
        expect(sortedKeys(starts)).toEqual([startKey(s1), startKey(s2)].sort());
        expect(starts.get(startKey(s1))).toEqual(s1);

        const s1b = { ...s1, sentOn: START, messageId: 'second' };
        await store.putPendingStarts([s1b]);
        starts = await store.getPendingStarts();
        expect(starts.size).toBe(2);
        expect(starts.get(startKey(s1))).toEqual(s1b);

        await store.deletePendingStarts([startKey(s2), 'unknown']);
        expect(sortedKeys(await store.getPendingStarts())).toEqual([startKey(s1)]);
      });

      it('stops are keyed by stopKey, overwritten by put, removed by delete', async () => {
        const t1 = pendingStop('inst-1');
        const t2 = pendingStop('inst-2');
        await store.putPendingStops([t1, t2]);
        let stops = await store.getPendingStops();
        expect(sortedKeys(stops)).toEqual([stopKey(t1), stopKey(t2)].sort());
        expect(stops.get(stopKey(t2))).toEqual(t2);

        const t2b = { ...t2, reason: 'duplicate' };
        await store.putPendingStops([t2b]);
        stops = await store.getPendingStops();
        expect(stops.size).toBe(2);
        expect(stops.get(stopKey(t2))?.reason).toBe('duplicate');

        await store.deletePendingStops([stopKey(t1)]);
        expect(sortedKeys(await store.getPendingStops())).toEqual([stopKey(t2)]);
      });

      it('have no ttl', async () => {
        await store.putPendingStarts([pendingStart('app-a', 0)]);
        await store.putPendingStops([pendingStop('inst-1')]);
        await advance(100 * TTL);
        expect((await store.getPendingStarts()).size).toBe(1);
        expect((await store.getPendingStops()).size).toBe(1);
      });

      it('emit start and stop changes on put and delete', async () => {
        const s = pendingStart('app-a', 0);
        const t = pendingStop('inst-1');
        await store.putPendingStarts([s]);
        await store.putPendingStops([t]);
        await store.deletePendingStarts([startKey(s)]);
        await store.deletePendingStops([stopKey(t)]);
        expect(changes).toEqual([
          { kind: 'start', key: startKey(s), app: appKey(s.app, s.version) },
          { kind: 'stop', key: stopKey(t), app: appKey(t.app, t.version) },
          { kind: 'start', key: startKey(s), app: appKey(s.app, s.version) },
          { kind: 'stop', key: stopKey(t), app: appKey(t.app, t.version) },
        ]);
      });
    });

    describe('freshness markers', () => {
      it('are absent at first', async () => {
        expect(await store.getFreshness('actual')).toBeUndefined();
        expect(await store.getFreshness('desired')).toBeUndefined();
      });

      it('a bump creates the marker with timestamp now and expiresAt now + ttl', async () => {
        await store.bumpFreshness('actual', TTL);
        expect(await store.getFreshness('actual')).toEqual({ timestamp: START, expiresAt: START + TTL });
        expect(await store.getFreshness('desired')).toBeUndefined();
      });

      it('a bump of a live marker keeps its timestamp and renews expiresAt', async () => {
        await store.bumpFreshness('desired', TTL);
        await advance(10_000);
        await store.bumpFreshness('desired', TTL);
        expect(await store.getFreshness('desired')).toEqual({ timestamp: START, expiresAt: START + 10_000 + TTL });
        await advance(25_000);
        await store.bumpFreshness('desired', 5_000);
        expect(await store.getFreshness('desired')).toEqual({ timestamp: START, expiresAt: START + 40_000 });
      });

      it('a marker is gone at expiresAt, and a bump after that starts a new streak', async () => {
        await store.bumpFreshness('actual', TTL);
        await advance(TTL - 1);
        expect(await store.getFreshness('actual')).toEqual({ timestamp: START, expiresAt: START + TTL });
        await advance(1);
        expect(await store.getFreshness('actual')).toBeUndefined();
        await advance(7);
        await store.bumpFreshness('actual', TTL);
        expect(await store.getFreshness('actual')).toEqual({ timestamp: START + TTL + 7, expiresAt: START + 2 * TTL + 7 });
      });

      it('a bump exactly at expiresAt starts a new streak', async () => {
        await store.bumpFreshness('actual', TTL);
        await advance(TTL);
        await store.bumpFreshness('actual', TTL);
        expect((await store.getFreshness('actual'))?.timestamp).toBe(START + TTL);
      });

      it('revoke deletes the marker, and the next bump starts a new streak', async () => {
        await store.bumpFreshness('actual', TTL);
        await store.bumpFreshness('desired', TTL);
        await advance(5_000);
        await store.revokeFreshness('actual');
        expect(await store.getFreshness('actual')).toBeUndefined();
        expect(await store.getFreshness('desired')).toEqual({ timestamp: START, expiresAt: START + TTL });
        await advance(1_000);
        await store.bumpFreshness('actual', TTL);
        expect(await store.getFreshness('actual')).toEqual({ timestamp: START + 6_000, expiresAt: START + 6_000 + TTL });
      });

      it('emit freshness changes on bump, revoke and expiry', async () => {
        await store.bumpFreshness('actual', TTL);
        await store.bumpFreshness('desired', TTL);
        await store.revokeFreshness('actual');
        expect(changes).toEqual([
          { kind: 'freshness', which: 'actual' },
          { kind: 'freshness', which: 'desired' },
          { kind: 'freshness', which: 'actual' },
        ]);
        changes.length = 0;
        await advance(TTL);
        expect(changes).toEqual([{ kind: 'freshness', which: 'desired' }]);
      });

      it('rejects an invalid ttl and leaves the marker unchanged', async () => {
        await store.bumpFreshness('actual', TTL);
        await advance(1_000);
        changes.length = 0;
        await expect(store.bumpFreshness('actual', -5)).rejects.toThrow(Error);
        expect(await store.getFreshness('actual')).toEqual({ timestamp: START, expiresAt: START + TTL });
        expect(changes).toEqual([]);
      });

      describe('HM9000 freshness example, docs/hm9000.md#actual-freshness (ttl 30 000 ms)', () => {
        const ttl = 30_000;
        const fresh = async (c: VirtualClock, s: Store) => isActualFresh(await s.getFreshness('actual'), c.now(), ttl);

        it('bumped at t=100 000 and every 10 000 ms after: not fresh at 129 000, fresh at 130 000', async () => {
          const { clock: c, store: s } = await open(0);
          for (const t of [100_000, 110_000, 120_000]) {
            await c.advanceToAsync(t);
            await s.bumpFreshness('actual', ttl);
          }
          await c.advanceToAsync(129_000);
          expect(await fresh(c, s)).toBe(false);
          await c.advanceToAsync(130_000);
          expect(await fresh(c, s)).toBe(true);
          await s.bumpFreshness('actual', ttl);
          expect(await fresh(c, s)).toBe(true);
          expect(await s.getFreshness('actual')).toEqual({ timestamp: 100_000, expiresAt: 160_000 });
        });

        it('a single bump at t=100 000 and nothing else: gone at 130 000, never fresh', async () => {
          const { clock: c, store: s } = await open(0);
          await c.advanceToAsync(100_000);
          await s.bumpFreshness('actual', ttl);
          await c.advanceToAsync(129_999);
          expect(await s.getFreshness('actual')).toEqual({ timestamp: 100_000, expiresAt: 130_000 });
          expect(await fresh(c, s)).toBe(false);
          await c.advanceToAsync(130_000);
          expect(await s.getFreshness('actual')).toBeUndefined();
          expect(await fresh(c, s)).toBe(false);
        });

        it('a revoke then a bump restarts the streak', async () => {
          const { clock: c, store: s } = await open(0);
          for (const t of [100_000, 110_000, 120_000, 130_000]) {
            await c.advanceToAsync(t);
            await s.bumpFreshness('actual', ttl);
          }
          expect(await fresh(c, s)).toBe(true);
          await s.revokeFreshness('actual');
          expect(await fresh(c, s)).toBe(false);
          await c.advanceToAsync(140_000);
          await s.bumpFreshness('actual', ttl);
          expect((await s.getFreshness('actual'))?.timestamp).toBe(140_000);
          for (const t of [150_000, 160_000]) {
            await c.advanceToAsync(t);
            await s.bumpFreshness('actual', ttl);
          }
          await c.advanceToAsync(169_999);
          expect(await fresh(c, s)).toBe(false);
          await c.advanceToAsync(170_000);
          expect(await fresh(c, s)).toBe(true);
        });

        it('the desired marker is fresh while it exists', async () => {
          await store.bumpFreshness('desired', ttl);
          expect(isDesiredFresh(await store.getFreshness('desired'), clock.now())).toBe(true);
          await advance(ttl);
          expect(isDesiredFresh(await store.getFreshness('desired'), clock.now())).toBe(false);
        });
      });
    });

    describe('snapshot', () => {
      async function populate() {
        await store.replaceDesired([desiredApp('app-a', 'v1', 2), desiredApp('app-b', 'v1', 1)]);
        await store.saveHeartbeats(
          [heartbeat('dea-1', [instance('dea-1', 'app-a', 0), instance('dea-1', 'app-b', 0)]), heartbeat('dea-2', [instance('dea-2', 'app-a', 1)])],
          TTL,
        );
        await store.putCrashCounts([crashCount('app-a', 0, 2, START), crashCount('app-a', 1, 1, START), crashCount('app-c', 0, 4, START)], TTL);
        await store.putPendingStarts([pendingStart('app-a', 2, START + 1_000)]);
        await store.putPendingStops([pendingStop('app-b-v1-9@dea-9', 'app-b')]);
        await store.bumpFreshness('actual', TTL);
        await store.bumpFreshness('desired', 2 * TTL);
      }

      it('is empty at first', async () => {
        const s = await store.snapshot();
        expect(s.now).toBe(START);
        expect([s.desired.size, s.instances.size, s.crashCounts.size, s.starts.size, s.stops.size]).toEqual([0, 0, 0, 0, 0]);
        expect(s.freshness.actual).toBeUndefined();
        expect(s.freshness.desired).toBeUndefined();
      });

      it('holds everything, with instances and crash counts grouped per app', async () => {
        await populate();
        await advance(1_000);
        const s = await store.snapshot();
        expect(s.now).toBe(START + 1_000);
        expect(sortedKeys(s.desired)).toEqual([appKey('app-a', 'v1'), appKey('app-b', 'v1')]);
        expect(s.desired.get(appKey('app-a', 'v1'))?.instances).toBe(2);
        expect(sortedKeys(s.instances)).toEqual([appKey('app-a', 'v1'), appKey('app-b', 'v1')]);
        expect(instanceIds(s.instances.get(appKey('app-a', 'v1')))).toEqual(['app-a-v1-0@dea-1', 'app-a-v1-1@dea-2']);
        expect(instanceIds(s.instances.get(appKey('app-b', 'v1')))).toEqual(['app-b-v1-0@dea-1']);
        expect(sortedKeys(s.crashCounts)).toEqual([appKey('app-a', 'v1'), appKey('app-c', 'v1')]);
        expect(
          s.crashCounts
            .get(appKey('app-a', 'v1'))
            ?.map((c) => [c.index, c.count])
            .sort(),
        ).toEqual([
          [0, 2],
          [1, 1],
        ]);
        expect(s.crashCounts.get(appKey('app-c', 'v1'))).toEqual([crashCount('app-c', 0, 4, START)]);
        expect(sortedKeys(s.starts)).toEqual([startKey({ app: 'app-a', version: 'v1', index: 2 })]);
        expect(sortedKeys(s.stops)).toEqual(['app-b-v1-9@dea-9']);
        expect(s.freshness.actual).toEqual({ timestamp: START, expiresAt: START + TTL });
        expect(s.freshness.desired).toEqual({ timestamp: START, expiresAt: START + 2 * TTL });
      });

      it('holds live instances only', async () => {
        await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
        await advance(10_000);
        await store.saveHeartbeats([heartbeat('dea-2', [instance('dea-2', 'app-a', 1)])], TTL);
        await advance(TTL - 10_000);
        const s = await store.snapshot();
        expect(instanceIds(s.instances.get(appKey('app-a', 'v1')))).toEqual(['app-a-v1-1@dea-2']);
        expect(s.freshness.actual).toBeUndefined();
      });

      it('is not changed by later writes or expiries', async () => {
        await populate();
        const snap = await store.snapshot();
        const agents = await store.getAgents();
        const counts = await store.getCrashCounts();
        const expected = plainSnapshot(snap);
        const agentsBefore = structuredClone([...agents.entries()]);
        const countsBefore = structuredClone([...counts.entries()]);

        await store.replaceDesired([desiredApp('app-z')]);
        await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0, 'CRASHED')]), heartbeat('dea-3', [instance('dea-3', 'app-a', 5)])], TTL);
        await store.removeAgent('dea-2');
        await store.putCrashCounts([crashCount('app-a', 0, 9, START), crashCount('app-b', 0, 1, START)], TTL);
        await store.deleteCrashCounts([crashKey({ app: 'app-a', version: 'v1', index: 1 })]);
        await store.putPendingStarts([pendingStart('app-a', 7)]);
        await store.deletePendingStarts([startKey({ app: 'app-a', version: 'v1', index: 2 })]);
        await store.putPendingStops([pendingStop('other')]);
        await store.deletePendingStops(['app-b-v1-9@dea-9']);
        await store.revokeFreshness('actual');
        await store.bumpFreshness('desired', 5 * TTL);
        await advance(10 * TTL);

        expect(plainSnapshot(snap)).toEqual(expected);
        expect(structuredClone([...agents.entries()])).toEqual(agentsBefore);
        expect(structuredClone([...counts.entries()])).toEqual(countsBefore);
        // And the store itself did move on.
        const now = await store.snapshot();
        expect(plainSnapshot(now)).not.toEqual(expected);
        expect(sortedKeys(now.desired)).toEqual([appKey('app-z', 'v1')]);
      });
    });

    describe('change listeners', () => {
      it('receive every kind of change', async () => {
        await store.replaceDesired([desiredApp('app-a')]);
        await store.saveHeartbeats([heartbeat('dea-1', [instance('dea-1', 'app-a', 0)])], TTL);
        await store.putCrashCounts([crashCount('app-a', 0, 1)], TTL);
        await store.putPendingStarts([pendingStart('app-a', 1)]);
        await store.putPendingStops([pendingStop('inst-x')]);
        await store.bumpFreshness('actual', TTL);
        expect(new Set(changes.map((c) => c.kind))).toEqual(new Set(['desired', 'agent', 'crash', 'start', 'stop', 'freshness']));
      });

      it('stop receiving changes after unsubscribing, while others keep receiving', async () => {
        const mine: StoreChange[] = [];
        const unsubscribe = store.onChange((c) => mine.push(c));
        await store.replaceDesired([]);
        expect(mine).toEqual([{ kind: 'desired' }]);
        unsubscribe();
        await store.replaceDesired([]);
        await store.bumpFreshness('desired', TTL);
        expect(mine).toEqual([{ kind: 'desired' }]);
        expect(changes).toEqual([{ kind: 'desired' }, { kind: 'desired' }, { kind: 'freshness', which: 'desired' }]);
      });
    });
  });
}
