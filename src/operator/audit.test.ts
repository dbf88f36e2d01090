import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { DecisionAudit, type DecisionInput } from './audit.js';
import { AuditSharing } from './audit-sharing.js';

const T0 = Date.parse('2026-01-01T00:00:00Z');

function decision(i: number, o: Partial<DecisionInput> = {}): DecisionInput {
  return {
    at: T0 + i * 1000,
    action: 'start',
    outcome: 'enqueued',
    reason: 'MISSING',
    app: `app-${i % 3}`,
    version: 'v1',
    index: i,
    message_id: `m-${i}`,
    facts: { n: i },
    ...o,
  };
}

describe('DecisionAudit', () => {
  it('keeps at most its capacity, dropping the oldest', () => {
    const a = new DecisionAudit(5);
    for (let i = 0; i < 12; i++) a.record(decision(i));
    expect(a.size).toBe(5);
    expect(a.list().map((d) => d.message_id)).toEqual(['m-7', 'm-8', 'm-9', 'm-10', 'm-11']);
    expect(a.list().map((d) => d.seq)).toEqual([8, 9, 10, 11, 12]);
    expect(a.list()[0]!.time).toBe('2026-01-01T00:00:07.000Z');
  });

  it('without since, limit keeps the newest; with since, the oldest at or after it; both oldest first', () => {
    const a = new DecisionAudit(100);
    for (let i = 0; i < 10; i++) a.record(decision(i));
    expect(a.list({ limit: 3 }).map((d) => d.index)).toEqual([7, 8, 9]);
    expect(a.list({ since: T0 + 4000, limit: 3 }).map((d) => d.index)).toEqual([4, 5, 6]);
    expect(a.list({ since: T0 + 4000 }).map((d) => d.index)).toEqual([4, 5, 6, 7, 8, 9]);
    expect(a.list({ since: T0 + 60_000 })).toEqual([]);
  });

  it('filters by app', () => {
    const a = new DecisionAudit(100);
    for (let i = 0; i < 10; i++) a.record(decision(i));
    expect(a.list({ app: 'app-1' }).map((d) => d.index)).toEqual([1, 4, 7]);
    expect(a.list({ app: 'app-1', limit: 2 }).map((d) => d.index)).toEqual([4, 7]);
    expect(a.list({ app: 'app-2', since: T0 + 3000, limit: 1 }).map((d) => d.index)).toEqual([5]);
  });

  it('finds the enqueue record of a message while it is in the ring', () => {
    const a = new DecisionAudit(3);
    a.record(decision(1, { message_id: 'x', facts: { crash_count: 2 } }));
    a.record(decision(2, { message_id: 'x', outcome: 'sent' }));
    expect(a.enqueued('x')?.facts).toEqual({ crash_count: 2 });
    a.record(decision(3));
    a.record(decision(4));
    expect(a.enqueued('x')).toBeUndefined();
    expect(a.enqueued('')).toBeUndefined();
  });

  it('keeps suppressed records with why and detail', () => {
    const a = new DecisionAudit();
    expect(a.capacity).toBe(10_000);
    const r = a.record(decision(1, { outcome: 'suppressed', why: 'message_limit', detail: '60 starts already sent this run' }));
    expect(r).toMatchObject({ seq: 1, outcome: 'suppressed', why: 'message_limit', detail: '60 starts already sent this run' });
    expect(() => new DecisionAudit(0)).toThrow(RangeError);
  });
});

describe('DecisionAudit persistence helpers', () => {
  const input = (at: number, id: string, outcome: 'enqueued' | 'sent' = 'enqueued') => ({
    at,
    action: 'start' as const,
    outcome,
    reason: 'MISSING',
    app: 'a',
    version: 'v1',
    index: 1,
    message_id: id,
    facts: {},
  });

  it('after(seq) gives the records to persist next', () => {
    const a = new DecisionAudit(10);
    a.record(input(1, 'm1'));
    a.record(input(2, 'm2'));
    expect(a.after(0).map((r) => r.message_id)).toEqual(['m1', 'm2']);
    expect(a.after(1).map((r) => r.message_id)).toEqual(['m2']);
    expect(a.lastSeq).toBe(2);
  });

  it("adopt() takes in another daemon's records in time order, once, keeping the ring bounded", () => {
    const a = new DecisionAudit(3);
    a.record(input(50, 'mine'));
    const theirs = [input(10, 'old1'), input(20, 'old2'), input(30, 'old3')];
    expect(a.adopt(theirs)).toBe(3);
    expect(a.list().map((r) => r.message_id)).toEqual(['old2', 'old3', 'mine']);
    expect(a.adopt(theirs.slice(1))).toBe(0); // already known
    expect(a.enqueued('mine')?.at).toBe(50);
  });
});

describe('AuditSharing', () => {
  it('says how many records it took in, one in the singular', async () => {
    const logged: string[] = [];
    const sharing = new AuditSharing(new DecisionAudit(10), pino({ level: 'info' }, { write: (s: string) => void logged.push(String(JSON.parse(s).msg)) }));
    const store = { appendAudit: async () => undefined, readAudit: async () => [decision(1)] };
    await sharing.adopt(store as unknown as Parameters<AuditSharing['adopt']>[0]);
    expect(logged).toEqual(['took in 1 decision record from the store']);
  });
});
