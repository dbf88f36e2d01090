#!/usr/bin/env node
// `npm run chaos`: the chaos suite at its larger size (HMGATE_CHAOS_SIZE, default large), one test
// file at a time so the faults do not share the machine, then one markdown table of every fault,
// in fault order, printed and written beside the rows (its path is printed). Exits as vitest did.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const out = mkdtempSync(join(tmpdir(), 'hmgate-chaos-'));
const env = { ...process.env, HMGATE_CHAOS_SIZE: process.env.HMGATE_CHAOS_SIZE ?? 'large', HMGATE_CHAOS_OUT: out };
const run = spawnSync(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', 'test/chaos', '--maxWorkers=1', ...process.argv.slice(2)], {
  stdio: 'inherit',
  env,
});

const files = readdirSync(out).filter((f) => f.endsWith('.json'));
if (files.length === 0) {
  console.error('chaos: no fault reported a row');
  process.exit(run.status ?? 1);
}
const parts = files.map((f) => JSON.parse(readFileSync(join(out, f), 'utf8')));
const rows = parts.flatMap((p) => p.rows);
// "5a. …" sorts after "4. …" and before "6. …".
const key = (fault) => parseFloat(fault) + (/^\d+b/.test(fault) ? 0.5 : 0);
rows.sort((a, b) => key(a.fault) - key(b.fault));
const table = `${parts[0].caption}\n\n${[...parts[0].head, ...rows.map((r) => r.line)].join('\n')}\n`;
writeFileSync(join(out, 'table.md'), table);
console.log(`\n${table}\n(also in ${join(out, 'table.md')})`);
process.exit(run.status ?? 1);
