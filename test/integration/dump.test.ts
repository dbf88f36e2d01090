/**
 * `hmgate dump` against a running daemon (the built CLI, a real nats-server, a fake CC, simulated
 * agents): HM9000's dump layout in text, and --json valid against schemas/dump.schema.json. Also
 * the decisions of the daemon through /v1/decisions and /v1/apps/:guid.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv } from 'ajv';
import addFormats from 'ajv-formats';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SimAgents } from '../helpers/agents.js';
import { HmgateDaemon, runCli } from '../helpers/hmgate-process.js';
import { freePort, startFakeCC, startNatsServer, waitFor } from '../helpers/index.js';

const HB = 200;
let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-dump-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function config(port: number, natsUrl: string, ccUrl: string, password = 'pw'): Promise<string> {
  const f = join(dir, `hmgate-${password}.yaml`);
  await writeFile(
    f,
    [
      'extends: hm9000',
      `heartbeat_interval: ${HB}ms`,
      `bus: { servers: ["${natsUrl}"] }`,
      'sources:',
      '  heartbeats: { sync_interval: 50ms }',
      `  desired: { url: "${ccUrl}", user: bulk_api, password: bulk-password }`,
      'policies:',
      '  missing: { grace_period: 1h }', // the missing start stays pending, so the dump shows it
      `api: { listen: "127.0.0.1:${port}", password: ${password} }`,
      '',
    ].join('\n'),
  );
  return f;
}

const auth = { Authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` };

describe('hmgate dump', () => {
  it("prints a running daemon's state in HM9000's dump layout, and as JSON valid against the schema", async () => {
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const cc = await startFakeCC({ apps: [{ guid: 'app-a', version: 'v1', instances: 2 }] });
    cleanups.push(() => cc.stop());
    const agents = await SimAgents.start(nats.url, HB);
    cleanups.push(() => agents.stop());
    const inst = agents.agent('dea-1').run('app-a', 0);
    const port = await freePort();
    const f = await config(port, nats.url, cc.url);
    const d = HmgateDaemon.start(f);
    cleanups.push(() => d.stop('SIGKILL'));
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/v1/dump`, { headers: auth });
        if (res.status !== 200) return false;
        const doc = (await res.json()) as { fresh: boolean; apps: { pending_starts: unknown[] }[] };
        return doc.fresh && doc.apps[0]?.pending_starts.length === 1;
      },
      { what: 'a fresh dump with the pending start', timeoutMs: 15_000, intervalMs: 100 },
    );

    const text = await runCli(['dump', '-c', f]);
    expect(text.stderr).toBe('');
    expect(text.code).toBe(0);
    const lines = text.stdout.split('\n');
    expect(lines[0]).toMatch(/^Dump - Current timestamp \d{10}$/);
    expect(lines.slice(1, 9)).toEqual([
      'Store is fresh',
      '====================',
      '',
      'Guid: app-a | Version: v1',
      '  Desired: [2] instances, (STARTED, STAGED)',
      '  Heartbeats:',
      `    [0 RUNNING] ${inst.instance} on dea-1`,
      '  Pending Starts:',
    ]);
    expect(lines[9]).toMatch(/^ {4}\[1\] priority:0\.50 send:(59m\d+(\.\d+)?s|1h0m0s)$/);

    const json = await runCli(['dump', '-c', f, '--json']);
    expect(json.code).toBe(0);
    const doc = JSON.parse(json.stdout);
    const schema = JSON.parse(await readFile(resolve(__dirname, '../../schemas/dump.schema.json'), 'utf8'));
    const ajv = new Ajv({ allErrors: true, strict: false });
    (addFormats as unknown as (a: Ajv) => void)(ajv);
    const validate = ajv.compile(schema);
    expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
    expect(doc.apps[0]).toMatchObject({ guid: 'app-a', desired: { instances: 2 }, pending_starts: [{ index: 1, reason: 'MISSING', sent_on: null }] });

    // the decision behind that pending start, with its reason and facts
    const decisions = (await (await fetch(`http://127.0.0.1:${port}/v1/decisions?since=0`, { headers: auth })).json()) as { decisions: Record<string, any>[] };
    expect(decisions.decisions).toEqual([
      expect.objectContaining({
        outcome: 'enqueued',
        action: 'start',
        reason: 'MISSING',
        app: 'app-a',
        index: 1,
        facts: expect.objectContaining({ running_indices: [0], desired_instances: 2, delay_ms: 3_600_000 }),
      }),
    ]);
    const one = (await (await fetch(`http://127.0.0.1:${port}/v1/apps/app-a`, { headers: auth })).json()) as Record<string, any>;
    expect(one.versions[0].pending_starts[0].index).toBe(1);
    expect(one.decisions[0].reason).toBe('MISSING');

    // wrong credentials: one line, exit 1
    const wrong = await runCli(['dump', '-c', await config(port, nats.url, cc.url, 'not-it')]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr.trim()).toBe(`hmgate: the daemon at http://127.0.0.1:${port}/v1/dump refused api.user / api.password (401)`);
  });

  it('says so in one line, exit 1, when no daemon runs', async () => {
    const port = await freePort();
    const f = await config(port, 'nats://127.0.0.1:1', 'http://127.0.0.1:1');
    const r = await runCli(['dump', '-c', f]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim()).toBe(
      `hmgate: no hmgate daemon answers at http://127.0.0.1:${port}/v1/dump (connection refused): check api.listen; the memory store lives inside the daemon, so a dump needs it running (hmgate run)`,
    );
    expect((await runCli(['dump', '--no-such-flag', '-c', f])).code).toBe(2);
  });
});
