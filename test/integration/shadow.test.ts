/**
 * Shadow mode (dispatch.mode: shadow): everything runs — analysis, verification, the store's
 * bookkeeping — but nothing reaches a sink; what would have been sent is logged and counted.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { Engine } from '../../src/pipeline/engine.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/index.js';

const fixtures = resolve(__dirname, '../fixtures/plugins');
let dir: string;
let nats: NatsServerHandle;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-shadow-'));
  nats = await startNatsServer();
});
afterEach(async () => {
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

it('shadow mode sends nothing to sinks, logs and counts what it would have sent, and keeps the store as if sent', async () => {
  const marker = join(dir, 'marker.jsonl');
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'heartbeat_interval: 10s',
      `bus: { servers: ["${nats.url}"] }`,
      'freshness: { gate: false }',
      'dispatch: { mode: shadow }',
      'policies:',
      `  missing: { plugin: ${join(fixtures, 'missing-policy.js')} }`,
      'sinks:',
      `  rec: { plugin: ${join(fixtures, 'recorder-sink.js')}, marker_file: ${marker} }`,
      'api: { password: pw, enabled: false }',
      '',
    ].join('\n'),
  );
  const lines: Record<string, unknown>[] = [];
  const loggers = createLoggerFactory({ foundation: 'shadow', level: 'info', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const clock = new VirtualClock(1_700_000_000_000);
  const engine = new Engine(await loadConfig(file, { env: {} }), { clock, loggers });
  await engine.start();
  try {
    await engine.stateStore!.replaceDesired([{ guid: 'app-1', version: 'v1', instances: 2, state: 'STARTED', packageState: 'STAGED' }]);
    await clock.advanceAsync(0);
    const events = existsSync(marker)
      ? (await readFile(marker, 'utf8'))
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l).event)
      : [];
    expect(events).toEqual(['start']); // the sink started, and was sent nothing
    const wouldSend = lines.filter((l) => l.msg === 'shadow: would send start MISSING');
    expect(wouldSend.map((l) => (l.order as { index: number }).index)).toEqual([0, 1]);
    const metrics = await engine.metrics.getSingleMetric('hmgate_orders_sent_total')!.get();
    expect(metrics.values).toEqual([
      expect.objectContaining({ value: 2, labels: expect.objectContaining({ action: 'start', reason: 'MISSING', mode: 'shadow' }) }),
    ]);
    // the fixture's starts have keep_alive 0: deleted as if sent
    expect((await engine.stateStore!.getPendingStarts()).size).toBe(0);
  } finally {
    await engine.stop();
  }
});
