/**
 * The context each stage is built with: its id and kind, a logger named after it, the clock, the
 * shared NATS connection, the metrics registry, the store (not for the store stage itself), where
 * to report freshness, whether this daemon leads, and the event hub.
 */
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import type { Bus } from '../sdk/bus.js';
import type { Clock } from '../sdk/clock.js';
import type { EventHub } from '../sdk/events.js';
import type { FreshnessReports } from '../sdk/freshness.js';
import type { StageContext } from '../sdk/plugin.js';
import type { Store } from '../sdk/store.js';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';

export interface SharedParts {
  logger: Logger;
  clock: Clock;
  metrics: Registry;
  bus: Bus;
  /** The store once started. */
  store(): Store | undefined;
  freshness: FreshnessReports;
  isLeader(): boolean;
  events: EventHub;
}

export function stageContext(s: ResolvedStage, loaded: LoadedConfig, parts: SharedParts): StageContext {
  const { config, heartbeatMs, file } = loaded;
  return {
    id: s.id,
    kind: s.kind,
    foundation: config.foundation,
    logger: parts.logger,
    clock: parts.clock,
    heartbeatMs,
    configDir: file.replace(/[/\\][^/\\]*$/, ''),
    metrics: parts.metrics,
    bus: parts.bus,
    get store(): Store {
      const started = parts.store();
      if (!started) throw new Error('the store is not available to the store stage itself');
      return started;
    },
    freshness: parts.freshness,
    isLeader: parts.isLeader,
    events: parts.events,
  };
}
