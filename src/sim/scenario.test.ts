import { readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../config/errors.js';
import { formatTimeline, runScenario } from './scenario.js';

const dir = resolve(__dirname, '../../test/scenarios');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));

describe('policy scenarios (test/scenarios)', () => {
  it('there are scenarios to run', () => {
    expect(files.length).toBeGreaterThanOrEqual(7);
  });

  it.each(files)('%s', async (f) => {
    const r = await runScenario(join(dir, f));
    expect(r.failures, `${r.name}\n${r.failures.join('\n')}\n${formatTimeline(r.timeline)}`).toEqual([]);
  });
});

describe('scenario runner', () => {
  it('fails a broken expectation and shows the timeline that differed', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'hmgate-scn-'));
    try {
      const f = join(tmp, 'wrong.yaml');
      await writeFile(
        f,
        [
          'name: wrong time',
          'config: hm9000',
          'desired: [{ app: a, instances: 2 }]',
          'agents: { dea-1: [{ app: a, index: 0 }] }',
          'run_for: 80s',
          'expect:',
          '  - start: { app: a, index: 1, at: 60s }',
          '  - stops: 1',
          '',
        ].join('\n'),
      );
      const r = await runScenario(f);
      expect(r.passed).toBe(false);
      expect(r.failures).toEqual(['expected a start of a index 1 at 60s: none matched', 'expected 1 stop in all, got 0']);
      expect(formatTimeline(r.timeline)).toBe('       70.000s  start a/v1 index 1 (MISSING)');
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('reports scenario errors at their position', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'hmgate-scn-'));
    try {
      const f = join(tmp, 'bad.yaml');
      await writeFile(f, ['name: bad', 'config: hm9000', 'run_for: soon', 'expect:', '  - start: { app: a, indx: 1 }', ''].join('\n'));
      await expect(runScenario(f)).rejects.toThrow(ConfigError);
      await expect(runScenario(f)).rejects.toThrow(/bad\.yaml:3:10: run_for: bad duration "soon"[^\n]*\n.*bad\.yaml:5:22: unknown key "indx"/s);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
