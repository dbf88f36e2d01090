/**
 * What was saved last for each agent, so that only state changes are written, as in HM9000's
 * write-through cache: an instance whose state is the same as in the agent's previously saved
 * heartbeat keeps its saved index and state timestamp, so the store sees no change and only
 * renews the agent's presence. An agent past its presence TTL counts as never saved.
 */
import { HeardInstance, type InstanceHeartbeat } from '../../src/sdk/index.js';
import type { HeartbeatEntry } from './entries.js';

/**
 * A state timestamp as HM9000 stores it: formatted with Go's `%.1f` (round half to even on the
 * exact binary value) and read back. Only x.25 and x.75 are exact ties in binary.
 */
export function roundStateTimestamp(ts: number): number {
  if (!Number.isFinite(ts)) return ts;
  const tenths = ts * 10;
  if (Math.abs(tenths) < 2 ** 52 && Number.isInteger(ts * 4) && !Number.isInteger(ts * 2)) {
    // An exact tie: the even neighbour wins.
    const down = Math.floor(tenths);
    return (down % 2 === 0 ? down : down + 1) / 10;
  }
  return Number(ts.toFixed(1));
}

export function instanceRecord(d: HeartbeatEntry, agent: string, index: number, stateTimestamp: number): InstanceHeartbeat {
  return new HeardInstance(d.droplet, d.version, d.instance, index, d.state, stateTimestamp, agent, d.cc_partition);
}

/** What was saved last for one agent — the droplets heard and the instances made of them — and until when the store keeps it. */
export interface SavedAgent {
  expiresAt: number;
  droplets: readonly HeartbeatEntry[];
  instances: readonly InstanceHeartbeat[];
}

export class SavedAgents {
  private readonly agents = new Map<string, SavedAgent>();
  private lastPrune: number;

  constructor(
    /** The agents' presence TTL (heartbeat_ttl). */
    private readonly ttl: number,
    now: number,
  ) {
    this.lastPrune = now;
  }

  /**
   * The instances to save for one agent, by guid (a guid reported twice counts once, the later
   * report winning). An instance whose state equals the one saved before — earlier in this
   * heartbeat or in the agent's last saved heartbeat — keeps the saved index and state timestamp.
   */
  instances(agent: string, droplets: readonly HeartbeatEntry[], now: number): readonly InstanceHeartbeat[] {
    const savedAgent = this.agents.get(agent);
    // Past its presence TTL the store has dropped the agent: nothing saved before counts.
    const saved = savedAgent !== undefined && savedAgent.expiresAt > now ? savedAgent : undefined;
    // The decoder hands on a heartbeat equal to the agent's last one as the very same array.
    if (saved !== undefined && saved.droplets === droplets) return saved.instances;
    const before = saved === undefined ? undefined : new Map(saved.instances.map((i) => [i.instance, i]));
    const byGuid = new Map<string, InstanceHeartbeat>();
    for (let i = 0; i < droplets.length; i++) {
      const d = droplets[i]!;
      const prev = byGuid.get(d.instance) ?? before?.get(d.instance);
      let rec: InstanceHeartbeat;
      if (prev !== undefined && prev.state === d.state) {
        rec =
          prev.app === d.droplet && prev.version === d.version && prev.agent === agent && prev.ccPartition === d.cc_partition
            ? prev
            : instanceRecord(d, agent, prev.index, prev.stateTimestamp);
      } else {
        rec = instanceRecord(d, agent, d.index, roundStateTimestamp(d.state_timestamp));
      }
      byGuid.set(d.instance, rec);
    }
    return Array.from(byGuid.values());
  }

  /** The agent's heartbeat was saved. */
  set(agent: string, saved: SavedAgent): void {
    this.agents.set(agent, saved);
  }

  /** What the store holds for the agent is unknown: its next heartbeat is written in full. */
  forget(agent: string): void {
    this.agents.delete(agent);
  }

  /** Forget agents whose presence has lapsed, at most once per heartbeat_ttl. */
  prune(now: number): void {
    if (now - this.lastPrune < this.ttl) return;
    this.lastPrune = now;
    for (const [agent, s] of this.agents) if (s.expiresAt <= now) this.agents.delete(agent);
  }
}
