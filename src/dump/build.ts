/**
 * HM9000's structured dump (docs/hm9000.md#dump) as data: freshness first, then every app — desired,
 * heartbeating instances, crash counts, pending starts and stops with the time left until they are
 * sent or deleted. `GET /v1/dump` serves it, `hmgate dump --json` prints it (schemas/dump.schema.json)
 * and `hmgate dump` renders it as HM9000 printed it (render.ts). The per-app entries are also what
 * `GET /v1/apps` answers.
 */
import { buildAppViews, type AppView } from '../sdk/app-view.js';
import { appKey } from '../sdk/app-key.js';
import { type PendingStart, type PendingStop, type StoreSnapshot } from '../sdk/state.js';

export interface DumpFreshness {
  fresh: boolean;
  since: string | null;
  reason: string | null;
}

export interface DumpDesired {
  instances: number;
  state: string;
  package_state: string;
  updated_at?: string;
}

export interface DumpInstance {
  instance: string;
  index: number;
  state: string;
  agent: string;
  state_timestamp: number;
  cc_partition?: string;
}

export interface DumpCrashCount {
  index: number;
  count: number;
  created_at: string;
}

interface DumpPendingBase {
  message_id: string;
  reason: string;
  send_on: string;
  /** null while unsent. */
  sent_on: string | null;
  keep_alive_ms: number;
  /** Until it is due (negative: overdue); null once sent. */
  send_in_ms: number | null;
  /** Until a sent message is forgotten (sent_on + keep_alive); null while unsent. */
  delete_in_ms: number | null;
}

export interface DumpPendingStart extends DumpPendingBase {
  index: number;
  priority: number;
  skip_verification: boolean;
}

export interface DumpPendingStop extends DumpPendingBase {
  instance: string;
}

export interface DumpApp {
  guid: string;
  version: string;
  /** null when the app is not desired (stopped, old version, unknown to the CC). */
  desired: DumpDesired | null;
  instances: DumpInstance[];
  crash_counts: DumpCrashCount[];
  pending_starts: DumpPendingStart[];
  pending_stops: DumpPendingStop[];
}

export interface DumpDoc {
  foundation: string;
  /** The daemon's clock when the dump was taken. */
  timestamp: string;
  fresh: boolean;
  /** HM9000's error text ("Actual state is not fresh", …), null when fresh. */
  freshness_error: string | null;
  actual: DumpFreshness;
  desired: DumpFreshness;
  apps: DumpApp[];
}

const iso = (ms: number) => new Date(ms).toISOString();

function pendingBase(m: PendingStart | PendingStop, now: number): DumpPendingBase {
  const sent = m.sentOn !== 0;
  return {
    message_id: m.messageId,
    reason: m.reason,
    send_on: iso(m.sendOn),
    sent_on: sent ? iso(m.sentOn) : null,
    keep_alive_ms: m.keepAlive,
    send_in_ms: sent ? null : m.sendOn - now,
    delete_in_ms: sent ? m.sentOn + m.keepAlive - now : null,
  };
}

/** Pending messages per app key, in HM9000's orders: starts by index, stops by instance guid. */
export function pendingByApp(snapshot: StoreSnapshot): { starts: Map<string, PendingStart[]>; stops: Map<string, PendingStop[]> } {
  const starts = new Map<string, PendingStart[]>();
  const stops = new Map<string, PendingStop[]>();
  for (const m of snapshot.starts.values()) {
    const k = appKey(m.app, m.version);
    (starts.get(k) ?? starts.set(k, []).get(k)!).push(m);
  }
  for (const m of snapshot.stops.values()) {
    const k = appKey(m.app, m.version);
    (stops.get(k) ?? stops.set(k, []).get(k)!).push(m);
  }
  for (const l of starts.values()) l.sort((a, b) => a.index - b.index);
  for (const l of stops.values()) l.sort((a, b) => (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0));
  return { starts, stops };
}

export function dumpApp(view: AppView, starts: readonly PendingStart[], stops: readonly PendingStop[], now: number): DumpApp {
  const d = view.desired;
  return {
    guid: view.guid,
    version: view.version,
    desired: d
      ? { instances: d.instances, state: d.state, package_state: d.packageState, ...(d.updatedAt !== undefined ? { updated_at: d.updatedAt } : {}) }
      : null,
    instances: view.instances.map((i) => ({
      instance: i.instance,
      index: i.index,
      state: i.state,
      agent: i.agent,
      state_timestamp: i.stateTimestamp,
      ...(i.ccPartition !== undefined ? { cc_partition: i.ccPartition } : {}),
    })),
    crash_counts: [...view.crashCounts.values()]
      .sort((a, b) => a.index - b.index)
      .map((c) => ({ index: c.index, count: c.count, created_at: iso(c.createdAt) })),
    pending_starts: starts.map((m) => ({ ...pendingBase(m, now), index: m.index, priority: m.priority, skip_verification: m.skipVerification })),
    pending_stops: stops.map((m) => ({ ...pendingBase(m, now), instance: m.instance })),
  };
}

const byKey = (a: AppView, b: AppView) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

/** Every app (desired or heartbeating), sorted by "<guid>,<version>" as HM9000 sorted them. */
export function dumpApps(snapshot: StoreSnapshot, now: number): DumpApp[] {
  const { starts, stops } = pendingByApp(snapshot);
  return [...buildAppViews(snapshot).values()].sort(byKey).map((v) => dumpApp(v, starts.get(v.key) ?? [], stops.get(v.key) ?? [], now));
}

export interface DumpInput {
  foundation: string;
  now: number;
  snapshot: StoreSnapshot;
  actual: DumpFreshness;
  desired: DumpFreshness;
  freshnessError: string | null;
}

export function buildDump(i: DumpInput): DumpDoc {
  return {
    foundation: i.foundation,
    timestamp: iso(i.now),
    fresh: i.freshnessError === null,
    freshness_error: i.freshnessError,
    actual: i.actual,
    desired: i.desired,
    apps: dumpApps(i.snapshot, i.now),
  };
}
