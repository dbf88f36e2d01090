/**
 * The live simulator against a real `hmgate run` (the built CLI) over a real nats-server: the
 * daemon fetches the simulator's bulk API, hears its heartbeats, becomes fresh and sends nothing
 * for a converged foundation; an instance the simulator removes gets a start, which the simulator
 * obeys. And `hmgate simulate --live` as a process: it stops at its duration or on SIGTERM with a
 * summary.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../config/load.js';
import { SubjectRecorder } from '../../test/helpers/agents.js';
import { cliPath, HmgateDaemon, runCli } from '../../test/helpers/hmgate-process.js';
import { freePort, registerExitCleanup, startNatsServer, waitFor } from '../../test/helpers/index.js';
import { appGuid, appVersion } from './live-foundation.js';
import { liveOptionsFromConfig, LiveSimulator } from './live.js';

const HB = 500;
let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-live-'));
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(natsUrl: string, ccPort: number, apiPort: number): Promise<string> {
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'extends: hm9000',
      `heartbeat_interval: ${HB}ms`,
      `bus: { servers: ["${natsUrl}"] }`,
      'sources:',
      // Saves well inside the agents' TTL; a slow save on a busy machine still bumps freshness.
      '  heartbeats: { sync_interval: 100ms, save_deadline: 2hb }',
      `  desired: { url: "http://127.0.0.1:${ccPort}", user: bulk_api, password: live-secret }`,
      `api: { listen: "127.0.0.1:${apiPort}", password: pw }`,
      '',
    ].join('\n'),
  );
  return file;
}

const auth = { Authorization: `Basic ${Buffer.from('magnet:pw').toString('base64')}` };

async function cycles(apiPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${apiPort}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const m = /^hmgate_cycles_total(?:\{[^}]*\})? (\d+)/m.exec(text);
  if (!m) throw new Error('no hmgate_cycles_total in /metrics');
  return Number(m[1]);
}

describe('hmgate simulate --live', () => {
  it('keeps a real daemon fresh and quiet for a converged foundation; a removed instance gets a start, which it obeys', async () => {
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const [ccPort, apiPort] = [await freePort(), await freePort()];
    const file = await writeConfig(nats.url, ccPort, apiPort);
    const loaded = await loadConfig(file, { env: {} });
    // 6 agents × 5 instances, apps of 3: every app spread over 3 agents.
    const sim = new LiveSimulator(liveOptionsFromConfig(loaded, { agents: 6, instancesPerAgent: 5, instancesPerApp: 3, churn: 0, seed: 1, obey: true }));
    await sim.start();
    cleanups.push(() => sim.stop());
    // The bulk API on the port the config names, with its credentials.
    expect(sim.ccUrl).toBe(`http://127.0.0.1:${ccPort}`);
    const orders = await SubjectRecorder.start(nats.url, ['hm9000.start', 'hm9000.stop']);
    cleanups.push(() => orders.stop());

    const daemon = HmgateDaemon.start(file);
    cleanups.push(() => daemon.stop('SIGKILL'));
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${apiPort}/v1/status`, { headers: auth });
        if (res.status !== 200) return false;
        const s = (await res.json()) as { actual: { fresh: boolean }; desired: { fresh: boolean } };
        return s.actual.fresh && s.desired.fresh;
      },
      { what: `the daemon to be fresh\n${daemon.stdout.slice(-2_000)}`, timeoutMs: 60_000, intervalMs: 100 },
    );
    expect(sim.summary().cc.fetches).toBeGreaterThanOrEqual(1);

    // Converged: past the missing grace period (3hb) and a few cycles more, nothing was sent.
    const fresh = await cycles(apiPort);
    await waitFor(async () => (await cycles(apiPort)) >= fresh + 6, { what: '6 cycles on fresh state', timeoutMs: 60_000, intervalMs: 100 });
    expect(orders.messages).toEqual([]);

    // App 4's index 1 vanishes from its agent: the daemon starts it, the simulator runs it again.
    const g = 4 * 3 + 1;
    expect(sim.foundation.remove(g)).toBe(true);
    const start = await waitFor(() => orders.on('hm9000.start')[0], { what: 'a start for the removed instance', timeoutMs: 60_000, intervalMs: 50 });
    expect(start.body).toMatchObject({ droplet: appGuid(4), version: appVersion(4), instance_index: 1 });
    await waitFor(() => sim.summary().starts.obeyed === 1, { what: 'the simulator to run the started instance', timeoutMs: 10_000 });
    expect(sim.foundation.currentGuid(g)).toBeDefined();

    // Running again: a few cycles past the grace period bring no second start, and never a stop.
    const after = await cycles(apiPort);
    await waitFor(async () => (await cycles(apiPort)) >= after + 8, { what: '8 more cycles', timeoutMs: 60_000, intervalMs: 100 });
    expect(orders.on('hm9000.start')).toHaveLength(1);
    expect(orders.on('hm9000.stop')).toEqual([]);

    const summary = await sim.stop();
    expect(summary.heartbeats).toBeGreaterThan(0);
    expect(summary.starts).toEqual({ obeyed: 1, ignored: 0 });
    expect(summary.cc.refused).toBe(0);
    expect(daemon.logs().filter((l) => Number(l.level) >= 50)).toEqual([]);
  }, 240_000);

  it('runs as a command until its duration, publishing heartbeats, and prints a summary', async () => {
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const file = await writeConfig(nats.url, await freePort(), await freePort());
    const beats = await SubjectRecorder.start(nats.url, ['dea.heartbeat']);
    cleanups.push(() => beats.stop());
    const r = await runCli(['simulate', '--live', '-c', file, '--agents', '3', '--instances', '4', '--per-app', '2', '--duration', '3s', '--churn', '0.5'], {
      timeoutMs: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^bulk API: http:\/\/127\.0\.0\.1:\d+ \(user bulk_api\)$/m);
    const sent = Number(/^heartbeats sent: (\d+)/m.exec(r.stdout)?.[1]);
    expect(sent).toBeGreaterThanOrEqual(3);
    expect(r.stdout).toMatch(/publish lag p50 \d+ ms, p99 \d+ ms, max \d+ ms/);
    await waitFor(() => beats.messages.length >= sent, { what: 'every heartbeat on dea.heartbeat', timeoutMs: 5_000 });
    const hb = beats.messages[0]!.body as { dea: string; droplets: { droplet: string; index: number; state: string }[] };
    expect(hb.droplets).toHaveLength(4);
    expect(new Set(beats.messages.map((m) => (m.body as { dea: string }).dea)).size).toBe(3);
    // Churn 50 %: restarted instances were reported STARTING.
    expect(beats.messages.some((m) => (m.body as typeof hb).droplets.some((d) => d.state === 'STARTING'))).toBe(true);
  }, 120_000);

  it('stops cleanly on SIGTERM with a summary', async () => {
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const file = await writeConfig(nats.url, await freePort(), await freePort());
    const child = spawn(process.execPath, [cliPath, 'simulate', '--live', '-c', file, '--agents', '2', '--instances', '2', '--duration', '10m'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const unregister = registerExitCleanup(() => {
      child.kill('SIGKILL');
    });
    cleanups.push(async () => {
      child.kill('SIGKILL');
      unregister();
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    await waitFor(() => out.includes('bulk API:'), { what: 'the simulator to start', timeoutMs: 30_000 });
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(out).toMatch(/^SIGTERM received: stopping$/m);
    expect(out).toMatch(/^heartbeats sent: \d+/m);
  }, 60_000);
});
