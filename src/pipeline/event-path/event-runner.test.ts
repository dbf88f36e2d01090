import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { VirtualClock } from '../../sdk/clock.js';
import { EventRunner, type EventRunnerOptions } from './event-runner.js';
import { getInstance, startRequest, stopRequest } from '../../sdk/droplets.js';
import type { EventDecision, EventInput, EventKind, EventPolicyStage } from '../../sdk/events.js';
import type { RequestOrder } from '../../sdk/orders.js';
import { dedupeKey, RequestQueue } from './request-queue.js';

function policy(events: EventKind[], handle: (input: EventInput) => EventDecision[], everyMs?: number): EventPolicyStage {
  return { events, handle, ...(everyMs ? { everyMs } : {}) };
}

function runner(policies: EventPolicyStage[], o: Partial<EventRunnerOptions> = {}) {
  const clock = new VirtualClock(0);
  const sent: { at: number; order: RequestOrder }[] = [];
  const refreshes: number[] = [];
  let available = true;
  const r = new EventRunner({
    clock,
    logger: pino({ level: 'silent' }),
    policies: policies.map((stage, i) => ({ id: `p${i}`, stage })),
    send: async (order) => void sent.push({ at: clock.now(), order }),
    shadow: false,
    mayAct: () => true,
    isLeader: () => true,
    desiredAvailable: () => available,
    busConnected: () => true,
    analyzeEveryMs: 20_000,
    analysisSlice: 0,
    runLoopMs: 0,
    queue: { intervalMs: 1_000, batchSize: 40, dedupe: 'payload' },
    refreshDesired: () => void refreshes.push(clock.now()),
    ...o,
  });
  return { r, clock, sent, refreshes, setAvailable: (v: boolean) => (available = v) };
}

describe('RequestQueue', () => {
  it('takes the highest priority first, first in first out among equals, and keeps the first of equal keys', () => {
    const q = new RequestQueue<string>();
    expect(q.insert('low-1', 1, 'a')).toBe(true);
    expect(q.insert('normal-1', 1000, 'b')).toBe(true);
    expect(q.insert('normal-2', 1000, 'c')).toBe(true);
    expect(q.insert('high', 1_000_000, 'd')).toBe(true);
    expect(q.insert('low-again', 1_000_000, 'a')).toBe(false); // first insert wins, priority not raised
    expect(q.insert('normal-3', 1000, 'e')).toBe(true);
    const order: string[] = [];
    for (let next = q.remove(); next; next = q.remove()) order.push(next.item);
    expect(order).toEqual(['high', 'normal-1', 'normal-2', 'normal-3', 'low-1']);
    expect(q.insert('again', 5, 'a')).toBe(true); // a key is free again once taken
  });

  it('dedupes on the whole payload but last_updated, or on app/op/version/indices only', () => {
    const a = { op: 'START' as const, droplet: 'app', lastUpdated: 1, version: 'v', running: { v: 2 }, indices: [1], flapping: false };
    const b = { ...a, lastUpdated: 2 };
    const c = { ...a, running: { v: 1 } };
    expect(dedupeKey(a, 'payload')).toBe(dedupeKey(b, 'payload'));
    expect(dedupeKey(a, 'payload')).not.toBe(dedupeKey(c, 'payload'));
    expect(dedupeKey(a, 'op-version-indices')).toBe(dedupeKey(c, 'op-version-indices'));
  });
});

describe('EventRunner', () => {
  it('creates a record on the first event naming an app and runs the declaring policies in order', () => {
    const seen: string[] = [];
    const { r } = runner([
      policy(['heartbeat'], ({ droplet }) => (seen.push(`first:${droplet!.id}`), [])),
      policy(['exit'], () => (seen.push('exit-only'), [])),
      policy(['heartbeat'], ({ droplet }) => (seen.push(`second:${droplet!.desiredUpdateRequired}`), [])),
    ]);
    r.start();
    r.emit({
      kind: 'heartbeat',
      app: 'a1',
      agent: 'dea',
      beat: { app: 'a1', version: 'v', instance: 'i', index: 0, state: 'RUNNING', stateTimestamp: 1, agent: 'dea' },
    });
    expect(seen).toEqual(['first:a1', 'second:true']);
    expect([...r.droplets.values()].map((d) => d.id)).toEqual(['a1']);
  });

  it('applies desired apps to the records before policies see them', () => {
    const { r, clock } = runner([policy(['desired'], () => [])]);
    clock.advance(5_000);
    r.emit({
      kind: 'desired',
      app: { guid: 'a1', version: 'v2', instances: 3, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' },
    });
    const d = r.droplets.peek('a1')!;
    expect(d).toMatchObject({
      numInstances: 3,
      liveVersion: 'v2',
      state: 'STARTED',
      packageState: 'STAGED',
      lastUpdated: 1375308000,
      desiredUpdateRequired: false,
      desiredUpdateMs: 5_000,
    });
    expect(d.resetTimestampMs).toBe(5_000); // set at creation, not by the update
  });

  it('queues starts, drains up to the batch size per interval, and sends stops at once', async () => {
    const { r, clock, sent } = runner(
      [
        policy(['exit'], ({ droplet, event }) => {
          const d = droplet!;
          const index = (event as { index: number }).index;
          if (index === 99)
            return [{ kind: 'request', request: stopRequest(d, [{ instance: 'x', version: 'v' }]), delivery: 'now', reason: 'EXTRA', log: 'extra' }];
          return [{ kind: 'request', request: startRequest(d, index), delivery: { queue: index === 0 ? 1 : 1000 }, reason: 'CRASHED', log: 'crashed' }];
        }),
      ],
      { queue: { intervalMs: 1_000, batchSize: 2, dedupe: 'payload' } },
    );
    r.start();
    const exit = (index: number) => r.emit({ kind: 'exit', app: 'a', version: 'v', instance: `i${index}`, index, reason: 'CRASHED' });
    exit(0);
    exit(1);
    exit(1); // same payload: not queued twice
    exit(2);
    exit(99);
    await clock.advanceAsync(0);
    expect(sent.map((s) => [s.at, s.order.request.op, s.order.request.indices ?? s.order.request.instances])).toEqual([
      [0, 'STOP', [{ instance: 'x', version: 'v' }]],
    ]);
    await clock.advanceAsync(1_000);
    expect(sent.slice(1).map((s) => [s.at, s.order.request.indices![0], s.order.priority])).toEqual([
      [1_000, 1, 1000],
      [1_000, 2, 1000],
    ]);
    await clock.advanceAsync(1_000);
    expect(sent.slice(3).map((s) => [s.at, s.order.request.indices![0], s.order.priority])).toEqual([[2_000, 0, 1]]);
    expect(r.stats).toMatchObject({ queued: 3, deduplicated: 1, sent: 4 });
  });

  it('holds queued starts while it may not act, and drops them all when told (a freshness guard began or ended)', async () => {
    let mayAct = true;
    const suppressed: [number | undefined, string, string][] = [];
    const { r, clock, sent } = runner(
      [
        policy(['exit'], ({ droplet, event }) => [
          {
            kind: 'request',
            request: startRequest(droplet!, (event as { index: number }).index),
            delivery: { queue: 1000 },
            reason: 'MISSING',
            log: 'missing',
          },
        ]),
      ],
      { mayAct: () => mayAct, onSuppressed: (order, why, detail) => void suppressed.push([order.request.indices?.[0], why, detail]) },
    );
    r.start();
    mayAct = false;
    for (const index of [0, 1, 2]) r.emit({ kind: 'exit', app: 'a', version: 'v', instance: `i${index}`, index, reason: 'DEA_SHUTDOWN' });
    await clock.advanceAsync(3_000);
    expect(sent).toEqual([]);
    expect(r.queue.size).toBe(3);
    expect(r.discardQueued('ACTUAL_COLLAPSE ended: not sent')).toBe(3);
    expect(suppressed).toEqual([
      [0, 'not_fresh', 'ACTUAL_COLLAPSE ended: not sent'],
      [1, 'not_fresh', 'ACTUAL_COLLAPSE ended: not sent'],
      [2, 'not_fresh', 'ACTUAL_COLLAPSE ended: not sent'],
    ]);
    mayAct = true;
    await clock.advanceAsync(3_000);
    expect(sent).toEqual([]);
    // The queue takes the same requests again once decided again.
    r.emit({ kind: 'exit', app: 'a', version: 'v', instance: 'i1', index: 1, reason: 'DEA_SHUTDOWN' });
    await clock.advanceAsync(1_000);
    expect(sent.map((x) => x.order.request.indices)).toEqual([[1]]);
  });

  it('analyses a slice of records per tick in insertion order, only while desired state is available', async () => {
    const analysed: [number, string][] = [];
    const passes: string[] = [];
    const { r, clock, setAvailable } = runner(
      [
        policy(['analyze', 'pass'], ({ event, droplet }) => {
          if (event.kind === 'pass') passes.push(`${event.phase}@${clock.now()}`);
          else analysed.push([clock.now(), droplet!.id]);
          return [];
        }),
      ],
      { analysisSlice: 2 },
    );
    r.start();
    for (const id of ['a', 'b', 'c', 'd']) r.emit({ kind: 'updated', app: id });
    setAvailable(false);
    await clock.advanceAsync(20_000);
    expect(analysed).toEqual([]);
    setAvailable(true);
    await clock.advanceAsync(60_000);
    expect(analysed).toEqual([
      [40_000, 'a'],
      [40_000, 'b'],
      [60_000, 'c'],
      [60_000, 'd'],
    ]);
    // 4 records in slices of 2: the third tick's slice is empty, which ends the pass.
    expect(passes).toEqual(['start@40000', 'done@80000']);
  });

  it('arms policy timers at the next run-loop tick, hands the timer back to the same policy, and cancels', async () => {
    const fired: [number, string][] = [];
    const { r, clock } = runner(
      [
        policy(['exit', 'timer', 'updated'], ({ event }) => {
          if (event.kind === 'exit') return [{ kind: 'timer', id: `t${event.index}`, delayMs: 5_000, data: { index: event.index } }];
          if (event.kind === 'updated') return [{ kind: 'cancel-timer', id: 't2' }];
          if (event.kind === 'timer') fired.push([clock.now(), event.id]);
          return [];
        }),
        policy(['timer'], () => {
          throw new Error('only the policy that set the timer gets it');
        }),
      ],
      { runLoopMs: 2_000 },
    );
    r.start();
    await clock.advanceAsync(500);
    r.emit({ kind: 'exit', app: 'a', version: 'v', instance: 'i', index: 1, reason: 'CRASHED' }); // armed at 2 000
    r.emit({ kind: 'exit', app: 'a', version: 'v', instance: 'i', index: 2, reason: 'CRASHED' });
    await clock.advanceAsync(1_000);
    r.emit({ kind: 'updated', app: 'a' });
    await clock.advanceAsync(10_000);
    expect(fired).toEqual([[7_000, 't1']]);
    expect(r.stats.policyErrors).toBe(0);
  });

  it('arms a timer set by the work of a run-loop tick (the analysis, in phase with it) at once', async () => {
    const fired: number[] = [];
    let set = false;
    const { r, clock } = runner(
      [
        policy(['analyze', 'timer'], ({ event }) => {
          if (event.kind === 'timer') fired.push(clock.now());
          if (event.kind !== 'analyze' || set) return [];
          set = true;
          return [{ kind: 'timer', id: 't', delayMs: 5_000, data: {} }];
        }),
      ],
      { runLoopMs: 2_000 },
    );
    r.start();
    r.emit({ kind: 'updated', app: 'a' });
    await clock.advanceAsync(30_000);
    expect(fired).toEqual([25_000]); // analysis at 20 s, armed by the run at 20 s, due 5 s later
  });

  it('hands raised events to the declaring policies at once, forgets records, sweeps, and survives a throwing policy', async () => {
    const order: string[] = [];
    const { r, clock, refreshes } = runner([
      policy(['analyze'], ({ droplet }) => {
        order.push('raiser');
        getInstance(droplet!, 0);
        return [{ kind: 'raise', event: { kind: 'missing', app: droplet!.id, index: 0, version: null, chatty: false } }];
      }),
      policy(['missing'], ({ event }) => (order.push(`missing:${(event as { index: number }).index}`), [])),
      policy(['analyze'], () => {
        order.push('thrower');
        throw new Error('boom');
      }),
      policy(['analyze'], () => (order.push('after'), [{ kind: 'refresh-desired' }])),
      policy(['sweep'], ({ droplet }) => (droplet!.id === 'old' ? [{ kind: 'forget' }] : []), 300_000),
    ]);
    r.start();
    r.emit({ kind: 'updated', app: 'old' });
    r.emit({ kind: 'updated', app: 'new' });
    await clock.advanceAsync(20_000);
    expect(order.slice(0, 4)).toEqual(['raiser', 'missing:0', 'thrower', 'after']);
    expect(r.stats.policyErrors).toBe(2);
    expect(refreshes).toEqual([20_000, 20_000]);
    await clock.advanceAsync(280_000);
    expect([...r.droplets.values()].map((d) => d.id)).toEqual(['new']);
  });

  it('a sweep that forgets the one record says "1 of 1 app record"', async () => {
    const logged: string[] = [];
    const logger = pino({ level: 'info' }, { write: (s: string) => void logged.push(String(JSON.parse(s).msg)) });
    const { r, clock } = runner([policy(['sweep'], () => [{ kind: 'forget' }], 300_000)], { logger });
    r.start();
    r.emit({ kind: 'updated', app: 'old' });
    await clock.advanceAsync(300_000);
    expect(logged).toContain('p0: 1 of 1 app record forgotten');
  });

  it('does nothing on a standby', () => {
    const seen: string[] = [];
    const { r } = runner([policy(['updated'], () => (seen.push('x'), []))], { isLeader: () => false });
    r.emit({ kind: 'updated', app: 'a' });
    expect(seen).toEqual([]);
    expect(r.droplets.size).toBe(0);
  });
});
