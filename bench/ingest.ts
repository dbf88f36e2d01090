/**
 * bench/ingest: sustained heartbeat ingest through the real engine — a real nats-server, the
 * `heartbeat` source, the memory store — with 1 000 simulated agents × 100 instances.
 *
 * The agents publish in rounds, each agent once a round, and a round starts only once the store
 * has saved every instance heartbeat of the one before, so no heartbeat is coalesced away and the
 * figure is instance heartbeats *saved* per second, decoded and written end to end. A tenth of
 * the agents report one instance in another state each round, so the store writes too, not only
 * presence renewals. The agents publish from this same process: the figure is a lower bound.
 * Figures, not a test.
 *
 *   npm run bench:ingest
 *   node dist/bench/ingest.js [seconds] [agents] [instances-per-agent]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import type { Counter } from 'prom-client';
import { loadConfig } from '../src/config/load.js';
import { createLoggerFactory } from '../src/log.js';
import { Engine } from '../src/pipeline/engine.js';
import { startNatsServer, type NatsServerHandle } from '../test/helpers/nats-server.js';

const SECONDS = Number(process.argv[2] ?? 15);
const AGENTS = Number(process.argv[3] ?? 1_000);
const PER_AGENT = Number(process.argv[4] ?? 100);
const SYNC_INTERVAL = '50ms';
/** Give up on a round that is not saved within this long (something is wrong then). */
const ROUND_TIMEOUT_MS = 30_000;

const encoder = new TextEncoder();

/** Two payloads per agent: all RUNNING, and (for every tenth agent) one instance CRASHED. */
function payloads(agent: number): [Uint8Array, Uint8Array] {
  const dea = `dea-${agent}`;
  const make = (crashed: boolean) =>
    encoder.encode(
      JSON.stringify({
        dea,
        droplets: Array.from({ length: PER_AGENT }, (_, i) => ({
          cc_partition: 'default',
          droplet: `app-${agent}-${Math.floor(i / 10)}`,
          version: 'e3b8c2f0-5d1a-4c7e-9a42-0b7f6c1d2e3f',
          instance: `${dea}-instance-${i}-4f1e2d3c5b6a79808f9e0d1c2b3a4958`,
          index: i % 10,
          state: crashed && i === 0 ? 'CRASHED' : 'RUNNING',
          state_timestamp: 1_700_000_000.3,
        })),
      }),
    );
  const running = make(false);
  return [running, agent % 10 === 0 ? make(true) : running];
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(0);

async function counterValue(engine: Engine, name: string): Promise<number> {
  const metric = engine.metrics.getSingleMetric(name) as Counter | undefined;
  if (!metric) return 0;
  return (await metric.get()).values.reduce((sum, v) => sum + v.value, 0);
}

async function main(): Promise<void> {
  let nats: NatsServerHandle | undefined;
  let engine: Engine | undefined;
  let nc: NatsConnection | undefined;
  const dir = await mkdtemp(join(tmpdir(), 'hmgate-bench-ingest-'));
  try {
    nats = await startNatsServer();
    const file = join(dir, 'hmgate.yaml');
    await writeFile(
      file,
      [
        'foundation: bench',
        'heartbeat_interval: 10s',
        'log: { level: error }',
        `bus: { servers: ["${nats.url}"] }`,
        'store: { plugin: memory }',
        'sources:',
        '  heartbeats:',
        '    plugin: heartbeat',
        `    sync_interval: ${SYNC_INTERVAL}`,
        '    save_deadline: 1hb',
        'api: { password: bench, enabled: false }',
        '',
      ].join('\n'),
    );
    const loaded = await loadConfig(file, { env: {} });
    engine = new Engine(loaded, { loggers: createLoggerFactory({ foundation: 'bench', level: 'error' }) });
    await engine.start();
    nc = await connect({ servers: nats.url, name: 'bench-agents' });

    const messages = Array.from({ length: AGENTS }, (_, a) => payloads(a));
    const perRound = AGENTS * PER_AGENT;
    const bytesPerRound = messages.reduce((sum, [m]) => sum + m.byteLength, 0);
    let peakRss = process.memoryUsage().rss;

    const round = async (n: number): Promise<boolean> => {
      const target = (await counterValue(engine!, 'hmgate_heartbeats_saved_total')) + perRound;
      const variant = n % 2;
      for (const pair of messages) nc!.publish('dea.heartbeat', pair[variant]!);
      await nc!.flush();
      const giveUp = Date.now() + ROUND_TIMEOUT_MS;
      while ((await counterValue(engine!, 'hmgate_heartbeats_saved_total')) < target) {
        if (Date.now() > giveUp) return false;
        await sleep(1);
      }
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
      return true;
    };

    // Warm-up: the first round creates every agent and instance in the store.
    if (!(await round(0))) throw new Error(`the warm-up round was not saved within ${ROUND_TIMEOUT_MS}ms`);
    const savedBefore = await counterValue(engine, 'hmgate_heartbeats_saved_total');
    const started = Date.now();
    let rounds = 0;
    let complete = true;
    while (Date.now() - started < SECONDS * 1000) {
      if (!(await round(rounds + 1))) {
        complete = false;
        break;
      }
      rounds++;
    }
    const elapsedS = (Date.now() - started) / 1000;
    const saved = (await counterValue(engine, 'hmgate_heartbeats_saved_total')) - savedBefore;
    const dropped = await counterValue(engine, 'hmgate_dropped_messages_total');
    const failures = await counterValue(engine, 'hmgate_heartbeat_save_failures_total');
    const rss = process.memoryUsage().rss;

    console.log(`bench/ingest: heartbeat source + memory store in the engine, real nats-server (node ${process.version})`);
    console.log(
      `agents: ${AGENTS}, instances per agent: ${PER_AGENT}, heartbeat size: ${(bytesPerRound / AGENTS / 1024).toFixed(1)} KiB, sync_interval: ${SYNC_INTERVAL}`,
    );
    console.log(`measured: ${elapsedS.toFixed(1)} s, ${rounds} rounds${complete ? '' : ' (stopped: a round was not saved in time)'}`);
    console.log(`instance heartbeats saved/s: ${Math.round(saved / elapsedS)}`);
    console.log(`agent heartbeats saved/s: ${Math.round(saved / PER_AGENT / elapsedS)}`);
    console.log(`heartbeat payload ingested: ${((bytesPerRound * rounds) / 1024 / 1024 / elapsedS).toFixed(1)} MiB/s`);
    console.log(`dropped: ${dropped}, save failures: ${failures}`);
    console.log(`rss: ${mb(rss)} MB (peak ${mb(peakRss)} MB)`);
  } finally {
    await nc?.close().catch(() => undefined);
    await engine?.stop().catch(() => undefined);
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(`bench/ingest failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 1;
});
