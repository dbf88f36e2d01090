/**
 * What the event policies (the Ruby Health Manager's presets) get from this stage, on the leader
 * and in message order: `heartbeat-message` and one `heartbeat` per instance entry of each
 * heartbeat, `exit` from droplet.exited and `updated` from droplet.updated. The two subjects are
 * subscribed only when a policy handles their event. Entries, exits and updates of another
 * cc_partition are left out when the stage filters on one.
 */
import {
  type Bus,
  type BusMessage,
  DropletExitedMessage,
  DropletUpdatedMessage,
  DropReporter,
  type HeartbeatMessage,
  makeSchemaDecoder,
  type StageContext,
} from '../../src/sdk/index.js';
import type { PartitionFilter } from './partition.js';
import { instanceRecord } from './saved-agents.js';

const decodeExited = makeSchemaDecoder(DropletExitedMessage);
const decodeUpdated = makeSchemaDecoder(DropletUpdatedMessage);

export interface PolicyEventOptions {
  /** Default droplet.exited. */
  exitedSubject?: string;
  /** Default droplet.updated. */
  updatedSubject?: string;
  /** Whether the source runs: messages are ignored otherwise. */
  running: () => boolean;
}

export class PolicyEvents {
  constructor(
    private readonly o: PolicyEventOptions,
    private readonly ctx: StageContext,
    private readonly drops: DropReporter,
    private readonly partition: PartitionFilter,
  ) {}

  /** Subscribes to the exits and updates some policy handles (the engine knows by now); returns the unsubscribers. */
  subscribe(bus: Bus): (() => void)[] {
    const { events } = this.ctx;
    const off: (() => void)[] = [];
    if (events.wants('exit')) off.push(bus.subscribe(this.exitedSubject, this.onExited));
    if (events.wants('updated')) off.push(bus.subscribe(this.updatedSubject, this.onUpdated));
    return off;
  }

  /** Whether heartbeat events are raised now: some policy handles them, and this daemon leads. */
  raisesBeats(): boolean {
    const { events } = this.ctx;
    return this.o.running() && (events.wants('heartbeat') || events.wants('heartbeat-message')) && this.ctx.isLeader();
  }

  /**
   * `heartbeat-message` for the whole heartbeat, then one `heartbeat` per entry of this stage's
   * cc_partition, in message order. Entries with an empty version are raised too: only the store
   * cannot key them.
   */
  raiseBeats(hb: HeartbeatMessage, entries: number): void {
    const { events } = this.ctx;
    const mine = this.partition.mine;
    const beats = mine === undefined ? hb.droplets : hb.droplets.filter((d) => d.cc_partition === mine);
    if (events.wants('heartbeat-message')) events.emit({ kind: 'heartbeat-message', agent: hb.dea, entries, accepted: beats.length });
    if (!events.wants('heartbeat')) return;
    for (const d of beats) events.emit({ kind: 'heartbeat', app: d.droplet, agent: hb.dea, beat: instanceRecord(d, hb.dea, d.index, d.state_timestamp) });
  }

  private get exitedSubject(): string {
    return this.o.exitedSubject ?? 'droplet.exited';
  }

  private get updatedSubject(): string {
    return this.o.updatedSubject ?? 'droplet.updated';
  }

  /** droplet.exited → `exit`, for the leader's event policies. */
  private readonly onExited = (msg: BusMessage): void => {
    if (!this.o.running()) return;
    const subject = this.exitedSubject;
    const decoded = decodeExited(msg.data);
    if (!decoded.ok) {
      this.drops.drop(subject, decoded.reason, decoded.detail);
      return;
    }
    const m = decoded.value;
    if (!this.partition.passes(subject, m.cc_partition)) return;
    if (m.instance === undefined || m.instance === '') {
      this.drops.drop(subject, 'invalid', `/instance is missing in the exit of app ${m.droplet} index ${m.index}`);
      return;
    }
    if (m.reason === 'CRASHED' && m.crash_timestamp === undefined) {
      this.drops.drop(subject, 'invalid', `/crash_timestamp is missing in the CRASHED exit of app ${m.droplet} index ${m.index}`);
      return;
    }
    if (!this.ctx.isLeader()) return;
    this.ctx.events.emit({
      kind: 'exit',
      app: m.droplet,
      version: m.version,
      instance: m.instance,
      index: m.index,
      reason: m.reason,
      ...(m.reason === 'CRASHED' ? { crashTimestamp: m.crash_timestamp } : {}),
    });
  };

  /** droplet.updated → `updated`, for the leader's event policies. */
  private readonly onUpdated = (msg: BusMessage): void => {
    if (!this.o.running()) return;
    const subject = this.updatedSubject;
    const decoded = decodeUpdated(msg.data);
    if (!decoded.ok) {
      this.drops.drop(subject, decoded.reason, decoded.detail);
      return;
    }
    if (!this.partition.passes(subject, decoded.value.cc_partition)) return;
    if (this.ctx.isLeader()) this.ctx.events.emit({ kind: 'updated', app: decoded.value.droplet });
  };
}
