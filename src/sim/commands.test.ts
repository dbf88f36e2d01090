/**
 * What `hmgate test` and `hmgate simulate --live` print counts one thing in the singular: "1 order",
 * "expected 1 start", "1 agent × 1 instance".
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTests } from './commands.js';
import { formatLiveSummary } from './live.js';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-commands-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A foundation whose one missing instance gets one start, at 70 s. */
async function scenario(name: string, expectation: string): Promise<string> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    [
      `name: ${name}`,
      'config: hm9000',
      'desired: [{ app: a, instances: 2 }]',
      'agents: { dea-1: [{ app: a, index: 0 }] }',
      'run_for: 80s',
      'expect:',
      '  - start: { app: a, index: 1, at: 70s }',
      `  - ${expectation}`,
      '',
    ].join('\n'),
  );
  return file;
}

async function run(file: string): Promise<string> {
  let out = '';
  await runTests([file], (s) => void (out += s));
  return out;
}

describe('hmgate test', () => {
  it('a scenario that sent one order: "1 order"', async () => {
    const out = await run(await scenario('one-start', 'starts: 1'));
    expect(out).toMatch(/^PASS .*one-start\.yaml: one-start \(1 order, \d+ ms\)$/m);
  });

  it('an expected count of one: "expected 1 stop"', async () => {
    const out = await run(await scenario('one-stop', 'stops: 1'));
    expect(out).toContain('  - expected 1 stop in all, got 0\n');
  });
});

describe('hmgate simulate --live', () => {
  it('its summary counts one in the singular', () => {
    const text = formatLiveSummary({
      agents: 1,
      instances: 1,
      apps: 1,
      ranMs: 2_000,
      heartbeats: 1,
      bytes: 0,
      lag: { p50: 0, p99: 0, max: 0 },
      restarts: 0,
      starts: { obeyed: 1, ignored: 1 },
      stops: { obeyed: 1, ignored: 0 },
      cc: { pages: 1, fetches: 1, refused: 0 },
      ccUrl: 'http://127.0.0.1:1',
    });
    expect(text.split('\n')).toEqual([
      'simulated 1 agent × 1 instance (1 instance, 1 app) live for 2.0s',
      'heartbeats sent: 1 (0.0 MiB); publish lag p50 0 ms, p99 0 ms, max 0 ms',
      'restarts (churn): 0',
      'orders obeyed: 1 start, 1 stop (ignored: 1 start, 0 stops)',
      'bulk API http://127.0.0.1:1: 1 page, 1 complete fetch, 0 refused',
      '',
    ]);
  });
});
