/**
 * The per-app view the rules read (docs/hm9000.md#apps-and-versions, #analyzer): apps are
 * (guid, version) pairs — versions are separate apps — formed by the union of desired state and
 * live heartbeats; crash counts are attached only to apps that exist through one of those.
 */
import type { AppKey } from './app-key.js';
import type { CrashCount, DesiredApp, InstanceHeartbeat, StoreSnapshot } from './state.js';

export interface AppView {
  key: AppKey;
  guid: string;
  version: string;
  /** Undefined when the app is not desired (stopped, failed, old version, unknown). */
  desired: DesiredApp | undefined;
  /** Live instances, in store order. */
  instances: readonly InstanceHeartbeat[];
  crashCounts: ReadonlyMap<number, CrashCount>;
}

export const isStartingOrRunning = (i: InstanceHeartbeat): boolean => i.state === 'STARTING' || i.state === 'RUNNING';

/** Desired instances N; 0 when not desired, so no index is desired. */
export function desiredInstances(app: AppView): number {
  return app.desired ? app.desired.instances : 0;
}

export function isStaged(app: AppView): boolean {
  return app.desired?.packageState === 'STAGED';
}

export function isIndexDesired(app: AppView, index: number): boolean {
  return index < desiredInstances(app);
}

/** What is at one index of an app: every instance there, and counts by state. */
export interface IndexSummary {
  instances: InstanceHeartbeat[];
  running: number;
  starting: number;
  crashed: number;
  evacuating: number;
}

/** Where byIndex() keeps its grouping on a view (a property, not a WeakMap: a full pass makes 100 000 views). */
const SUMMARY = Symbol('byIndex');
type Summarised = AppView & { [SUMMARY]?: ReadonlyMap<number, IndexSummary> };

/**
 * The app's instances grouped by index, computed once per view and shared by every rule (the
 * analyzer's hot path: each rule would otherwise walk the instances again).
 */
export function byIndex(app: AppView): ReadonlyMap<number, IndexSummary> {
  const cached = (app as Summarised)[SUMMARY];
  if (cached) return cached;
  const m = new Map<number, IndexSummary>();
  for (const i of app.instances) {
    let s = m.get(i.index);
    if (!s) m.set(i.index, (s = { instances: [], running: 0, starting: 0, crashed: 0, evacuating: 0 }));
    s.instances.push(i);
    if (i.state === 'RUNNING') s.running++;
    else if (i.state === 'STARTING') s.starting++;
    else if (i.state === 'CRASHED') s.crashed++;
    else if (i.state === 'EVACUATING') s.evacuating++;
  }
  (app as Summarised)[SUMMARY] = m;
  return m;
}

export function instancesAtIndex(app: AppView, index: number): readonly InstanceHeartbeat[] {
  return byIndex(app).get(index)?.instances ?? [];
}

/** The stored count, or a new one (count 0, created now) — HM9000's CrashCountAtIndex. */
export function crashCountAt(app: AppView, index: number, now: number): CrashCount {
  return app.crashCounts.get(index) ?? { app: app.guid, version: app.version, index, count: 0, createdAt: now };
}

/**
 * HM9000's start priority, computed once per app: the share of desired indices with no
 * STARTING/RUNNING instance (crashed indices count as missing). NaN for an undesired app.
 */
export function startPriority(app: AppView): number {
  const n = desiredInstances(app);
  let running = 0;
  for (const [index, s] of byIndex(app)) if (index < n && s.running + s.starting > 0) running++;
  return (n - running) / n;
}

/** Most apps have no crash count: one empty map serves them all. */
const NO_CRASH_COUNTS: ReadonlyMap<number, CrashCount> = new Map();

/** The view of one app, or undefined when it has neither desired state nor live instances. */
export function buildAppView(snapshot: StoreSnapshot, key: AppKey): AppView | undefined {
  const desired = snapshot.desired.get(key);
  const instances = snapshot.instances.get(key) ?? [];
  if (!desired && instances.length === 0) return undefined;
  const comma = key.indexOf(',');
  const counts = snapshot.crashCounts.get(key);
  let crashCounts: ReadonlyMap<number, CrashCount> = NO_CRASH_COUNTS;
  if (counts !== undefined && counts.length > 0) crashCounts = new Map(counts.map((c) => [c.index, c]));
  // The summary slot is there from the start, so every view has the same shape.
  const view: Summarised = {
    key,
    guid: desired?.guid ?? key.slice(0, comma),
    version: desired?.version ?? key.slice(comma + 1),
    desired,
    instances,
    crashCounts,
    [SUMMARY]: undefined,
  };
  return view;
}

/**
 * Whether an app is converged: desired, and its instances are exactly one RUNNING instance at each
 * desired index. Read from the snapshot without building a view.
 */
export function isConverged(snapshot: StoreSnapshot, key: AppKey): boolean {
  const desired = snapshot.desired.get(key);
  if (desired === undefined) return false;
  const n = desired.instances;
  const list = snapshot.instances.get(key) ?? [];
  if (list.length !== n) return false;
  if (n > 64) return false; // (rare: checked the long way, with a view)
  // Indices seen, as two 32-bit masks.
  let low = 0;
  let high = 0;
  for (let k = 0; k < n; k++) {
    const inst = list[k]!;
    const index = inst.index;
    if (inst.state !== 'RUNNING' || !Number.isInteger(index) || index < 0 || index >= n) return false;
    if (index < 32) {
      if (low & (1 << index)) return false;
      low |= 1 << index;
    } else {
      if (high & (1 << (index - 32))) return false;
      high |= 1 << (index - 32);
    }
  }
  return true;
}

/**
 * The apps of the snapshot: the union of desired apps and apps with live instances, or only those
 * among `keys` when given (an incremental pass over the apps whose inputs changed); with `skip`,
 * without the apps it says to pass by.
 */
export function buildAppViews(
  snapshot: StoreSnapshot,
  keys?: Iterable<AppKey>,
  skip?: (snapshot: StoreSnapshot, key: AppKey) => boolean,
): Map<AppKey, AppView> {
  const apps = new Map<AppKey, AppView>();
  const add = (key: AppKey) => {
    if (apps.has(key) || skip?.(snapshot, key)) return;
    const v = buildAppView(snapshot, key);
    if (v) apps.set(key, v);
  };
  if (keys) {
    for (const key of keys) add(key);
    return apps;
  }
  for (const key of snapshot.desired.keys()) add(key);
  for (const [key, list] of snapshot.instances) if (list.length > 0) add(key);
  return apps;
}
