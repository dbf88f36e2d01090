/**
 * What `hmgate demo` adds to the live simulator's foundation so that its script can play: the
 * desired state of an app can change (more instances, a new version), and an agent can die for
 * good, its instances then started on another agent.
 *
 * - DemoFoundation is the live simulator's LiveFoundation with those changes: the same slots, the
 *   same heartbeats, the same start and stop orders obeyed, plus an app's desired count and version
 *   as the demo sets them, instances of a new version (reported under it), and the instances of a
 *   dead agent that a start placed on another agent (reported by that one). Each change of the
 *   desired state bumps `desiredGeneration`, so the live bulk API builds its pages anew.
 */
import { appOf, appVersion, instanceOf, LiveFoundation, type FoundationOptions } from './live-foundation.js';

/** The version an app changes to in the demo: shaped like its first one, told apart by its second group. */
export const newVersion = (a: number): string => appVersion(a).replace('-b1b1-4b1b-9b1b-', '-b2b2-4b2b-9b2b-');

interface HeartbeatBody {
  droplets: { instance: string; version: string }[];
  dea: string;
}

export class DemoFoundation extends LiveFoundation {
  /** The desired count and version of the apps the demo changed. */
  private readonly desired = new Map<number, { instances?: number; version?: string }>();
  /** Instances that run a version other than their app's first, by instance guid. */
  private readonly versions = new Map<string, string>();
  /** Dead agents, each with the live agent that runs what was started in its place. */
  private readonly dead = new Map<number, number>();
  /** Slots of dead agents started again on their stand-in. */
  private readonly moved = new Set<number>();
  constructor(o: FoundationOptions, now: number) {
    super(o, now);
  }

  override desiredApp(a: number): ReturnType<LiveFoundation['desiredApp']> {
    return { ...super.desiredApp(a), ...this.desired.get(a) };
  }

  /** The app's desired instances from now on (at most its slots, instancesPerApp). */
  setDesiredInstances(a: number, instances: number): void {
    if (instances > this.appInstances(a)) throw new Error(`app ${a} has room for ${this.appInstances(a)} instances, not ${instances}`);
    this.desired.set(a, { ...this.desired.get(a), instances });
    this.desiredGeneration++;
  }

  /** The app's desired version from now on. */
  setDesiredVersion(a: number, version: string): void {
    this.desired.set(a, { ...this.desired.get(a), version });
    this.desiredGeneration++;
  }

  /** The version instance g is reported under (undefined when absent). */
  versionOf(g: number): string | undefined {
    const guid = this.currentGuid(g);
    if (guid === undefined) return undefined;
    return this.versions.get(guid) ?? appVersion(Math.floor(g / this.o.instancesPerApp));
  }

  /** The agent that reports instance g: its own, or the stand-in of its dead agent once it was started there. */
  hostOf(g: number): number {
    const d = this.agentOf(g);
    return this.moved.has(g) ? (this.dead.get(d) ?? d) : d;
  }

  /**
   * Agent d dies: the caller stops its heartbeats (LiveSimulator.silence). A start for one of its
   * instances places it on `standIn`, which reports it from then on.
   */
  die(d: number, standIn: number): void {
    if (d === standIn || this.dead.has(standIn)) throw new Error(`agent ${standIn} cannot stand in for agent ${d}`);
    this.dead.set(d, standIn);
  }

  isDead(d: number): boolean {
    return this.dead.has(d);
  }

  /**
   * A start order, obeyed as LiveFoundation obeys it, and also: for the app's desired version when
   * it changed (the new instance takes the slot of the old version's one, which is gone), and for
   * an instance of a dead agent (started on its stand-in).
   */
  override start(app: string, version: string, index: number, now: number): boolean {
    const a = appOf(app);
    if (a < 0 || !Number.isInteger(index) || index < 0 || index >= this.appInstances(a)) return false;
    const first = appVersion(a);
    if (version !== first && version !== this.desired.get(a)?.version) return false;
    const g = a * this.o.instancesPerApp + index;
    const lost = this.dead.has(this.agentOf(g)) && !this.moved.has(g);
    const current = this.versionOf(g);
    if (current !== undefined && (lost || current !== version)) this.remove(g);
    if (!super.start(app, first, index, now)) return false;
    if (version !== first) this.versions.set(this.currentGuid(g)!, version);
    if (lost) this.moved.add(g);
    return true;
  }

  /** Agent d's heartbeat: its own instances, those it runs for a dead agent, each under its version. */
  override heartbeat(d: number, now: number): string {
    const own = super.heartbeat(d, now);
    const standsInFor = [...this.dead].filter(([, s]) => s === d).map(([x]) => x);
    if (standsInFor.length === 0 && this.versions.size === 0) return own;
    const body = JSON.parse(own) as HeartbeatBody;
    for (const x of standsInFor) {
      // Built as the dead agent's heartbeat (applying its STARTING → RUNNING), never sent as one.
      const theirs = JSON.parse(super.heartbeat(x, now)) as HeartbeatBody;
      body.droplets.push(...theirs.droplets.filter((i) => this.moved.has(instanceOf(i.instance))));
    }
    for (const i of body.droplets) i.version = this.versions.get(i.instance) ?? i.version;
    return JSON.stringify(body);
  }
}
