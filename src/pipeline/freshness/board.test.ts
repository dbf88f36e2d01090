import { describe, expect, it } from 'vitest';
import { FreshnessBoard } from './board.js';
import { freshnessError, isActualFresh, isDesiredFresh } from '../../sdk/freshness.js';

const s = (n: number) => n * 1000;

describe('freshness (docs/hm9000.md#freshness)', () => {
  it('actual: the marker must exist and its streak be at least the TTL old (bumped at 100 → not fresh at 129, fresh at 130)', () => {
    const marker = { timestamp: s(100), expiresAt: s(150) };
    expect(isActualFresh(marker, s(129), s(30))).toBe(false);
    expect(isActualFresh(marker, s(129.999), s(30))).toBe(false);
    expect(isActualFresh(marker, s(130), s(30))).toBe(true);
    expect(isActualFresh(undefined, s(130), s(30))).toBe(false);
    // an expired marker is no marker
    expect(isActualFresh({ timestamp: s(100), expiresAt: s(140) }, s(140), s(30))).toBe(false);
  });

  it('desired: presence only, no age rule', () => {
    expect(isDesiredFresh({ timestamp: s(100), expiresAt: s(220) }, s(100))).toBe(true);
    expect(isDesiredFresh({ timestamp: s(100), expiresAt: s(220) }, s(220))).toBe(false);
    expect(isDesiredFresh(undefined, s(100))).toBe(false);
  });

  it('combined error texts (docs/hm9000.md#error-texts)', () => {
    expect(freshnessError(false, false)).toBe('Actual and desired state are not fresh');
    expect(freshnessError(true, false)).toBe('Desired state is not fresh');
    expect(freshnessError(false, true)).toBe('Actual state is not fresh');
    expect(freshnessError(true, true)).toBeNull();
  });

  it('verdicts carry the reason a source reported, with when it began', () => {
    let now = s(1000);
    const board = new FreshnessBoard(() => now, s(30), s(120));
    expect(board.verdict('desired', undefined, now, s(30))).toEqual({
      fresh: false,
      since: null,
      reason: 'no complete desired-state fetch yet or within its TTL',
    });
    expect(board.setReason('desired', 'CC bulk API answered 401')).toBe(true);
    now = s(1010);
    expect(board.setReason('desired', 'CC bulk API answered 401')).toBe(false);
    expect(board.setReason('desired', 'CC bulk API answered 500')).toBe(true);
    expect(board.verdict('desired', undefined, now, s(30))).toEqual({ fresh: false, since: s(1000), reason: 'CC bulk API answered 500' });
    // while the marker still holds, the reason is shown beside fresh: true
    expect(board.verdict('desired', { timestamp: s(1005), expiresAt: s(1125) }, now, s(30))).toEqual({
      fresh: true,
      since: s(1005),
      reason: 'CC bulk API answered 500',
    });
    expect(board.setReason('desired', null)).toBe(true);
    expect(board.verdict('desired', { timestamp: s(1005), expiresAt: s(1125) }, now, s(30))).toEqual({ fresh: true, since: s(1005), reason: null });
    expect(board.reason('desired')).toBeUndefined();
  });

  it('says how long until actual becomes fresh while the streak is young', () => {
    const board = new FreshnessBoard(() => s(110), s(30), s(120));
    expect(board.verdict('actual', { timestamp: s(100), expiresAt: s(140) }, s(110), s(30))).toEqual({
      fresh: false,
      since: s(100),
      reason: 'heartbeats flowing for less than the freshness window (fresh in 20s)',
    });
  });
});

describe('the collapse guard in words', () => {
  it('one silent agent of one is "1 of 1 agent"', () => {
    let now = s(100);
    const board = new FreshnessBoard(() => now, s(30), s(120), {
      intervalMs: s(10),
      maxIngestLagMs: s(60),
      collapse: { share: 0.5, minAgents: 0, silentAfterMs: s(30), windowMs: s(60) },
    });
    board.heard('dea-1');
    now = s(131);
    const [change] = board.evaluateGuards();
    expect(change?.hold.reason).toMatch(/^1 of 1 agent went silent within 60s: /);
  });
});
