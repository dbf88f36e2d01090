/**
 * The dispatcher (HM9000 sender, docs/hm9000.md#sender): timing of due/expired messages, verification, the message
 * limit on starts only, and failed sends leaving messages untouched.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { Order } from '../../sdk/orders.js';
import { dispatch, sortStarts, verifyStart, verifyStop } from './dispatcher.js';
import { buildAppViews } from '../../sdk/app-view.js';
import { desired, hb, pendingStart, pendingStop, snapshot } from '../../../test/helpers/hm9000-fixtures.js';

const s = (n: number) => n * 1000;
const quiet = pino({ level: 'silent' });

async function run(snap: ReturnType<typeof snapshot>, now: number, o: { limit?: number; fail?: (o: Order) => boolean; shadow?: boolean } = {}) {
  const sent: Order[] = [];
  const result = await dispatch(
    snap,
    now,
    async (order) => {
      if (o.fail?.(order)) throw new Error('NATS is not connected');
      sent.push(order);
    },
    { messageLimit: o.limit ?? 60, shadow: o.shadow ?? false },
    quiet,
  );
  return { sent, result };
}

describe('due and expired, docs/hm9000.md#due-and-expired (created at 100 with delay 30)', () => {
  const app = desired('a', 2);
  const base = { desired: [app], instances: [hb('a', 0, 'RUNNING')] };
  const msg = (o = {}) => pendingStart('a', 1, { sendOn: s(130), ...o });

  it('not sent at 129, kept', async () => {
    const { sent, result } = await run(snapshot(s(129), { ...base, starts: [msg()] }), s(129));
    expect(sent).toEqual([]);
    expect(result.deleteStarts).toEqual([]);
    expect(result.saveStarts).toEqual([]);
  });

  it('sent at 130 with its message id; keep_alive 0 → deleted', async () => {
    const { sent, result } = await run(snapshot(s(130), { ...base, starts: [msg()] }), s(130));
    expect(sent).toEqual([{ action: 'start', messageId: 'start-a-1', app: 'a', version: 'v1', index: 1, reason: 'MISSING', priority: 1 }]);
    expect(result.deleteStarts).toEqual(['a-v1-1']);
  });

  it('keep_alive 30 → stored with sent_on = 130', async () => {
    const { result } = await run(snapshot(s(130), { ...base, starts: [msg({ keepAlive: s(30) })] }), s(130));
    expect(result.saveStarts).toEqual([{ ...msg({ keepAlive: s(30) }), sentOn: s(130) }]);
    expect(result.deleteStarts).toEqual([]);
  });

  it('sent at 130 with keep_alive 30: kept and not re-sent at 159, deleted (not sent) at 160', async () => {
    const sentMsg = msg({ keepAlive: s(30), sentOn: s(130) });
    const at159 = await run(snapshot(s(159), { ...base, starts: [sentMsg] }), s(159));
    expect(at159.sent).toEqual([]);
    expect(at159.result.deleteStarts).toEqual([]);
    const at160 = await run(snapshot(s(160), { ...base, starts: [sentMsg] }), s(160));
    expect(at160.sent).toEqual([]);
    expect(at160.result.deleteStarts).toEqual(['a-v1-1']);
  });
});

describe('sort (docs/hm9000.md#pending-messages)', () => {
  it('send_on ascending, then priority descending: B, C, A', () => {
    const A = pendingStart('A', 0, { sendOn: 130, priority: 0.7 });
    const B = pendingStart('B', 0, { sendOn: 120, priority: 0.5 });
    const C = pendingStart('C', 0, { sendOn: 130, priority: 1.0 });
    expect(sortStarts([A, B, C]).map((m) => m.app)).toEqual(['B', 'C', 'A']);
  });
});

describe('verification (docs/hm9000.md#verification)', () => {
  const views = (parts: Parameters<typeof snapshot>[1]) => buildAppViews(snapshot(0, parts));

  it('starts: skip_verification always sends; undesired, beyond N and already running are dropped; crashed or evacuating do not block', () => {
    expect(verifyStart(pendingStart('x', 0, { skipVerification: true }), views({}))).toMatchObject({ send: true });
    expect(verifyStart(pendingStart('x', 0), views({}))).toEqual({ send: false, why: 'app is no longer desired' });
    expect(verifyStart(pendingStart('a', 0), views({ instances: [hb('a', 0, 'CRASHED')] }))).toEqual({ send: false, why: 'app is no longer desired' });
    expect(verifyStart(pendingStart('a', 1), views({ desired: [desired('a', 1)] }))).toEqual({
      send: false,
      why: 'instance index is beyond the desired # of instances',
    });
    expect(verifyStart(pendingStart('a', 0), views({ desired: [desired('a', 1)], instances: [hb('a', 0, 'STARTING')] }))).toEqual({
      send: false,
      why: 'instance is already running',
    });
    expect(
      verifyStart(pendingStart('a', 0), views({ desired: [desired('a', 1)], instances: [hb('a', 0, 'CRASHED'), hb('a', 0, 'EVACUATING')] })),
    ).toMatchObject({ send: true });
    // staging state is not checked
    expect(verifyStart(pendingStart('a', 0), views({ desired: [desired('a', 1, { packageState: 'PENDING' })] }))).toMatchObject({ send: true });
  });

  it('stops: is_duplicate false for undesired apps and indices, true for evacuating or duplicated, dropped otherwise', () => {
    const i0 = hb('a', 0, 'RUNNING');
    expect(verifyStop(pendingStop(i0), views({}))).toEqual({ send: false, why: 'instance is no longer running' });
    expect(verifyStop(pendingStop(i0), views({ instances: [i0] }))).toMatchObject({ send: true, order: { isDuplicate: false, index: 0 } });
    const i3 = hb('a', 3, 'RUNNING');
    expect(verifyStop(pendingStop(i3), views({ desired: [desired('a', 2)], instances: [i3] }))).toMatchObject({
      send: true,
      order: { isDuplicate: false, index: 3 },
    });
    const ev = hb('a', 0, 'EVACUATING');
    expect(verifyStop(pendingStop(ev), views({ desired: [desired('a', 1)], instances: [ev] }))).toMatchObject({ send: true, order: { isDuplicate: true } });
    const d2 = hb('a', 0, 'STARTING');
    expect(verifyStop(pendingStop(i0), views({ desired: [desired('a', 1)], instances: [i0, d2] }))).toMatchObject({ send: true, order: { isDuplicate: true } });
    expect(verifyStop(pendingStop(i0), views({ desired: [desired('a', 1)], instances: [i0] }))).toEqual({
      send: false,
      why: 'instance is running on a desired index (and there are no other instances running at that index)',
    });
  });

  it('pitfall 15 (docs/hm9000.md#pitfalls): a vanished guid falls back to index 0, state "" — sent is_duplicate:false for an undesired app that still runs', () => {
    const other = hb('a', 1, 'RUNNING', { version: 'v0' });
    const gone = hb('a', 2, 'RUNNING', { version: 'v0', instance: 'gone' });
    const v = verifyStop(pendingStop(gone), views({ instances: [other] }));
    expect(v).toEqual({
      send: true,
      order: { action: 'stop', messageId: 'stop-gone', app: 'a', version: 'v0', instance: 'gone', index: 0, isDuplicate: false, reason: 'EXTRA' },
    });
    expect(verifyStop(pendingStop(gone), views({}))).toMatchObject({ send: false });
  });
});

describe('the message limit, docs/hm9000.md#message-limit (limit 20, 40 apps)', () => {
  it('sends exactly 20 starts, the 20 left all have priority ≤ 0.5, deletes every invalid and expired start, sends all 40 stops', async () => {
    const now = s(1000);
    const parts = {
      desired: [] as ReturnType<typeof desired>[],
      instances: [] as ReturnType<typeof hb>[],
      starts: [] as ReturnType<typeof pendingStart>[],
      stops: [] as ReturnType<typeof pendingStop>[],
    };
    for (let i = 1; i <= 40; i++) {
      const guid = `app-${i}`;
      parts.desired.push(desired(guid, 1));
      parts.starts.push(pendingStart(guid, 0, { sendOn: now - 1000, priority: i / 40, messageId: `valid-${i}` }));
      parts.starts.push({ ...pendingStart(guid, 1, { sendOn: now - 1000, messageId: `invalid-${i}` }), version: 'v1' });
      parts.starts.push({
        ...pendingStart(guid, 0, { sendOn: now - 60_000, sentOn: now - 40_000, keepAlive: 30_000, messageId: `expired-${i}` }),
        version: 'v9',
      });
      const extra = hb(guid, 3, 'RUNNING');
      parts.instances.push(extra);
      parts.stops.push(pendingStop(extra, { sendOn: now - 1000 }));
    }
    const { sent, result } = await run(snapshot(now, parts), now, { limit: 20 });
    const sentStarts = sent.filter((o) => o.action === 'start');
    expect(sentStarts).toHaveLength(20);
    expect(sentStarts.every((o) => o.messageId.startsWith('valid-'))).toBe(true);
    const left = parts.starts.filter((m) => m.messageId.startsWith('valid-') && !sentStarts.some((o) => o.messageId === m.messageId));
    expect(left).toHaveLength(20);
    expect(left.every((m) => m.priority <= 0.5)).toBe(true);
    expect(result.deleteStarts.filter((k) => k.endsWith('-v1-1'))).toHaveLength(40);
    expect(result.deleteStarts.filter((k) => k.includes('-v9-'))).toHaveLength(40);
    expect(result.suppressed.filter((x) => x.why === 'message_limit')).toHaveLength(20);
    expect(sent.filter((o) => o.action === 'stop')).toHaveLength(40);
  });
});

describe('failed sends and shadow mode', () => {
  it('pitfall 13 (docs/hm9000.md#pitfalls): a send error leaves the message untouched and the run goes on', async () => {
    const app = desired('a', 3);
    const snap = snapshot(s(200), { desired: [app], starts: [pendingStart('a', 0, { sendOn: s(100) }), pendingStart('a', 1, { sendOn: s(100) })] });
    const { sent, result } = await run(snap, s(200), { fail: (o) => o.action === 'start' && o.index === 0 });
    expect(sent.map((o) => (o as { index: number }).index)).toEqual([1]);
    expect(result.deleteStarts).toEqual(['a-v1-1']);
    expect(result.failures).toBe(1);
    expect(result.suppressed).toMatchObject([{ key: 'a-v1-0', why: 'send_failed' }]);
  });

  it('shadow mode sends nothing but updates the store as if sent', async () => {
    const snap = snapshot(s(200), { desired: [desired('a', 1)], starts: [pendingStart('a', 0, { sendOn: s(100), keepAlive: s(30) })] });
    const { sent, result } = await run(snap, s(200), { shadow: true });
    expect(sent).toEqual([]);
    expect(result.sent).toHaveLength(1);
    expect(result.saveStarts[0]!.sentOn).toBe(s(200));
  });
});
