/**
 * `hmgate dump --raw`: the store's keys and values as they lie in it (HM9000's `dump --raw`),
 * read straight from a shared store without a daemon. Only a store that keeps its state outside
 * the process can be read this way; it must offer dumpRaw().
 */
import { dirname } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import type { LoadedConfig } from '../config/load.js';
import { RealClock } from '../sdk/clock.js';
import { FreshnessBoard } from '../pipeline/freshness/board.js';
import { BusNotConnectedError, type Bus } from '../sdk/bus.js';
import { DropletRegistry } from '../sdk/droplets.js';
import type { EventHub } from '../sdk/events.js';
import type { StageContext } from '../sdk/plugin.js';
import type { Store } from '../sdk/store.js';

export class RawDumpUnavailableError extends Error {}

/** dump --raw connects to no NATS: subscriptions never deliver, and publishing fails as on a bus that is down. */
const offlineBus: Bus = {
  connected: false,
  subscribe: () => () => undefined,
  publish: () => {
    throw new BusNotConnectedError();
  },
  request: () => Promise.reject(new BusNotConnectedError()),
  flush: () => Promise.resolve(),
};

/** Not the leader and no event policies: events are ignored, and there are no app records. */
const noEvents: EventHub = { emit: () => undefined, wants: () => false, droplets: new DropletRegistry() };

export async function rawDump(loaded: LoadedConfig): Promise<string[]> {
  const stage = loaded.stages.find((s) => s.section === 'store')!;
  const clock = new RealClock();
  const ctx: StageContext = {
    id: 'store',
    kind: 'store',
    foundation: loaded.config.foundation,
    logger: pino({ level: 'silent' }),
    clock,
    heartbeatMs: loaded.heartbeatMs,
    configDir: dirname(loaded.file),
    metrics: new Registry(),
    freshness: new FreshnessBoard(() => clock.now(), loaded.config.freshness.actual_ttl, loaded.config.freshness.desired_ttl),
    bus: offlineBus,
    get store(): Store {
      throw new Error('the store is not available to the store stage itself');
    },
    isLeader: () => false,
    events: noEvents,
  };
  const store = (await stage.plugin.create(stage.options, ctx)) as Store & { dumpRaw?: () => Promise<string[]> };
  if (typeof store.dumpRaw !== 'function') {
    throw new RawDumpUnavailableError(
      `dump --raw reads a shared store; store "${stage.pluginSpec}" keeps its state inside the daemon: use hmgate dump (it asks the running daemon)`,
    );
  }
  await store.start?.();
  try {
    return await store.dumpRaw();
  } finally {
    await store.stop?.();
  }
}
