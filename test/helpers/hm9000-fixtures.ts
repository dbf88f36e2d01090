/**
 * Builders for HM9000 rule tests: apps, instance heartbeats, crash counts and pending messages,
 * assembled into a StoreSnapshot, and the HM9000 policy set with its default options (in ms,
 * heartbeat 10 s).
 */
import type { NamedPolicy } from '../../src/pipeline/cycle/analyzer.js';
import { appKey } from '../../src/sdk/app-key.js';
import {
  crashKey,
  startKey,
  stopKey,
  type CrashCount,
  type DesiredApp,
  type InstanceHeartbeat,
  type PendingStart,
  type PendingStop,
  type StoreSnapshot,
} from '../../src/sdk/state.js';
import { crashesRule } from '../../plugins/crashes/index.js';
import { duplicatesRule } from '../../plugins/duplicates/index.js';
import { evacuationRule } from '../../plugins/evacuation/index.js';
import { extrasRule } from '../../plugins/extras/index.js';
import { missingRule } from '../../plugins/missing/index.js';

export const HB = 10_000;
export const GRACE = 3 * HB;

export function hm9000Policies(o: { maximumBackoff?: number; evacuatingCountsAsPresent?: boolean } = {}): NamedPolicy[] {
  const grace = { grace_period: GRACE };
  const missing = { ...grace, evacuating_counts_as_present: o.evacuatingCountsAsPresent ?? false };
  const crashes = { ...grace, crashes_before_backoff: 3, starting_backoff: 3 * HB, maximum_backoff: o.maximumBackoff ?? 96 * HB };
  const duplicates = { ...grace, first_stop_after: 4 };
  return [
    { id: 'missing', stage: { evaluate: (i) => missingRule(i, missing) } },
    { id: 'crashes', stage: { evaluate: (i) => crashesRule(i, crashes) } },
    { id: 'evacuation', stage: { evaluate: (i) => evacuationRule(i, grace) } },
    { id: 'extras', stage: { gate: 'no-new-start', evaluate: (i) => extrasRule(i, grace) } },
    { id: 'duplicates', stage: { gate: 'no-new-start', evaluate: (i) => duplicatesRule(i, duplicates) } },
  ];
}

export function desired(guid: string, instances: number, o: Partial<DesiredApp> = {}): DesiredApp {
  return { guid, version: 'v1', instances, state: 'STARTED', packageState: 'STAGED', ...o };
}

let seq = 0;
export function hb(app: string, index: number, state: string, o: Partial<InstanceHeartbeat> = {}): InstanceHeartbeat {
  return { app, version: 'v1', instance: o.instance ?? `${app}-i${index}-${++seq}`, index, state, stateTimestamp: 0, agent: 'dea-1', ...o };
}

export function crash(app: string, index: number, count: number, o: Partial<CrashCount> = {}): CrashCount {
  return { app, version: 'v1', index, count, createdAt: 0, ...o };
}

export function snapshot(
  now: number,
  parts: { desired?: DesiredApp[]; instances?: InstanceHeartbeat[]; crashes?: CrashCount[]; starts?: PendingStart[]; stops?: PendingStop[] },
): StoreSnapshot {
  const group = <T extends { app: string; version: string }>(list: T[] = []) => {
    const m = new Map<string, T[]>();
    for (const x of list) {
      const k = appKey(x.app, x.version);
      m.set(k, [...(m.get(k) ?? []), x]);
    }
    return m;
  };
  return {
    now,
    desired: new Map((parts.desired ?? []).map((d) => [appKey(d.guid, d.version), d])),
    instances: group(parts.instances),
    crashCounts: group(parts.crashes),
    starts: new Map((parts.starts ?? []).map((s) => [startKey(s), s])),
    stops: new Map((parts.stops ?? []).map((s) => [stopKey(s), s])),
    freshness: {},
  };
}

export function pendingStart(app: string, index: number, o: Partial<PendingStart> = {}): PendingStart {
  return {
    messageId: `start-${app}-${index}`,
    sendOn: 0,
    sentOn: 0,
    keepAlive: 0,
    app,
    version: 'v1',
    index,
    priority: 1,
    skipVerification: false,
    reason: 'MISSING',
    ...o,
  };
}

export function pendingStop(instance: InstanceHeartbeat, o: Partial<PendingStop> = {}): PendingStop {
  return {
    messageId: `stop-${instance.instance}`,
    sendOn: 0,
    sentOn: 0,
    keepAlive: 0,
    app: instance.app,
    version: instance.version,
    instance: instance.instance,
    reason: 'EXTRA',
    ...o,
  };
}

export { crashKey };
