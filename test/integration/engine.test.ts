/**
 * The engine on a virtual clock with a real nats-server: stage order, the cycle, and the
 * freshness gate (nothing reaches a sink while either state is stale).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { Engine } from '../../src/pipeline/engine.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/index.js';

const fixtures = resolve(__dirname, '../fixtures/plugins');
let dir: string;
let nats: NatsServerHandle;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-engine-'));
  nats = await startNatsServer();
});
afterEach(async () => {
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

async function engineFor(extra: string[]) {
  const marker = join(dir, 'marker.jsonl');
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'foundation: virt',
      'heartbeat_interval: 10s',
      `bus: { servers: ["${nats.url}"] }`,
      'policies:',
      `  missing: { plugin: ${join(fixtures, 'missing-policy.js')} }`,
      'sinks:',
      `  rec: { plugin: ${join(fixtures, 'recorder-sink.js')}, marker_file: ${marker} }`,
      'api: { password: pw, enabled: false }',
      ...extra,
      '',
    ].join('\n'),
  );
  const loaded = await loadConfig(file, { env: {} });
  const lines: Record<string, unknown>[] = [];
  const loggers = createLoggerFactory({ foundation: 'virt', level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const clock = new VirtualClock(1_700_000_000_000);
  const engine = new Engine(loaded, { clock, loggers });
  const delivered = async () =>
    existsSync(marker)
      ? (await readFile(marker, 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l).event as string)
          .filter((e) => e.startsWith('send'))
      : [];
  return { engine, clock, lines, delivered };
}

const app = { guid: 'app-1', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED' };

describe('engine', () => {
  it('sends nothing until both states are fresh, then runs policies and hands decisions to sinks', async () => {
    const { engine, clock, lines, delivered } = await engineFor([]);
    await engine.start();
    try {
      const store = engine.stateStore!;
      await clock.advanceAsync(0);
      expect(await delivered()).toEqual([]);
      expect(lines.some((l) => l.msg === 'Actual and desired state are not fresh: sending nothing')).toBe(true);

      await store.replaceDesired([app]);
      await store.bumpFreshness('desired', 120_000);
      // Heartbeats saved every 10 s from t0: actual is fresh from t0 + 30 s, not before.
      for (let t = 0; t < 30_000; t += 10_000) {
        expect(await delivered()).toEqual([]);
        await store.bumpFreshness('actual', 30_000);
        await clock.advanceAsync(10_000);
      }
      expect(await delivered()).toEqual(['send:start:MISSING:0', 'send:start:MISSING:1']);
      expect(lines.some((l) => l.msg === 'actual and desired state are fresh')).toBe(true);

      const status = await engine.status();
      expect(status.actual.fresh).toBe(true);
      expect(status.desired.fresh).toBe(true);
      expect(status.counters.cycles).toBe(4);
      expect(status.counters.cycles_not_fresh).toBe(3);

      // keep_alive 0: each cycle proposes and sends the still-missing instances again.
      await store.bumpFreshness('actual', 30_000);
      await clock.advanceAsync(10_000);
      expect((await delivered()).length).toBe(4);
      expect(status.counters.orders_sent).toBe(2);
      // Heartbeats stop: the actual marker lapses after its TTL and sending stops with it.
      await clock.advanceAsync(30_000);
      const after = (await delivered()).length;
      await clock.advanceAsync(30_000);
      expect((await delivered()).length).toBe(after);
      expect((await engine.status()).actual).toMatchObject({ fresh: false });
    } finally {
      await engine.stop();
    }
  });

  it('a cycle whose one message failed to send says so in the singular', async () => {
    const failing = join(dir, 'failing-sink.js');
    await writeFile(
      failing,
      [
        'export default {',
        "  name: 'failing-sink',",
        "  kind: 'sink',",
        "  optionsSchema: { type: 'object', properties: {}, additionalProperties: false },",
        '  create: () => ({ async send() { throw new Error("refused"); } }),',
        '};',
        '',
      ].join('\n'),
    );
    const file = join(dir, 'failing.yaml');
    await writeFile(
      file,
      [
        'foundation: virt',
        'heartbeat_interval: 10s',
        `bus: { servers: ["${nats.url}"] }`,
        'freshness: { gate: false }',
        'policies:',
        `  missing: { plugin: ${join(fixtures, 'missing-policy.js')} }`,
        'sinks:',
        `  failing: { plugin: ${failing} }`,
        'api: { password: pw, enabled: false }',
        '',
      ].join('\n'),
    );
    const lines: Record<string, unknown>[] = [];
    const loggers = createLoggerFactory({ foundation: 'virt', level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
    const clock = new VirtualClock(1_700_000_000_000);
    const engine = new Engine(await loadConfig(file, { env: {} }), { clock, loggers });
    await engine.start();
    try {
      await engine.stateStore!.replaceDesired([{ ...app, instances: 1 }]);
      await clock.advanceAsync(0);
      expect(lines.find((l) => l.msg === 'cycle failed; continuing')).toMatchObject({ error: '1 message failed to send; it is kept for the next cycle' });
    } finally {
      await engine.stop();
    }
  });

  it('with the gate off, decides on whatever state there is', async () => {
    const { engine, clock, delivered } = await engineFor(['freshness: { gate: false }']);
    await engine.start();
    try {
      await engine.stateStore!.replaceDesired([app]);
      await clock.advanceAsync(0);
      expect(await delivered()).toEqual(['send:start:MISSING:0', 'send:start:MISSING:1']);
    } finally {
      await engine.stop();
    }
  });
});
