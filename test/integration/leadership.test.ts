/**
 * The engine's leadership with the memory store: one daemon leads throughout (nothing to hand
 * over to) and a normal shutdown is no loss of leadership worth a warning.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/index.js';

let dir: string;
let nats: NatsServerHandle;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-leadership-'));
  nats = await startNatsServer();
});
afterEach(async () => {
  await nats.stop();
  await rm(dir, { recursive: true, force: true });
});

it('memory store: leads and is a candidate throughout; stopping logs no loss of leadership', async () => {
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    ['foundation: solo', 'heartbeat_interval: 1s', `bus: { servers: ["${nats.url}"] }`, 'api: { password: pw, enabled: false }', ''].join('\n'),
  );
  const lines: Record<string, unknown>[] = [];
  const loggers = createLoggerFactory({ foundation: 'solo', level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const engine = new Engine(await loadConfig(file, { env: {} }), { loggers });
  await engine.start();
  try {
    expect(await engine.status()).toMatchObject({ leader: true, candidate: true, not_candidate_because: null });
    // Even without NATS it keeps leading: there is no other daemon to take over.
    await nats.stop();
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await engine.status()).toMatchObject({ leader: true, candidate: true });
  } finally {
    await engine.stop();
  }
  expect(lines.some((l) => String(l.msg).includes('no longer leads'))).toBe(false);
  expect(lines.some((l) => l.msg === 'stopped')).toBe(true);
});
