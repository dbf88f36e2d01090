/**
 * The decision audit on the real engine (virtual clock, in-process bus): every decision enqueued
 * and sent, and every one held back — not fresh, dropped by verification, over the message limit,
 * shadow mode, a failed send — with its reason and facts, served by /v1/decisions and
 * /v1/apps/:guid.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { Engine } from '../../src/pipeline/engine.js';
import { InProcessBus } from '../../src/sim/in-process-bus.js';
import { control } from './fixtures/failing-sink.js';

const fixtures = resolve(__dirname, '../fixtures/plugins');
const T0 = 1_700_000_000_000;
let dir: string;
let engine: Engine | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-audit-'));
  control.fail = false;
});
afterEach(async () => {
  await engine?.stop();
  engine = undefined;
  await rm(dir, { recursive: true, force: true });
});

async function start(extra: string[] = []) {
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'heartbeat_interval: 10s',
      'policies:',
      `  missing: { plugin: ${join(fixtures, 'missing-policy.js')} }`,
      'sinks:',
      `  cc: { plugin: ${resolve(__dirname, 'fixtures/failing-sink.js')} }`,
      'api: { password: pw, enabled: false }',
      ...extra,
      '',
    ].join('\n'),
  );
  const clock = new VirtualClock(T0);
  engine = new Engine(await loadConfig(file, { env: {} }), {
    clock,
    bus: new InProcessBus(),
    loggers: createLoggerFactory({ foundation: 'audit', level: 'silent' }),
  });
  await engine.start();
  const store = engine.stateStore!;
  const fresh = async () => {
    await store.bumpFreshness('desired', 120_000);
    await store.bumpFreshness('actual', 30_000);
  };
  return { engine, clock, store, fresh };
}

const app = (instances: number) => ({ guid: 'app-1', version: 'v1', instances, state: 'STARTED', packageState: 'STAGED' });
const running = (index: number) => ({ app: 'app-1', version: 'v1', instance: `i-${index}`, index, state: 'RUNNING', stateTimestamp: 1, agent: 'dea-1' });

describe('decision audit', () => {
  it('records each decision enqueued and sent, with the reason and the facts behind it', async () => {
    const { engine, clock, store } = await start(['freshness: { gate: false }']);
    await store.replaceDesired([app(3)]);
    await store.saveHeartbeats([{ agent: 'dea-1', instances: [running(0)] }], 60_000);
    await clock.advanceAsync(0);
    const all = engine.audit.list();
    expect(all.map((d) => `${d.outcome}:${d.index}`)).toEqual(['enqueued:1', 'enqueued:2', 'sent:1', 'sent:2']);
    expect(all[0]).toMatchObject({
      action: 'start',
      reason: 'MISSING',
      detail: 'instance is missing',
      app: 'app-1',
      version: 'v1',
      message_id: 'm-app-1-1',
      time: new Date(T0).toISOString(),
      facts: { index: 1, desired_instances: 3, running_indices: [0], crash_count: 0, delay_ms: 0 },
    });
    expect(all[2]).toMatchObject({
      outcome: 'sent',
      message_id: 'm-app-1-1',
      facts: { running_indices: [0], crash_count: 0, delay_ms: 0, priority: expect.any(Number) },
    });
  });

  it('records what the message limit, verification and a failed send hold back', async () => {
    const { engine, clock, store } = await start(['freshness: { gate: false }', 'dispatch: { message_limit: 1 }']);
    await store.replaceDesired([app(3)]);
    await clock.advanceAsync(0);
    expect(
      engine.audit
        .list({})
        .filter((d) => d.outcome === 'suppressed')
        .map((d) => `${d.why}:${d.index}`),
    ).toEqual(['message_limit:1', 'message_limit:2']);
    expect(engine.audit.list().find((d) => d.why === 'message_limit')!.detail).toBe('1 start already sent this run');

    // a pending start for an index that runs by the time it is due: dropped by verification
    await store.putPendingStarts([
      {
        messageId: 'v-1',
        sendOn: clock.now() + 5_000,
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
    await store.saveHeartbeats([{ agent: 'dea-1', instances: [running(0), running(1), running(2)] }], 60_000);
    await clock.advanceAsync(10_000);
    expect(engine.audit.list().find((d) => d.message_id === 'v-1')).toMatchObject({
      outcome: 'suppressed',
      why: 'verification',
      detail: 'instance is already running',
      facts: { running_indices: [0, 1, 2] },
    });

    control.fail = true;
    await store.saveHeartbeats([{ agent: 'dea-1', instances: [running(0)] }], 60_000);
    await clock.advanceAsync(10_000);
    const failed = engine.audit.list().filter((d) => d.why === 'send_failed');
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.map((d) => d.detail)).toEqual(failed.map(() => 'the send failed: the CC is down'));
  });

  it('records what shadow mode would have sent', async () => {
    const { engine, clock, store } = await start(['freshness: { gate: false }', 'dispatch: { mode: shadow }']);
    await store.replaceDesired([app(1)]);
    await clock.advanceAsync(0);
    expect(engine.audit.list().map((d) => `${d.outcome}:${d.why ?? ''}`)).toEqual(['enqueued:', 'suppressed:shadow']);
    expect(engine.audit.list()[1]!.detail).toBe('shadow mode: would have been sent');
  });

  it('records a due message the freshness gate holds back, once per stale period', async () => {
    const { engine, clock, store, fresh } = await start();
    await store.replaceDesired([app(1)]);
    await store.putPendingStarts([
      { messageId: 'p-0', sendOn: T0, sentOn: 0, keepAlive: 0, app: 'app-1', version: 'v1', index: 0, priority: 1, skipVerification: false, reason: 'CRASHED' },
    ]);
    for (let i = 0; i < 4; i++) await clock.advanceAsync(10_000);
    const held = engine.audit.list();
    expect(held).toEqual([
      expect.objectContaining({
        outcome: 'suppressed',
        why: 'not_fresh',
        reason: 'CRASHED',
        message_id: 'p-0',
        detail: 'Actual and desired state are not fresh: nothing is sent',
        facts: expect.objectContaining({ crash_count: 0, running_indices: [] }),
      }),
    ]);
    // fresh (for a freshness window), then it goes out
    for (let i = 0; i < 4; i++) {
      await fresh();
      await clock.advanceAsync(10_000);
    }
    expect(engine.audit.list().map((d) => d.outcome)).toContain('sent');
  });
});
