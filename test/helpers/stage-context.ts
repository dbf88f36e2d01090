/**
 * A StageContext for unit tests of a single plugin on a virtual clock: the real memory store, a
 * recording logger, a fresh metrics registry, and an in-process bus (subjects routed in memory,
 * `*`/`>` wildcards as in NATS) so no server is needed when time is virtual.
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { MemoryStore } from '../../plugins/memory-store/memory-store.js';
import { InProcessBus } from '../../src/sim/in-process-bus.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { FreshnessBoard } from '../../src/pipeline/freshness/board.js';
import type { PluginKind, StageContext } from '../../src/sdk/plugin.js';
import { DropletRegistry } from '../../src/sdk/droplets.js';
import type { PolicyEvent } from '../../src/sdk/events.js';

export { InProcessBus };

export interface TestContext {
  ctx: StageContext;
  clock: VirtualClock;
  store: MemoryStore;
  bus: InProcessBus;
  metrics: Registry;
  logs: Record<string, unknown>[];
  /** Every event the stage raised with ctx.events.emit (all kinds are wanted). */
  emitted: PolicyEvent[];
  droplets: DropletRegistry;
}

export function makeStageContext(opts: { id?: string; kind?: PluginKind; heartbeatMs?: number; startMs?: number; configDir?: string } = {}): TestContext {
  const clock = new VirtualClock(opts.startMs ?? 1_700_000_000_000);
  const store = new MemoryStore(clock);
  const bus = new InProcessBus();
  const metrics = new Registry();
  const logs: Record<string, unknown>[] = [];
  const heartbeatMs = opts.heartbeatMs ?? 10_000;
  const emitted: PolicyEvent[] = [];
  const droplets = new DropletRegistry();
  const logger = pino({ level: 'debug', base: { foundation: 'test' } }, { write: (s: string) => void logs.push(JSON.parse(s)) }).child({
    component: opts.id ?? 'stage',
  });
  const ctx: StageContext = {
    id: opts.id ?? 'stage',
    kind: opts.kind ?? 'source',
    foundation: 'test',
    logger,
    clock,
    heartbeatMs,
    configDir: opts.configDir ?? process.cwd(),
    metrics,
    bus,
    store,
    freshness: new FreshnessBoard(() => clock.now(), 3 * heartbeatMs, 12 * heartbeatMs),
    isLeader: () => true,
    events: { emit: (e) => void emitted.push(e), wants: () => true, droplets },
  };
  return { ctx, clock, store, bus, metrics, logs, emitted, droplets };
}
