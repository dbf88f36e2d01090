/**
 * The heartbeat source: HM9000's actual-state listener (docs/hm9000.md#heartbeats) on the plugin
 * pipeline. This class is the stage: it checks the options, wires its parts, subscribes, and takes
 * each heartbeat in — from NATS or HTTPS, decoded once, its instances filtered — handing it to the
 * sync loop that saves it and to the event policies.
 *
 * Its parts: sync-loop.ts (the batch saved to the store, with freshness bumps and the ingest lag)
 * and saved-agents.ts (only state changes written), advertise.ts (dea.advertise keeping actual
 * state fresh), policy-events.ts (heartbeat, exit and updated events), partition.ts (the
 * cc_partition filter and its notices), entries.ts (a refused heartbeat read entry by entry),
 * https-listener.ts and metrics.ts.
 */
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import {
  type BusMessage,
  droppedMessagesCounter,
  DropReporter,
  HeartbeatMessage,
  makeMessageDecoder as makeDecoder,
  optionKey,
  type Stage,
  type StageContext,
  type StageHealth,
} from '../../src/sdk/index.js';
import { AdvertiseFreshness } from './advertise.js';
import { readEntries, type HeartbeatEntry } from './entries.js';
import { HEARTBEAT_PATH, HttpsHeartbeatListener, type BodyVerdict } from './https-listener.js';
import { heartbeatMetrics } from './metrics.js';
import { PartitionFilter } from './partition.js';
import { PolicyEvents } from './policy-events.js';
import { SyncLoop } from './sync-loop.js';

export { DropletUpdatedMessage } from '../../src/sdk/index.js';
export { heartbeatMetrics } from './metrics.js';
export { roundStateTimestamp } from './saved-agents.js';

/** Options as they reach the stage: validated, defaults filled, durations in milliseconds. */
export interface HeartbeatStageOptions {
  subject: string;
  advertise_subject: string;
  /** `checked` (the default): advertises are decoded and only those of empty agents bump; `ignored`: HM9000's rule. */
  advertise_payload?: 'checked' | 'ignored';
  sync_interval: number;
  heartbeat_ttl: number;
  save_deadline?: number;
  /** This daemon's partition: messages of others are left out only with cc_partition_filter. */
  cc_partition?: string;
  cc_partition_filter?: boolean;
  /** Subscribed when an event policy handles `exit`; default droplet.exited. */
  exited_subject?: string;
  /** Subscribed when an event policy handles `updated`; default droplet.updated. */
  updated_subject?: string;
  http_listener?: { listen: string; cert_file: string; key_file: string; ca_file: string };
}

/** Decoding is compiled once for every heartbeat stage. */
const decodeHeartbeat = makeDecoder(HeartbeatMessage);

/** The drop-counter label for heartbeats that came over HTTPS. */
export const HTTPS_SUBJECT_LABEL = `https:${HEARTBEAT_PATH}`;

export class HeartbeatSource implements Stage {
  private readonly logger: Logger;
  private readonly drops: DropReporter;
  private readonly received: Counter.Internal;
  private readonly https: HttpsHeartbeatListener | undefined;
  private readonly loop: SyncLoop;
  private readonly partition: PartitionFilter;
  private readonly advertise: AdvertiseFreshness;
  private readonly events: PolicyEvents;
  /** Clock time of the last heartbeat received; undefined before the first (HM9000's zero time). */
  private lastReceived: number | undefined;
  private unsubscribe: (() => void)[] = [];
  private running = false;
  private readonly opts: HeartbeatStageOptions;

  constructor(
    given: HeartbeatStageOptions,
    private readonly ctx: StageContext,
  ) {
    // Below, `opts.cc_partition` is the partition kept: set only while filtering.
    const { cc_partition, cc_partition_filter, ...rest } = given;
    const opts: HeartbeatStageOptions = cc_partition_filter ? { ...rest, cc_partition: cc_partition ?? 'default' } : rest;
    this.opts = opts;
    for (const [key, value] of [
      ['sync_interval', opts.sync_interval],
      ['heartbeat_ttl', opts.heartbeat_ttl],
      ['save_deadline', opts.save_deadline ?? opts.sync_interval],
    ] as const) {
      if (!(typeof value === 'number' && Number.isFinite(value) && value > 0)) {
        throw new Error(`sources.${ctx.id}.${key} must be a duration greater than 0, got ${String(value)}`);
      }
    }
    this.logger = ctx.logger;
    this.drops = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    this.received = heartbeatMetrics(ctx.metrics).received.labels(ctx.id);
    const running = () => this.running;
    this.loop = new SyncLoop(
      { syncInterval: opts.sync_interval, heartbeatTtl: opts.heartbeat_ttl, saveDeadline: opts.save_deadline ?? opts.sync_interval },
      ctx,
      running,
    );
    this.partition = new PartitionFilter(opts.cc_partition, {
      stageId: ctx.id,
      key: optionKey(given, `sources.${ctx.id}`, 'cc_partition'),
      heartbeatTtl: opts.heartbeat_ttl,
      clock: ctx.clock,
      logger: ctx.logger,
      dropped: droppedMessagesCounter(ctx.metrics),
    });
    this.advertise = new AdvertiseFreshness(
      { subject: opts.advertise_subject, payload: opts.advertise_payload ?? 'checked', running, lastReceived: () => this.lastReceived },
      ctx,
      this.drops,
      this.loop,
    );
    this.events = new PolicyEvents({ exitedSubject: opts.exited_subject, updatedSubject: opts.updated_subject, running }, ctx, this.drops, this.partition);
    const h = opts.http_listener;
    this.https = h
      ? new HttpsHeartbeatListener(
          {
            listen: h.listen,
            certFile: h.cert_file,
            keyFile: h.key_file,
            caFile: h.ca_file,
            baseDir: ctx.configDir,
            optionPath: `sources.${ctx.id}.http_listener`,
          },
          (body) => this.onHttpsBody(body),
          ctx.logger,
        )
      : undefined;
  }

  /** The HTTPS listener's bound port, when it runs. */
  get httpsPort(): number | undefined {
    return this.https?.port;
  }

  async start(): Promise<void> {
    if (this.running) return;
    if (this.https) await this.https.start();
    this.running = true;
    const { bus } = this.ctx;
    const lag = this.loop.ingestLag;
    this.unsubscribe.push(bus.subscribe(this.opts.subject, this.onHeartbeat));
    this.unsubscribe.push(
      lag.listen(),
      this.ctx.freshness.registerLag(`sources.${this.ctx.id}`, () => lag.lag()),
    );
    if (this.opts.advertise_subject !== '') this.unsubscribe.push(bus.subscribe(this.opts.advertise_subject, this.advertise.onAdvertise));
    this.unsubscribe.push(...this.events.subscribe(bus));
    this.logger.info(
      {
        subject: this.opts.subject,
        advertise_subject: this.opts.advertise_subject || null,
        sync_interval_ms: this.opts.sync_interval,
        heartbeat_ttl_ms: this.opts.heartbeat_ttl,
      },
      `listening for heartbeats on ${this.opts.subject}`,
    );
    this.loop.start();
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const off of this.unsubscribe.splice(0)) off();
    this.loop.stop();
    await this.https?.stop();
    await this.idle();
  }

  health(): StageHealth {
    const failure = this.loop.storeError ?? this.https?.error ?? null;
    return { healthy: failure === null, last_error: failure ?? this.partition.notice() };
  }

  /** Why the leader's part of this stage fails here (its saves), or null: the engine's leader fitness reads it. */
  leaderWorkError(): string | null {
    return this.loop.storeError;
  }

  /** Saves the pending batch now, after any save under way (the loop itself goes through here). */
  syncNow(): Promise<void> {
    return this.loop.syncNow();
  }

  /** Resolves once no save and no freshness bump is under way. */
  idle(): Promise<void> {
    return this.loop.idle();
  }

  // --- intake (kept cheap: one decode, one map write per heartbeat) ---

  private readonly onHeartbeat = (msg: BusMessage): void => {
    const decoded = decodeHeartbeat(msg.data);
    if (!decoded.ok) {
      // One bad or over-long entry loses only itself when entries are read one by one.
      if ((decoded.reason === 'invalid' || decoded.reason === 'too_long') && this.events.raisesBeats()) this.acceptEntries(msg.data, this.opts.subject);
      else this.drops.drop(this.opts.subject, decoded.reason, decoded.detail);
      return;
    }
    this.accept(decoded.value, this.opts.subject);
  };

  /**
   * A heartbeat the schema refused, read entry by entry (entries.ts): the bad entries are left out
   * with their reason, counted, and the rest is taken as any heartbeat.
   */
  private acceptEntries(data: Uint8Array, subject: string): void {
    const r = readEntries(data);
    if (!r.ok) {
      this.drops.drop(subject, r.reason, r.detail);
      return;
    }
    const mine = this.partition.mine;
    let otherPartition = 0;
    for (const b of r.bad) {
      if (b.code !== 'too_long' && mine !== undefined && b.ccPartition !== mine) {
        otherPartition++;
        this.partition.entryLeftOut(r.dea, b.ccPartition);
      } else {
        this.drops.drop(subject, b.code, `entry ${b.position} of agent ${r.dea}'s heartbeat: ${b.reason}; the other entries are kept`, { agent: r.dea });
      }
    }
    this.partition.leftOut(subject, otherPartition);
    this.accept({ dea: r.dea, droplets: r.good }, subject, r.total);
  }

  private onHttpsBody(body: Uint8Array): BodyVerdict {
    if (body.byteLength === 0) {
      this.drops.drop(HTTPS_SUBJECT_LABEL, 'empty', 'the request body is empty');
      return { ok: false, reason: 'the request body is empty' };
    }
    const decoded = decodeHeartbeat(body);
    if (!decoded.ok) {
      this.drops.drop(HTTPS_SUBJECT_LABEL, decoded.reason, decoded.detail);
      return { ok: false, reason: `${decoded.reason}: ${decoded.detail}` };
    }
    this.accept(decoded.value, HTTPS_SUBJECT_LABEL);
    return { ok: true };
  }

  private accept(hb: HeartbeatMessage, subject: string, entries = hb.droplets.length): void {
    this.loop.add(hb.dea, this.keep(hb.dea, hb.droplets, subject));
    this.ctx.freshness.heard(hb.dea);
    this.lastReceived = this.ctx.clock.now();
    this.received.inc();
    if (this.events.raisesBeats()) this.events.raiseBeats(hb, entries);
  }

  /**
   * The instances this stage keeps, in one pass that allocates only when something is left out:
   * those of another cc_partition (when cc_partition is set), counted and named once per agent
   * and value, and those with an empty version, which the store cannot key.
   */
  private keep(agent: string, droplets: readonly HeartbeatEntry[], subject: string): readonly HeartbeatEntry[] {
    const mine = this.partition.mine;
    const filtering = mine !== undefined;
    let i = 0;
    for (; i < droplets.length; i++) {
      const d = droplets[i]!;
      if (d.version === '' || (filtering && d.cc_partition !== mine)) break;
    }
    if (i === droplets.length) return droplets;
    const kept = droplets.slice(0, i);
    let otherPartition = 0;
    for (; i < droplets.length; i++) {
      const d = droplets[i]!;
      if (filtering && d.cc_partition !== mine) {
        otherPartition++;
        this.partition.entryLeftOut(agent, d.cc_partition);
      } else if (d.version === '') {
        this.drops.drop(
          subject,
          'empty_version',
          `instance ${d.instance} of app ${d.droplet} reported by agent ${agent} has an empty version; the other instances are kept`,
        );
      } else {
        kept.push(d);
      }
    }
    this.partition.leftOut(subject, otherPartition);
    return kept;
  }
}
