/**
 * The heartbeat metrics, labelled by stage: heartbeats received, instances saved, batch saves
 * that failed and how long saves take. One set per registry, however many heartbeat stages share it.
 */
import { Counter, Histogram, type Registry } from 'prom-client';

export interface HeartbeatMetrics {
  received: Counter<'stage'>;
  saved: Counter<'stage'>;
  saveDuration: Histogram<'stage'>;
  saveFailures: Counter<'stage'>;
}

const metricsByRegistry = new WeakMap<Registry, HeartbeatMetrics>();

function counter(registry: Registry, name: string, help: string): Counter<'stage'> {
  return (registry.getSingleMetric(name) as Counter<'stage'> | undefined) ?? new Counter({ name, help, labelNames: ['stage'], registers: [registry] });
}

/** One set of heartbeat metrics per registry, however many heartbeat stages share it. */
export function heartbeatMetrics(registry: Registry): HeartbeatMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    m = {
      received: counter(registry, 'hmgate_heartbeats_received_total', 'Agent heartbeats received and decoded (NATS and HTTPS)'),
      saved: counter(registry, 'hmgate_heartbeats_saved_total', 'Instance heartbeats saved to the store'),
      saveFailures: counter(registry, 'hmgate_heartbeat_save_failures_total', 'Heartbeat batch saves that failed'),
      saveDuration:
        (registry.getSingleMetric('hmgate_heartbeat_save_duration_seconds') as Histogram<'stage'> | undefined) ??
        new Histogram({
          name: 'hmgate_heartbeat_save_duration_seconds',
          help: 'Duration of one heartbeat batch save to the store',
          labelNames: ['stage'],
          buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
          registers: [registry],
        }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}
