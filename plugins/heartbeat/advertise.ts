/**
 * dea.advertise keeps actual state fresh where nothing heartbeats (docs/hm9000.md#advertisements).
 * HM9000 bumped on any message once no heartbeat had been received for the freshness TTL (and on
 * every one before the first heartbeat); advertise_payload: ignored keeps that rule. But an agent
 * that runs instances heartbeats them: an advertise naming instances while nothing heartbeats
 * shows heartbeats being lost, and then advertises must not stand in for them. So by default an
 * advertise bumps only when it is valid, names no instance, and no advertise named any within the
 * freshness TTL. One that names instances in that silence also revokes the freshness advertises
 * made: otherwise the marker would hold for up to a TTL more, and the analyzer would start that
 * agent's unseen instances again elsewhere. Freshness made by heartbeat saves is left to lapse on
 * its own, as when no advertise comes at all.
 */
import { type BusMessage, counted, DeaAdvertiseMessage, DropReporter, LogLimiter, makeSchemaDecoder, type StageContext } from '../../src/sdk/index.js';
import type { SyncLoop } from './sync-loop.js';

const decodeAdvertise = makeSchemaDecoder(DeaAdvertiseMessage);

export interface AdvertiseOptions {
  subject: string;
  payload: 'checked' | 'ignored';
  /** Whether the source runs: advertises are ignored otherwise. */
  running: () => boolean;
  /** Clock time of the last heartbeat received; undefined before the first (HM9000's zero time). */
  lastReceived: () => number | undefined;
}

export class AdvertiseFreshness {
  /** Clock time of the last valid advertise that named instances (undefined: none yet). */
  private lastBusyAdvertise: number | undefined;
  /** Clock time of the last freshness bump an advertise made (undefined: none yet). */
  private lastAdvertiseBump: number | undefined;
  /** "Heartbeats are lost" is logged at most once per actual freshness TTL. */
  private readonly lostLog: LogLimiter;

  constructor(
    private readonly o: AdvertiseOptions,
    private readonly ctx: StageContext,
    private readonly drops: DropReporter,
    /** Makes and revokes the freshness marker. */
    private readonly loop: SyncLoop,
  ) {
    this.lostLog = new LogLimiter(ctx.freshness.actualTtlMs);
  }

  readonly onAdvertise = (msg: BusMessage): void => {
    if (!this.o.running()) return;
    const now = this.ctx.clock.now();
    const ttl = this.ctx.freshness.actualTtlMs;
    const lastReceived = this.o.lastReceived();
    const silent = lastReceived === undefined || now - lastReceived >= ttl;
    if (this.o.payload === 'ignored') {
      if (silent) this.bump(now);
      return;
    }
    const decoded = decodeAdvertise(msg.data);
    if (!decoded.ok) {
      this.drops.drop(this.o.subject, decoded.reason, decoded.detail);
      return;
    }
    let instances = 0;
    for (const count of Object.values(decoded.value.app_id_to_count)) instances += count;
    if (instances > 0) {
      this.lastBusyAdvertise = now;
      if (silent) this.heartbeatsLost(decoded.value.id, instances, now);
      return;
    }
    if (!silent || (this.lastBusyAdvertise !== undefined && now - this.lastBusyAdvertise < ttl)) return;
    this.bump(now);
  };

  private bump(now: number): void {
    // Only the leader writes freshness, as only it saves heartbeats.
    if (!this.ctx.isLeader()) return;
    this.lastAdvertiseBump = now;
    this.loop.bumpSoon('dea.advertise');
  }

  /** An advertise named instances while no heartbeat arrives: said in /v1/status and the log, and advertise-made freshness undone. */
  private heartbeatsLost(agent: string, instances: number, now: number): void {
    const ttl = this.ctx.freshness.actualTtlMs;
    const text = `agent ${agent} advertises ${counted(instances, 'instance')} but no heartbeat arrived within the actual freshness TTL (${ttl}ms): its heartbeats are missing, so advertises do not keep actual state fresh until heartbeats arrive`;
    this.ctx.freshness.setReason('actual', text);
    const lastReceived = this.o.lastReceived();
    const held = this.lastAdvertiseBump !== undefined && (lastReceived === undefined || this.lastAdvertiseBump >= lastReceived);
    if (held && this.ctx.isLeader()) {
      this.lastAdvertiseBump = undefined;
      this.loop.revokeSoon(text);
    }
    const line = this.lostLog.pass('', now);
    if (line) this.ctx.logger.warn({ agent, instances, ...(line.heldBack ? { advertised_since_last_log: line.heldBack } : {}) }, text);
  }
}
