/**
 * The foundation of the live simulator: N agents × M instances, apps of K instances, as the HM9000
 * scale measurements laid it out (shared/peers/hm9000/scale/loadgen.js) so figures compare: global
 * instance g = app × K + index lives on agent g mod N, so an app's instances sit on different
 * agents, and every id is shaped like a Cloud Foundry guid.
 *
 * State is kept in typed arrays (a million instances cost about 20 MB), and each heartbeat is built
 * when it is sent — with churn most agents change every period anyway — from each instance's JSON,
 * which is kept until the instance changes (about 250 bytes an instance: formatting guids and
 * numbers anew for every instance of every heartbeat would make the simulator, not the daemon,
 * the limit of a load test on a small machine).
 *
 * Churn is HM9000's model: each period a share of all instances is restarted — a new instance guid
 * in STARTING in the same place — and a STARTING instance turns RUNNING at its agent's next
 * heartbeat. A restarted instance's guid carries the moment its first heartbeat was built
 * (`…t<epoch ms>`), so a watcher of the store can tell when it was stored (bench/scale's lag).
 * `state_timestamp` is the time of the instance's last state change, as a DEA reports it: an agent
 * whose instances did not change sends the same bytes again.
 */

const hex = (n: number, w: number) => (n >>> 0).toString(16).padStart(w, '0');

export const appGuid = (a: number): string => `${hex(a, 8)}-a0a0-4a0a-8a0a-${hex(a, 12)}`;
export const appVersion = (a: number): string => `${hex(a, 8)}-b1b1-4b1b-9b1b-${hex(a, 12)}`;
export const agentGuid = (d: number): string => `${hex(d, 8)}-dea0-4dea-adea-${hex(d, 12)}`;

/** A DEA-style 32-hex instance id; a restarted one ends in `t<epoch ms>` instead. */
export function instanceGuid(g: number, generation: number, createdMs = 0): string {
  return generation === 0 || createdMs === 0
    ? `${hex(g, 8)}${hex(generation, 8)}c2c24c2c${hex(g, 8)}`
    : `${hex(g, 8)}${hex(generation, 8)}t${Math.round(createdMs)}`;
}

/** What a watcher looks for in stored keys and values: a restarted instance and its build time. */
export const PROBE_GUID = /[0-9a-f]{16}t(\d{13})(?!\d)/g;

/** The instance number of an instance guid of this foundation, or -1. */
export function instanceOf(guid: string): number {
  if (guid.length < 17 || !/^[0-9a-f]{8}/.test(guid)) return -1;
  return parseInt(guid.slice(0, 8), 16);
}

/** The app number of an app guid of this foundation, or -1. */
export function appOf(guid: string): number {
  if (!/^[0-9a-f]{8}-a0a0-4a0a-8a0a-[0-9a-f]{12}$/.test(guid)) return -1;
  const a = parseInt(guid.slice(0, 8), 16);
  return appGuid(a) === guid ? a : -1;
}

const RUNNING = 0;
const STARTING = 1;
const CRASHED = 2;
const ABSENT = 3;
/** restartPending: started by an order, not yet reported. */
const STARTED = 2;
const STATE_NAMES = ['RUNNING', 'STARTING', 'CRASHED'];

export interface FoundationOptions {
  agents: number;
  instancesPerAgent: number;
  instancesPerApp: number;
  /** Share of all instances restarted per heartbeat period (0–1). */
  churn: number;
  /** For the choice of restarted instances. */
  seed: number;
  cc_partition?: string;
}

/** A small deterministic PRNG (mulberry32), so a simulation is repeatable from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class LiveFoundation {
  /** Bumped at every change of the desired state (a subclass that changes it), so served pages are built anew. */
  desiredGeneration = 0;
  readonly instances: number;
  readonly apps: number;
  private readonly generation: Uint32Array;
  private readonly state: Uint8Array;
  /** 1: a restart to apply at the agent's next heartbeat; STARTED: started by an order since it. */
  private readonly restartPending: Uint8Array;
  private readonly changedAt: Float64Array;
  private readonly createdAt: Float64Array;
  private readonly rnd: () => number;
  private readonly partition: string;
  /** Each instance's JSON in a heartbeat; undefined when it changed since it was made. */
  private readonly json: (string | undefined)[];
  /** Restarts applied so far. */
  restarts = 0;

  constructor(
    readonly o: FoundationOptions,
    now: number,
  ) {
    this.instances = o.agents * o.instancesPerAgent;
    this.apps = Math.ceil(this.instances / o.instancesPerApp);
    this.generation = new Uint32Array(this.instances);
    this.state = new Uint8Array(this.instances);
    this.restartPending = new Uint8Array(this.instances);
    this.changedAt = new Float64Array(this.instances).fill(now);
    this.createdAt = new Float64Array(this.instances);
    this.rnd = seededRandom(o.seed);
    this.partition = JSON.stringify(o.cc_partition ?? 'default');
    // Pushed, not new Array(n): V8 keeps a large preallocated array as a slow dictionary.
    this.json = [];
    for (let g = 0; g < this.instances; g++) this.json.push(undefined);
  }

  /** Desired instances of app a (the last app may have fewer). */
  appInstances(a: number): number {
    return Math.min(this.o.instancesPerApp, this.instances - a * this.o.instancesPerApp);
  }

  /** Called once per period: marks churn × N random instances for a restart at their next heartbeat. */
  planChurn(): number {
    const k = Math.round(this.o.churn * this.instances);
    for (let j = 0; j < k; j++) {
      const g = Math.floor(this.rnd() * this.instances);
      if (this.state[g] !== ABSENT) this.restartPending[g] = 1;
    }
    return k;
  }

  /** The dea.heartbeat body of agent d at `now`, applying its pending restarts and STARTING → RUNNING. */
  heartbeat(d: number, now: number): string {
    const { agents, instancesPerApp } = this.o;
    const parts: string[] = [];
    for (let g = d; g < this.instances; g += agents) {
      let s = this.state[g]!;
      if (s === ABSENT) continue;
      const pending = this.restartPending[g];
      if (pending === STARTED) {
        // Started by an order: reported STARTING once, as a restart is.
        this.restartPending[g] = 0;
      } else if (pending) {
        this.restartPending[g] = 0;
        this.generation[g]!++;
        this.createdAt[g] = now;
        this.changedAt[g] = now;
        this.state[g] = s = STARTING;
        this.json[g] = undefined;
        this.restarts++;
        // Reported STARTING once; RUNNING from the next heartbeat on.
      } else if (s === STARTING) {
        this.state[g] = s = RUNNING;
        this.changedAt[g] = now;
        this.json[g] = undefined;
      }
      let json = this.json[g];
      if (json === undefined) {
        const a = Math.floor(g / instancesPerApp);
        json = `{"cc_partition":${this.partition},"droplet":"${appGuid(a)}","version":"${appVersion(a)}","instance":"${instanceGuid(g, this.generation[g]!, this.createdAt[g])}","index":${g % instancesPerApp},"state":"${STATE_NAMES[s]}","state_timestamp":${this.changedAt[g]! / 1000}}`;
        // Copied into one piece: V8 keeps a template's result as a tree of its parts, and joining
        // trees walks every one of them again, heartbeat after heartbeat (10 times slower). UTF-8
        // both ways, so a partition name outside Latin-1 survives.
        json = Buffer.from(json, 'utf8').toString('utf8');
        this.json[g] = json;
      }
      parts.push(json);
    }
    return `{"droplets":[${parts.join(',')}],"dea":"${agentGuid(d)}"}`;
  }

  /** The agent that runs instance g. */
  agentOf(g: number): number {
    return g % this.o.agents;
  }

  /** Instance g vanishes: its agent no longer reports it. */
  remove(g: number): boolean {
    if (g < 0 || g >= this.instances || this.state[g] === ABSENT) return false;
    this.state[g] = ABSENT;
    this.restartPending[g] = 0;
    this.json[g] = undefined;
    return true;
  }

  /** Instance g crashes: its agent reports it CRASHED from now on. */
  crash(g: number, now: number): boolean {
    if (g < 0 || g >= this.instances || this.state[g] === ABSENT) return false;
    this.state[g] = CRASHED;
    this.changedAt[g] = now;
    this.json[g] = undefined;
    return true;
  }

  /** The guid instance g is reported under now (undefined when absent). */
  currentGuid(g: number): string | undefined {
    if (g < 0 || g >= this.instances || this.state[g] === ABSENT) return undefined;
    return instanceGuid(g, this.generation[g]!, this.createdAt[g]);
  }

  /**
   * A start order (app guid, index): the index runs again, STARTING, if its place is empty or its
   * instance crashed; otherwise it is ignored (the simulator runs one instance per index).
   */
  start(app: string, version: string, index: number, now: number): boolean {
    const a = appOf(app);
    if (a < 0 || version !== appVersion(a) || !Number.isInteger(index) || index < 0 || index >= this.appInstances(a)) return false;
    const g = a * this.o.instancesPerApp + index;
    if (this.state[g] !== ABSENT && this.state[g] !== CRASHED) return false;
    this.generation[g]!++;
    this.createdAt[g] = now;
    this.changedAt[g] = now;
    this.state[g] = STARTING;
    this.restartPending[g] = STARTED;
    this.json[g] = undefined;
    return true;
  }

  /** A stop order: the named instance vanishes, if it is the one running. */
  stop(instance: string): boolean {
    const g = instanceOf(instance);
    if (g < 0 || g >= this.instances || this.currentGuid(g) !== instance) return false;
    return this.remove(g);
  }

  /** The bulk API's entry of app a. */
  desiredApp(a: number): { id: string; version: string; instances: number; state: string; package_state: string; memory: number; updated_at: string } {
    return {
      id: appGuid(a),
      version: appVersion(a),
      instances: this.appInstances(a),
      state: 'STARTED',
      package_state: 'STAGED',
      memory: 256,
      updated_at: '2026-01-01T00:00:00Z',
    };
  }
}
