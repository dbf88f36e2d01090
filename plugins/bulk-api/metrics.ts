/**
 * The desired-state metrics: fetches by result, their duration, the apps kept, whether desired
 * state is available, and the CC's user count.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export interface FetchMetrics {
  fetches: Counter<'result'>;
  duration: Histogram;
  apps: Gauge;
  available: Gauge;
  users: Gauge;
}

const metricsByRegistry = new WeakMap<Registry, FetchMetrics>();

/** Get-or-create per registry: several stages (or engines in one process) share the series. */
export function desiredFetchMetrics(registry: Registry): FetchMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    m = {
      fetches:
        (registry.getSingleMetric('hmgate_desired_fetches_total') as Counter<'result'> | undefined) ??
        new Counter({
          name: 'hmgate_desired_fetches_total',
          help: 'Desired-state fetches from the CC bulk API, by result (ok, failed)',
          labelNames: ['result'],
          registers: [registry],
        }),
      duration:
        (registry.getSingleMetric('hmgate_desired_fetch_duration_seconds') as Histogram | undefined) ??
        new Histogram({
          name: 'hmgate_desired_fetch_duration_seconds',
          help: 'Duration of desired-state fetches (every page), ok or failed',
          buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
          registers: [registry],
        }),
      apps:
        (registry.getSingleMetric('hmgate_desired_apps') as Gauge | undefined) ??
        new Gauge({
          name: 'hmgate_desired_apps',
          help: 'Desired apps (STARTED, package STAGED or PENDING) kept by the last complete fetch',
          registers: [registry],
        }),
      available:
        (registry.getSingleMetric('hmgate_desired_available') as Gauge | undefined) ??
        new Gauge({
          name: 'hmgate_desired_available',
          help: 'Whether the last exchange with the CC bulk API succeeded (1) or not (0): event policies analyse only while it is 1',
          registers: [registry],
        }),
      users:
        (registry.getSingleMetric('hmgate_cc_users') as Gauge | undefined) ??
        new Gauge({
          name: 'hmgate_cc_users',
          help: 'Users of the Cloud Controller, from the last good /bulk/counts?model=user (user_counts: true)',
          registers: [registry],
        }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}
