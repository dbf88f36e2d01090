import { describe, expect, it } from 'vitest';
import { MemoryStore } from '../../plugins/memory-store/memory-store.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { freshnessError } from '../../src/sdk/freshness.js';
import { buildDump } from '../../src/dump/build.js';
import { goDuration, goFixed2, renderDump } from '../../src/dump/render.js';

describe('goDuration (Go time.Duration.String)', () => {
  it.each([
    [0, '0s'],
    [250, '250ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [30_000, '30s'],
    [-10_000, '-10s'],
    [60_000, '1m0s'],
    [90_500, '1m30.5s'],
    [3_600_000, '1h0m0s'],
    [3_723_000, '1h2m3s'],
    [-999, '-999ms'],
  ])('%d ms is %s', (ms, text) => expect(goDuration(ms)).toBe(text));
});

describe('goFixed2 (Go %.2f)', () => {
  it.each([
    [0.5, '0.50'],
    [1, '1.00'],
    [0.125, '0.12'], // an exact tie goes to even in Go
    [0.375, '0.38'],
    [1 / 3, '0.33'],
    [2 / 3, '0.67'],
    [0.995, '0.99'], // 0.995 is below the tie in binary
  ])('%d is %s', (x, text) => expect(goFixed2(x)).toBe(text));
});

/** A fixture state: two apps, one with a crash, pending starts (unsent and sent) and a stop. */
async function fixture() {
  const clock = new VirtualClock(Date.parse('2026-01-01T00:00:00Z'));
  const store = new MemoryStore(clock);
  const now = clock.now();
  await store.replaceDesired([
    { guid: 'app-a', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED' },
    { guid: 'app-b', version: 'v2', instances: 1, state: 'STARTED', packageState: 'PENDING' },
  ]);
  await store.saveHeartbeats(
    [
      {
        agent: 'dea-one-guid',
        instances: [
          { app: 'app-a', version: 'v1', instance: 'ia0', index: 0, state: 'RUNNING', stateTimestamp: 1700000000.5, agent: 'dea-one-guid' },
          { app: 'app-a', version: 'v1', instance: 'ia1', index: 1, state: 'CRASHED', stateTimestamp: 1700000001, agent: 'dea-one-guid' },
          { app: 'app-old', version: 'v0', instance: 'io0', index: 0, state: 'RUNNING', stateTimestamp: 1700000002, agent: 'dea-one-guid' },
        ],
      },
    ],
    30_000,
  );
  await store.putCrashCounts([{ app: 'app-a', version: 'v1', index: 1, count: 2, createdAt: now - 5000 }], 60_000);
  await store.putPendingStarts([
    {
      messageId: 's1',
      sendOn: now + 30_000,
      sentOn: 0,
      keepAlive: 30_000,
      app: 'app-a',
      version: 'v1',
      index: 1,
      priority: 0.5,
      skipVerification: false,
      reason: 'CRASHED',
    },
    {
      messageId: 's2',
      sendOn: now - 10_000,
      sentOn: now - 5_000,
      keepAlive: 30_000,
      app: 'app-b',
      version: 'v2',
      index: 0,
      priority: 1,
      skipVerification: true,
      reason: 'EVACUATING',
    },
    {
      messageId: 's3',
      sendOn: now,
      sentOn: 0,
      keepAlive: 0,
      app: 'app-gone',
      version: 'v1',
      index: 0,
      priority: 1,
      skipVerification: false,
      reason: 'MISSING',
    },
  ]);
  await store.putPendingStops([
    { messageId: 'p1', sendOn: now + 60_000, sentOn: 0, keepAlive: 30_000, app: 'app-old', version: 'v0', instance: 'io0', reason: 'EXTRA' },
  ]);
  await store.bumpFreshness('desired', 120_000);
  return { clock, store, now };
}

describe('renderDump', () => {
  it("matches HM9000's structured dump layout (docs/hm9000.md#dump) for a fixture state", async () => {
    const { store, now } = await fixture();
    const doc = buildDump({
      foundation: 'f',
      now,
      snapshot: await store.snapshot(),
      actual: { fresh: false, since: null, reason: 'no heartbeats saved yet or within the freshness TTL' },
      desired: { fresh: true, since: new Date(now).toISOString(), reason: null },
      freshnessError: freshnessError(false, true),
    });
    expect(renderDump(doc)).toBe(
      [
        'Dump - Current timestamp 1767225600',
        'STORE IS NOT FRESH: Actual state is not fresh (actual: no heartbeats saved yet or within the freshness TTL)',
        '====================',
        '',
        'Guid: app-a | Version: v1',
        '  Desired: [2] instances, (STARTED, STAGED)',
        '  Heartbeats:',
        '    [0 RUNNING] ia0 on dea-one-guid',
        '    [1 CRASHED] ia1 on dea-one-guid',
        '  CrashCounts: [1]:2',
        '  Pending Starts:',
        '    [1] priority:0.50 send:30s',
        '',
        'Guid: app-b | Version: v2',
        '  Desired: [1] instances, (STARTED, PENDING)',
        '  Heartbeats: NONE',
        '  Pending Starts:',
        '    [0] priority:1.00 NO VERIFICATION send:SENT delete:25s',
        '',
        'Guid: app-old | Version: v0',
        '  Desired: NO',
        '  Heartbeats:',
        '    [0 RUNNING] io0 on dea-one-guid',
        '  Pending Stops:',
        '    io0 send:1m0s',
        '',
      ].join('\n'),
    );
  });

  it('says "Store is fresh" when both states are fresh', async () => {
    const { store, now } = await fixture();
    const fresh = { fresh: true, since: new Date(now).toISOString(), reason: null };
    const text = renderDump(buildDump({ foundation: 'f', now, snapshot: await store.snapshot(), actual: fresh, desired: fresh, freshnessError: null }));
    expect(text.split('\n').slice(0, 3)).toEqual(['Dump - Current timestamp 1767225600', 'Store is fresh', '====================']);
  });
});
