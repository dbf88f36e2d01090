import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { APP_METRIC_NAMES, AppMetrics, computeAppMetrics } from './app-metrics.js';
import { buildAppViews } from '../../sdk/app-view.js';
import { appKey } from '../../sdk/app-key.js';
import { type CrashCount, type DesiredApp, type InstanceHeartbeat, type StoreSnapshot } from '../../sdk/state.js';

let n = 0;
const hb = (app: string, version: string, index: number, state: string): InstanceHeartbeat => ({
  app,
  version,
  instance: `i-${++n}`,
  index,
  state,
  stateTimestamp: 0,
  agent: 'dea-1',
});
const want = (guid: string, version: string, instances: number, packageState = 'STAGED'): DesiredApp => ({
  guid,
  version,
  instances,
  state: 'STARTED',
  packageState,
});

function apps(parts: { desired?: DesiredApp[]; instances?: InstanceHeartbeat[]; crashes?: CrashCount[] }) {
  const group = <T extends { app: string; version: string }>(list: T[]) => {
    const m = new Map<string, T[]>();
    for (const x of list) m.set(appKey(x.app, x.version), [...(m.get(appKey(x.app, x.version)) ?? []), x]);
    return m;
  };
  const snapshot: StoreSnapshot = {
    now: 0,
    desired: new Map((parts.desired ?? []).map((d) => [appKey(d.guid, d.version), d])),
    instances: group(parts.instances ?? []),
    crashCounts: group(parts.crashes ?? []),
    starts: new Map(),
    stops: new Map(),
    freshness: {},
  };
  return buildAppViews(snapshot);
}

const ZERO = Object.fromEntries(APP_METRIC_NAMES.map((name) => [name, 0]));

/** The values of the registry's unlabelled metrics, read from its Prometheus text. */
async function scrape(registry: Registry): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await registry.metrics()).split('\n')) {
    const m = /^([A-Za-z_:][\w:]*) (-?[\d.e+]+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

describe('computeAppMetrics (docs/hm9000.md#metrics)', () => {
  it('is all zero without apps', () => {
    expect(computeAppMetrics(new Map())).toEqual(ZERO);
  });

  it('NumberOfAppsWithAllInstancesReporting: every desired index has a heartbeat in any state', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('all', 'v', 3), want('zero', 'v', 0), want('gap', 'v', 2)],
        instances: [
          hb('all', 'v', 0, 'CRASHED'),
          hb('all', 'v', 1, 'EVACUATING'),
          hb('all', 'v', 2, 'STARTING'),
          hb('gap', 'v', 0, 'RUNNING'),
          hb('gap', 'v', 2, 'RUNNING'),
        ],
      }),
    );
    expect(m.NumberOfAppsWithAllInstancesReporting).toBe(2); // `all` and `zero` (no index desired)
    expect(m.NumberOfAppsWithMissingInstances).toBe(1); // `gap`: index 1 silent; index 2 is not desired
    expect(m.NumberOfMissingIndices).toBe(1);
  });

  it('NumberOfAppsWithMissingInstances and NumberOfMissingIndices: N minus the desired indices reporting', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('a', 'v', 4), want('b', 'v', 2), want('pending', 'v', 5, 'PENDING')],
        instances: [hb('a', 'v', 1, 'RUNNING'), hb('a', 'v', 1, 'RUNNING'), hb('a', 'v', 7, 'RUNNING')],
      }),
    );
    expect(m.NumberOfAppsWithMissingInstances).toBe(2);
    expect(m.NumberOfMissingIndices).toBe(3 + 2); // a: 0, 2, 3; b: 0, 1 — the PENDING app's five are not counted
    expect(m.NumberOfAppsWithAllInstancesReporting).toBe(0);
  });

  it('NumberOfUndesiredRunningApps: apps not desired, old versions included, with a STARTING or RUNNING instance', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('app', 'v2', 1)],
        instances: [
          hb('app', 'v1', 0, 'RUNNING'), // old version
          hb('stopped', 'v', 0, 'STARTING'), // stopped, failed or unknown: not in the desired set
          hb('crashed-only', 'v', 0, 'CRASHED'),
          hb('evacuating-only', 'v', 0, 'EVACUATING'),
          hb('app', 'v2', 0, 'RUNNING'),
        ],
      }),
    );
    expect(m.NumberOfUndesiredRunningApps).toBe(2);
  });

  it('NumberOfRunningInstances and NumberOfCrashedInstances: every app, desired or not, PENDING included', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('a', 'v', 1), want('p', 'v', 1, 'PENDING')],
        instances: [
          hb('a', 'v', 0, 'RUNNING'),
          hb('a', 'v', 0, 'STARTING'),
          hb('a', 'v', 3, 'RUNNING'),
          hb('a', 'v', 0, 'CRASHED'),
          hb('a', 'v', 1, 'EVACUATING'),
          hb('p', 'v', 0, 'RUNNING'),
          hb('old', 'v', 0, 'RUNNING'),
          hb('old', 'v', 0, 'CRASHED'),
          hb('old', 'v', 1, 'CRASHED'),
        ],
      }),
    );
    expect(m.NumberOfRunningInstances).toBe(5);
    expect(m.NumberOfCrashedInstances).toBe(3);
  });

  it('NumberOfCrashedIndices: indices of any app with a CRASHED instance and no STARTING or RUNNING one', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('a', 'v', 2)],
        instances: [
          hb('a', 'v', 0, 'CRASHED'),
          hb('a', 'v', 0, 'CRASHED'), // two crashes at one index count once
          hb('a', 'v', 1, 'CRASHED'),
          hb('a', 'v', 1, 'STARTING'), // a starting instance clears index 1
          hb('a', 'v', 5, 'CRASHED'), // an index that is not desired counts
          hb('a', 'v', 6, 'CRASHED'),
          hb('a', 'v', 6, 'EVACUATING'), // evacuating is not starting or running
          hb('old', 'v', 0, 'CRASHED'), // an undesired app counts
          hb('old', 'v', 1, 'RUNNING'),
        ],
      }),
    );
    expect(m.NumberOfCrashedIndices).toBe(4); // a/0, a/5, a/6, old/0
  });

  it('NumberOfDesiredApps, NumberOfDesiredInstances and NumberOfDesiredAppsPendingStaging split on PENDING', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('a', 'v', 3), want('b', 'v', 2), want('c', 'v', 0), want('p', 'v', 7, 'PENDING'), want('q', 'v', 1, 'PENDING')],
      }),
    );
    expect(m.NumberOfDesiredApps).toBe(3);
    expect(m.NumberOfDesiredInstances).toBe(5);
    expect(m.NumberOfDesiredAppsPendingStaging).toBe(2);
  });

  it('crash counts alone make no app', () => {
    expect(computeAppMetrics(apps({ crashes: [{ app: 'ghost', version: 'v', index: 0, count: 3, createdAt: 0 }] }))).toEqual(ZERO);
  });

  it('computes all ten together over a mixed foundation', () => {
    const m = computeAppMetrics(
      apps({
        desired: [want('A', 'v', 3), want('B', 'v', 2), want('C', 'v', 4, 'PENDING'), want('F', 'v', 0)],
        instances: [
          hb('A', 'v', 0, 'RUNNING'),
          hb('A', 'v', 1, 'CRASHED'),
          hb('A', 'v', 5, 'RUNNING'),
          hb('B', 'v', 0, 'EVACUATING'),
          hb('B', 'v', 1, 'STARTING'),
          hb('B', 'v', 1, 'CRASHED'),
          hb('C', 'v', 0, 'RUNNING'),
          hb('D', 'old', 0, 'RUNNING'),
          hb('D', 'old', 0, 'CRASHED'),
          hb('D', 'old', 3, 'CRASHED'),
          hb('D', 'old', 3, 'CRASHED'),
          hb('E', 'v', 0, 'CRASHED'),
        ],
        crashes: [{ app: 'G', version: 'v', index: 0, count: 1, createdAt: 0 }],
      }),
    );
    expect(m).toEqual({
      NumberOfAppsWithAllInstancesReporting: 2,
      NumberOfAppsWithMissingInstances: 1,
      NumberOfUndesiredRunningApps: 1,
      NumberOfRunningInstances: 5,
      NumberOfMissingIndices: 1,
      NumberOfCrashedInstances: 6,
      NumberOfCrashedIndices: 3,
      NumberOfDesiredApps: 3,
      NumberOfDesiredInstances: 5,
      NumberOfDesiredAppsPendingStaging: 1,
    });
  });
});

describe('AppMetrics', () => {
  const foundation = () =>
    apps({
      desired: [want('a', 'v', 2), want('p', 'v', 1, 'PENDING')],
      instances: [hb('a', 'v', 0, 'RUNNING'), hb('a', 'v', 1, 'CRASHED'), hb('old', 'v', 0, 'RUNNING')],
    });

  it('registers the ten gauges under HM9000 names, -1 until the first analysis', async () => {
    const registry = new Registry();
    new AppMetrics(registry);
    const text = await registry.metrics();
    for (const name of APP_METRIC_NAMES) {
      expect(text).toContain(`# TYPE ${name} gauge\n${name} -1\n`);
    }
  });

  it('update(apps) sets the ten values', async () => {
    const registry = new Registry();
    new AppMetrics(registry).update(foundation());
    const values = await scrape(registry);
    expect(Object.fromEntries(APP_METRIC_NAMES.map((name) => [name, values[name]]))).toEqual({
      NumberOfAppsWithAllInstancesReporting: 1,
      NumberOfAppsWithMissingInstances: 0,
      NumberOfUndesiredRunningApps: 1,
      NumberOfRunningInstances: 2,
      NumberOfMissingIndices: 0,
      NumberOfCrashedInstances: 1,
      NumberOfCrashedIndices: 1,
      NumberOfDesiredApps: 1,
      NumberOfDesiredInstances: 2,
      NumberOfDesiredAppsPendingStaging: 1,
    });
  });

  it('update(null) — not fresh or the analysis failed — sets all ten to -1, and a later update recovers', async () => {
    const registry = new Registry();
    const metrics = new AppMetrics(registry);
    metrics.update(foundation());
    expect(metrics.update(null)).toEqual(Object.fromEntries(APP_METRIC_NAMES.map((name) => [name, -1])));
    const values = await scrape(registry);
    for (const name of APP_METRIC_NAMES) expect(values[name]).toBe(-1);
    metrics.update(new Map());
    const after = await scrape(registry);
    for (const name of APP_METRIC_NAMES) expect(after[name]).toBe(0);
  });

  it('counts starts and stops sent by reason under the six HM9000 counters, ignoring other reasons', async () => {
    const registry = new Registry();
    const metrics = new AppMetrics(registry);
    const sent: { action: 'start' | 'stop'; reason: string }[] = [
      { action: 'start', reason: 'CRASHED' },
      { action: 'start', reason: 'MISSING' },
      { action: 'start', reason: 'MISSING' },
      { action: 'start', reason: 'EVACUATING' },
      { action: 'stop', reason: 'EXTRA' },
      { action: 'stop', reason: 'DUPLICATE' },
      { action: 'stop', reason: 'DUPLICATE' },
      { action: 'stop', reason: 'DUPLICATE' },
      { action: 'stop', reason: 'EVACUATION_COMPLETE' },
      { action: 'start', reason: '' },
      { action: 'start', reason: 'EXTRA' }, // a stop reason on a start
      { action: 'stop', reason: 'MISSING' },
      { action: 'stop', reason: 'SOMETHING' },
    ];
    for (const order of sent) metrics.countSent(order);
    const text = await registry.metrics();
    expect(text).toContain('# TYPE StartCrashed counter\nStartCrashed 1\n');
    const values = await scrape(registry);
    expect({
      StartCrashed: values.StartCrashed,
      StartMissing: values.StartMissing,
      StartEvacuating: values.StartEvacuating,
      StopExtra: values.StopExtra,
      StopDuplicate: values.StopDuplicate,
      StopEvacuationComplete: values.StopEvacuationComplete,
    }).toEqual({ StartCrashed: 1, StartMissing: 2, StartEvacuating: 1, StopExtra: 1, StopDuplicate: 3, StopEvacuationComplete: 1 });
    expect(text.match(/^# TYPE /gm)).toHaveLength(16);
  });

  it('shares one set of metrics per registry and keeps registries apart', async () => {
    const a = new Registry();
    const b = new Registry();
    const first = new AppMetrics(a);
    first.update(foundation());
    first.countSent({ action: 'stop', reason: 'EXTRA' });
    const second = new AppMetrics(a); // does not throw "already registered", does not reset
    expect((await scrape(a)).NumberOfDesiredApps).toBe(1);
    second.countSent({ action: 'stop', reason: 'EXTRA' });
    second.update(null);
    const values = await scrape(a);
    expect(values.StopExtra).toBe(2);
    expect(values.NumberOfDesiredApps).toBe(-1);
    new AppMetrics(b);
    expect((await scrape(b)).StopExtra).toBe(0);
  });
});
