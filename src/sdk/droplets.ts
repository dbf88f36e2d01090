/**
 * Per-app records for event-driven policies (the Ruby Health Manager's "droplets"). The Ruby HM
 * decides from what it remembers about each app — instance records created lazily, crash counts,
 * a per-app grace timer — not from a fresh per-agent snapshot. The engine keeps one record per app
 * guid, in insertion order (the order matters: analysis slices and extra-instance slots follow it),
 * creates it on the first event that names the app, and hands it to event policies, which may
 * change it while handling an event (see events.ts).
 *
 * Times: `*At`/`*Timestamp` fields ending in Ms are clock milliseconds; DEA timestamps are the
 * agent's seconds, as reported.
 */
import type { DesiredApp } from './state.js';

export type RecordState = 'DOWN' | 'STARTING' | 'RUNNING' | 'CRASHED' | 'FLAPPING';

export interface InstanceRecord {
  index: number;
  /** null while the app's live version is unknown (no desired state yet). */
  version: string | null;
  state: RecordState;
  /** Seconds: the agent's state timestamp of the last running beat, or HM time of a mark-down. */
  stateTimestamp: number | null;
  /** The instance guid last seen running at this version/index (null if never heard from). */
  guid: string | null;
  /** Clock ms of the last STARTING/RUNNING beat, null until the first. */
  lastHeartbeatMs: number | null;
  crashCount: number;
  /** The agent's crash timestamp (seconds) of the last counted crash, null before the first. */
  lastCrashTimestamp: number | null;
  /** Id of a pending delayed (flapping) restart of this record, null if none. */
  pendingRestart: string | null;
  /** Guids of recent running beats (newest last), for duplicate-guid pruning. */
  guidStream: string[];
}

export interface CrashRecord {
  /** Clock ms when written or refreshed. */
  timestampMs: number;
  /** The agent's crash timestamp (seconds). */
  crashTimestamp: number;
}

export interface ExtraInstance {
  /** null for a record never heard from (the older design stops those too). */
  instance: string | null;
  version: string | null;
  reason: string;
}

export interface Droplet {
  id: string;
  /** Desired fields, from the bulk API; unset (0/null) until the first bulk appearance. */
  numInstances: number;
  state: string | null;
  liveVersion: string | null;
  packageState: string | null;
  /** CC's updated_at as integer epoch seconds, null if unknown. */
  lastUpdated: number | null;
  /** version → (index → record), both in insertion order. */
  versions: Map<string | null, Map<number, InstanceRecord>>;
  /** instance guid → crash record. */
  crashes: Map<string, CrashRecord>;
  /** Stops found for this app and not yet sent (cleared per beat or per analysis, by variant). */
  extraInstances: ExtraInstance[];
  /** Clock ms: the per-app grace; missing instances are not looked at until it is a grace old. */
  resetTimestampMs: number;
  desiredUpdateRequired: boolean;
  /** Clock ms of creation or of the last bulk appearance (drives "extra app" and GC). */
  desiredUpdateMs: number;
  /** index → pending delayed restart id, for policies that track them per index (older design). */
  pendingRestarts: Map<number, string>;
  /**
   * Clock ms of the event being handled: records created while handling it start DOWN as of then
   * (the engine sets it before each event; tests may set it directly).
   */
  nowMs: number;
}

export function createDroplet(id: string, nowMs: number): Droplet {
  return {
    id,
    numInstances: 0,
    state: null,
    liveVersion: null,
    packageState: null,
    lastUpdated: null,
    versions: new Map(),
    crashes: new Map(),
    extraInstances: [],
    resetTimestampMs: nowMs,
    desiredUpdateRequired: true,
    desiredUpdateMs: nowMs,
    pendingRestarts: new Map(),
    nowMs,
  };
}

/** The record at version/index, created DOWN if absent (as every Ruby read path does). */
export function getInstance(d: Droplet, index: number, version: string | null = d.liveVersion, guid: string | null = null): InstanceRecord {
  let byIndex = d.versions.get(version);
  if (!byIndex) {
    byIndex = new Map();
    d.versions.set(version, byIndex);
  }
  let inst = byIndex.get(index);
  if (!inst) {
    inst = {
      index,
      version,
      state: 'DOWN',
      stateTimestamp: Math.floor(d.nowMs / 1000),
      guid,
      lastHeartbeatMs: null,
      crashCount: 0,
      lastCrashTimestamp: null,
      pendingRestart: null,
      guidStream: [],
    };
    byIndex.set(index, inst);
  }
  return inst;
}

/** The record at version/index without creating it. */
export function peekInstance(d: Droplet, index: number, version: string | null = d.liveVersion): InstanceRecord | undefined {
  return d.versions.get(version)?.get(index);
}

export function* allInstances(d: Droplet): Generator<InstanceRecord> {
  for (const byIndex of d.versions.values()) yield* byIndex.values();
}

/** Ruby's "older than X": the time is set and more than X ago (strict). */
export function olderThan(tsMs: number | null, nowMs: number, spanMs: number): boolean {
  return tsMs !== null && tsMs > 0 && nowMs - tsMs > spanMs;
}

/** `has_recent_heartbeat?`: heard from, and not more than droplet_lost ago. */
export function hasRecentHeartbeat(inst: InstanceRecord, nowMs: number, dropletLostMs: number): boolean {
  return inst.lastHeartbeatMs !== null && !(nowMs - inst.lastHeartbeatMs > dropletLostMs);
}

/** `alive?`: not CRASHED and recently heard from (a FLAPPING instance can be alive). */
export function isAlive(inst: InstanceRecord, nowMs: number, dropletLostMs: number): boolean {
  return inst.state !== 'CRASHED' && hasRecentHeartbeat(inst, nowMs, dropletLostMs);
}

export function isRecordStartingOrRunning(inst: InstanceRecord): boolean {
  return inst.state === 'STARTING' || inst.state === 'RUNNING';
}

/** The app should run: STARTED and STAGED (Ruby only looks for missing instances of such apps). */
export function shouldRun(d: Droplet): boolean {
  return d.state === 'STARTED' && d.packageState === 'STAGED';
}

/** Whether the per-app grace has passed (`!(now - reset_timestamp < droplet_lost)`). */
export function graceOver(d: Droplet, nowMs: number, dropletLostMs: number): boolean {
  return !(nowMs - d.resetTimestampMs < dropletLostMs);
}

/** `running_guid_count`: distinct guids of recent running beats, only while RUNNING. */
export function runningGuidCount(inst: InstanceRecord): number {
  return inst.state === 'RUNNING' ? new Set(inst.guidStream).size : 0;
}

/** The `running` map of a request: every version present → Σ running guid counts (0 included). */
export function runningMap(d: Droplet): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [version, byIndex] of d.versions) {
    let n = 0;
    for (const inst of byIndex.values()) n += runningGuidCount(inst);
    out[String(version)] = n;
  }
  return out;
}

/**
 * Indices 0..numInstances-1 of the live version whose record is missing (`missing?` = not alive and
 * no pending delayed restart), for apps that should run; records are created as Ruby does.
 */
export function missingIndices(d: Droplet, nowMs: number, dropletLostMs: number): number[] {
  if (!shouldRun(d)) return [];
  const out: number[] = [];
  for (let i = 0; i < d.numInstances; i++) {
    const inst = getInstance(d, i);
    if (!isAlive(inst, nowMs, dropletLostMs) && inst.pendingRestart === null) out.push(i);
  }
  return out;
}

/**
 * The older design's rule: CRASHED, never heard from, or silent for more than droplet_lost, and no
 * delayed restart pending for the index (tracked per index there).
 */
export function missingIndicesByIndex(d: Droplet, nowMs: number, dropletLostMs: number): number[] {
  if (!shouldRun(d)) return [];
  const out: number[] = [];
  for (let i = 0; i < d.numInstances; i++) {
    const r = getInstance(d, i);
    const lost = r.state === 'CRASHED' || r.lastHeartbeatMs === null || olderThan(r.lastHeartbeatMs, nowMs, dropletLostMs);
    if (lost && !d.pendingRestarts.has(i)) out.push(i);
  }
  return out;
}

/** CC's updated_at string as integer epoch seconds; null when absent or unparseable. */
export function epochSeconds(updatedAt: string | undefined): number | null {
  if (updatedAt === undefined) return null;
  const ms = Date.parse(updatedAt.replace(/^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d) ?([+-]\d\d):?(\d\d)$/, '$1T$2$3:$4'));
  return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
}

/** `set_desired_state`: the five desired fields; the grace timer is deliberately left alone. */
export function setDesiredState(d: Droplet, app: DesiredApp, nowMs: number): void {
  d.numInstances = app.instances;
  d.state = app.state;
  d.liveVersion = app.version;
  d.packageState = app.packageState;
  d.lastUpdated = epochSeconds(app.updatedAt);
  d.desiredUpdateRequired = false;
  d.desiredUpdateMs = nowMs;
}

/**
 * A request to the Cloud Controller as the Ruby HM builds it, complete at the moment it is decided
 * (the `running` map is the one at enqueue time). The notifier renders it per protocol.
 */
export interface DropletRequest {
  op: 'START' | 'STOP';
  droplet: string;
  lastUpdated: number | null;
  /** The app's live version (null if unknown), in starts and stops alike. */
  version: string | null;
  running: Record<string, number>;
  /** START: the indices to start (one in practice). */
  indices?: number[];
  /** START: a delayed restart of a flapping instance. */
  flapping?: boolean;
  /** STOP: the instances to stop, with their versions, in order (duplicates kept). */
  instances?: { instance: string | null; version: string | null }[];
}

export function startRequest(d: Droplet, index: number, flapping = false): DropletRequest {
  return { op: 'START', droplet: d.id, lastUpdated: d.lastUpdated, version: d.liveVersion, running: runningMap(d), indices: [index], flapping };
}

export function stopRequest(d: Droplet, instances: readonly { instance: string | null; version: string | null }[]): DropletRequest {
  return {
    op: 'STOP',
    droplet: d.id,
    lastUpdated: d.lastUpdated,
    version: d.liveVersion,
    running: runningMap(d),
    instances: instances.map((i) => ({ instance: i.instance, version: i.version })),
  };
}

/** The app records, in insertion order. Reading never creates; `get` does. */
export class DropletRegistry {
  private readonly map = new Map<string, Droplet>();

  get size(): number {
    return this.map.size;
  }

  /** The record for `id`, created (grace and update-required set) on first use. */
  get(id: string, nowMs: number): Droplet {
    let d = this.map.get(id);
    if (!d) {
      d = createDroplet(id, nowMs);
      this.map.set(id, d);
    }
    return d;
  }

  peek(id: string): Droplet | undefined {
    return this.map.get(id);
  }

  delete(id: string): boolean {
    return this.map.delete(id);
  }

  values(): IterableIterator<Droplet> {
    return this.map.values();
  }

  /** Records [start, start + count) in insertion order (analysis slices). */
  slice(start: number, count: number): Droplet[] {
    const out: Droplet[] = [];
    let i = 0;
    for (const d of this.map.values()) {
      if (i >= start + count) break;
      if (i >= start) out.push(d);
      i++;
    }
    return out;
  }
}
