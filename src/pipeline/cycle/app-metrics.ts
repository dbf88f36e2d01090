/**
 * HM9000's app metrics (docs/hm9000.md#metrics): the ten `NumberOf*` values computed from the apps after every
 * analysis — all -1 when the state was not fresh or the analysis failed — and the six counters of
 * starts and stops sent, by reason. Exposed as Prometheus gauges and counters under HM9000's names.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { isStartingOrRunning, type AppView } from '../../sdk/app-view.js';
import type { AppKey } from '../../sdk/app-key.js';

export const APP_METRIC_HELP = {
  NumberOfAppsWithAllInstancesReporting:
    'Desired apps, not pending staging, whose every desired index has at least one instance heartbeat in any state (-1: not fresh or the analysis failed)',
  NumberOfAppsWithMissingInstances:
    'Desired apps, not pending staging, with at least one desired index that has no instance heartbeat (-1: not fresh or the analysis failed)',
  NumberOfUndesiredRunningApps:
    'Apps not desired (stopped, failed, old versions, unknown) with at least one STARTING or RUNNING instance (-1: not fresh or the analysis failed)',
  NumberOfRunningInstances: 'STARTING or RUNNING instances of every app (-1: not fresh or the analysis failed)',
  NumberOfMissingIndices: 'Desired indices without any instance heartbeat, over desired apps not pending staging (-1: not fresh or the analysis failed)',
  NumberOfCrashedInstances: 'CRASHED instance heartbeats of every app (-1: not fresh or the analysis failed)',
  NumberOfCrashedIndices: 'Indices of any app with a CRASHED instance and no STARTING or RUNNING one (-1: not fresh or the analysis failed)',
  NumberOfDesiredApps: 'Desired apps not pending staging (-1: not fresh or the analysis failed)',
  NumberOfDesiredInstances: 'Desired instances of the desired apps not pending staging (-1: not fresh or the analysis failed)',
  NumberOfDesiredAppsPendingStaging: 'Desired apps whose package is PENDING staging (-1: not fresh or the analysis failed)',
} as const;

export type AppMetricName = keyof typeof APP_METRIC_HELP;
export const APP_METRIC_NAMES = Object.keys(APP_METRIC_HELP) as AppMetricName[];
export type AppMetricValues = Record<AppMetricName, number>;

/** The six counters of orders sent (StartCrashed … StopEvacuationComplete) by reason; other reasons count nowhere. */
export const SENT_COUNTERS = {
  start: { CRASHED: 'StartCrashed', MISSING: 'StartMissing', EVACUATING: 'StartEvacuating' },
  stop: { EXTRA: 'StopExtra', DUPLICATE: 'StopDuplicate', EVACUATION_COMPLETE: 'StopEvacuationComplete' },
} as const satisfies Record<'start' | 'stop', Record<string, string>>;

type SentCounterName = (typeof SENT_COUNTERS.start)[keyof typeof SENT_COUNTERS.start] | (typeof SENT_COUNTERS.stop)[keyof typeof SENT_COUNTERS.stop];

const SENT_HELP: Record<SentCounterName, string> = {
  StartCrashed: 'Starts sent for crashed instances (start reason CRASHED)',
  StartMissing: 'Starts sent for missing instances (start reason MISSING)',
  StartEvacuating: 'Starts sent for evacuating instances (start reason EVACUATING)',
  StopExtra: 'Stops sent for extra instances (stop reason EXTRA)',
  StopDuplicate: 'Stops sent for duplicate instances (stop reason DUPLICATE)',
  StopEvacuationComplete: 'Stops sent for evacuated instances (stop reason EVACUATION_COMPLETE)',
};

/** The ten values as HM9000's analyzer computed them (analyzer/app_metrics.go). */
export function computeAppMetrics(apps: ReadonlyMap<AppKey, AppView>): AppMetricValues {
  const m = Object.fromEntries(APP_METRIC_NAMES.map((n) => [n, 0])) as AppMetricValues;
  for (const app of apps.values()) {
    // HM9000 never formed an app with an empty guid or version.
    if (app.guid === '' || app.version === '') continue;
    if (app.desired) {
      if (app.desired.packageState === 'PENDING') {
        m.NumberOfDesiredAppsPendingStaging++;
      } else {
        const n = app.desired.instances;
        m.NumberOfDesiredApps++;
        m.NumberOfDesiredInstances += n;
        const reporting = new Set<number>();
        for (const i of app.instances) if (i.index >= 0 && i.index < n) reporting.add(i.index);
        const missing = n - reporting.size;
        if (missing === 0) {
          m.NumberOfAppsWithAllInstancesReporting++;
        } else {
          m.NumberOfAppsWithMissingInstances++;
          m.NumberOfMissingIndices += missing;
        }
      }
    } else if (app.instances.some(isStartingOrRunning)) {
      m.NumberOfUndesiredRunningApps++;
    }
    const crashed = new Set<number>();
    const live = new Set<number>();
    for (const i of app.instances) {
      if (isStartingOrRunning(i)) {
        m.NumberOfRunningInstances++;
        live.add(i.index);
      } else if (i.state === 'CRASHED') {
        m.NumberOfCrashedInstances++;
        crashed.add(i.index);
      }
    }
    for (const index of crashed) if (!live.has(index)) m.NumberOfCrashedIndices++;
  }
  return m;
}

function gauge(registry: Registry, name: AppMetricName): Gauge {
  const existing = registry.getSingleMetric(name);
  if (existing) return existing as Gauge;
  const g = new Gauge({ name, help: APP_METRIC_HELP[name], registers: [registry] });
  g.set(-1); // unknown until the first analysis, as when it is not fresh
  return g;
}

function counter(registry: Registry, name: SentCounterName): Counter {
  return (registry.getSingleMetric(name) as Counter | undefined) ?? new Counter({ name, help: SENT_HELP[name], registers: [registry] });
}

/** The app metrics of one registry (instances on the same registry share the same gauges and counters). */
export class AppMetrics {
  private readonly gauges: Record<AppMetricName, Gauge>;
  private readonly sent = new Map<string, Counter>();

  constructor(registry: Registry) {
    this.gauges = Object.fromEntries(APP_METRIC_NAMES.map((n) => [n, gauge(registry, n)])) as Record<AppMetricName, Gauge>;
    for (const [action, reasons] of Object.entries(SENT_COUNTERS)) {
      for (const [reason, name] of Object.entries(reasons) as [string, SentCounterName][]) this.sent.set(`${action} ${reason}`, counter(registry, name));
    }
  }

  /** After every analysis: the apps it read, or null when the state was not fresh or it failed (all ten -1). */
  update(apps: ReadonlyMap<AppKey, AppView> | null): AppMetricValues {
    const values = apps ? computeAppMetrics(apps) : (Object.fromEntries(APP_METRIC_NAMES.map((n) => [n, -1])) as AppMetricValues);
    for (const n of APP_METRIC_NAMES) this.gauges[n].set(values[n]);
    return values;
  }

  /** One start or stop sent: counted under its reason; other reasons are not counted. */
  countSent(order: { action: 'start' | 'stop'; reason: string }): void {
    this.sent.get(`${order.action} ${order.reason}`)?.inc();
  }
}
