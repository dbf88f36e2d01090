/**
 * The heartbeat source: HM9000's actual-state listener (docs/hm9000.md#heartbeats) on the plugin pipeline.
 *
 * Heartbeats arrive on NATS (and optionally over HTTPS), are decoded once, and the last one per
 * agent waits in a pending batch. A sync loop — once at start, then every sync_interval, never two
 * at a time — swaps the batch and saves it to the store with the agents' presence TTL. As in
 * HM9000's write-through cache only state changes are written: an instance whose state is the
 * same as in the agent's previously saved heartbeat keeps its saved index and state timestamp, so
 * the store sees no change and only renews the presence. A save faster than save_deadline bumps
 * actual freshness, a failed save revokes it (docs/hm9000.md#actual-freshness). `dea.advertise` bumps it while no heartbeat
 * has been received for the freshness TTL (docs/hm9000.md#advertisements) — by default only a valid advertise, and only
 * while no agent advertises instances (see onAdvertise); advertise_payload: ignored is HM9000's
 * rule, where any message does.
 *
 * For event policies (the Ruby Health Manager's presets) it also raises, on the leader and in
 * message order, `heartbeat-message` and one `heartbeat` per instance entry, and — when a policy
 * handles them — subscribes to droplet.exited and droplet.updated and raises `exit` and `updated`.
 * With cc_partition set, entries, exits and updates of another partition are left out (the Ruby
 * HM's older design did so), counted, and named as a problem while they keep arriving.
 */
import type { Logger } from 'pino';
import { Counter, Histogram, type Registry } from 'prom-client';
import {
  type AgentHeartbeat,
  type BusMessage,
  type Clock,
  DeaAdvertiseMessage,
  DropletExitedMessage,
  DropletUpdatedMessage,
  droppedMessagesCounter,
  DropReporter,
  errorText,
  HeardInstance,
  HeartbeatMessage,
  type InstanceHeartbeat,
  LogLimiter,
  makeMessageDecoder as makeDecoder,
  makeSchemaDecoder,
  type Stage,
  type StageContext,
  type StageHealth,
  type Timer,
} from '../../src/sdk/index.js';
import { HEARTBEAT_PATH, HttpsHeartbeatListener, type BodyVerdict } from './https-listener.js';
import { readEntries } from './entries.js';
import { HeartbeatIngestLag } from './ingest-lag.js';

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

type DropletMessage = HeartbeatMessage['droplets'][number];

/** Decoding is compiled once for every heartbeat stage. */
const decodeHeartbeat = makeDecoder(HeartbeatMessage);

export { DropletUpdatedMessage };
const decodeExited = makeSchemaDecoder(DropletExitedMessage);
const decodeUpdated = makeSchemaDecoder(DropletUpdatedMessage);
const decodeAdvertise = makeSchemaDecoder(DeaAdvertiseMessage);

/** The drop-counter label for heartbeats that came over HTTPS. */
export const HTTPS_SUBJECT_LABEL = `https:${HEARTBEAT_PATH}`;

/** Distinct (agent, partition) pairs remembered for the once-only partition log line. */
const MAX_PARTITION_NOTICES = 10_000;

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

interface HeartbeatMetrics {
  received: Counter<'stage'>;
  saved: Counter<'stage'>;
  saveDuration: Histogram<'stage'>;
  saveFailures: Counter<'stage'>;
}

const metricsByRegistry = new WeakMap<Registry, HeartbeatMetrics>();

function counter(registry: Registry, name: string, help: string): Counter<'stage'> {
  return (registry.getSingleMetric(name) as Counter<'stage'> | undefined) ?? new Counter({ name, help, labelNames: ['stage'], registers: [registry] });
}

/** One set of heartbeat metrics per registry, however many heartbeat stages share it. */
export function heartbeatMetrics(registry: Registry): HeartbeatMetrics {
  let m = metricsByRegistry.get(registry);
  if (!m) {
    m = {
      received: counter(registry, 'hmgate_heartbeats_received_total', 'Agent heartbeats received and decoded (NATS and HTTPS)'),
      saved: counter(registry, 'hmgate_heartbeats_saved_total', 'Instance heartbeats saved to the store'),
      saveFailures: counter(registry, 'hmgate_heartbeat_save_failures_total', 'Heartbeat batch saves that failed'),
      saveDuration:
        (registry.getSingleMetric('hmgate_heartbeat_save_duration_seconds') as Histogram<'stage'> | undefined) ??
        new Histogram({
          name: 'hmgate_heartbeat_save_duration_seconds',
          help: 'Duration of one heartbeat batch save to the store',
          labelNames: ['stage'],
          buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
          registers: [registry],
        }),
    };
    metricsByRegistry.set(registry, m);
  }
  return m;
}

/** What was saved last for one agent — the droplets heard and the instances made of them — and until when the store keeps it. */
interface SavedAgent {
  expiresAt: number;
  droplets: readonly DropletMessage[];
  instances: readonly InstanceHeartbeat[];
}

function instanceRecord(d: DropletMessage, agent: string, index: number, stateTimestamp: number): InstanceHeartbeat {
  return new HeardInstance(d.droplet, d.version, d.instance, index, d.state, stateTimestamp, agent, d.cc_partition);
}

export class HeartbeatSource implements Stage {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly drops: DropReporter;
  private readonly received: Counter.Internal;
  private readonly saved: Counter.Internal;
  private readonly saveFailures: Counter.Internal;
  private readonly saveDuration: Histogram.Internal<'stage'>;
  private readonly dropped: Counter<'subject' | 'reason'>;
  private readonly saveDeadline: number;
  private readonly https: HttpsHeartbeatListener | undefined;
  /** How far behind this source is: unsaved heartbeats and the bus's delay. */
  private readonly ingestLag: HeartbeatIngestLag;

  /** The last heartbeat of each agent since the last swap. */
  private pending = new Map<string, readonly DropletMessage[]>();
  private readonly savedAgents = new Map<string, SavedAgent>();
  private lastPrune: number;
  /** Clock time of the last heartbeat received; undefined before the first (HM9000's zero time). */
  private lastReceived: number | undefined;
  /** Clock time of the last valid advertise that named instances (undefined: none yet). */
  private lastBusyAdvertise: number | undefined;
  /** Clock time of the last freshness bump an advertise made (undefined: none yet). */
  private lastAdvertiseBump: number | undefined;
  /** "Heartbeats are lost" is logged at most once per actual freshness TTL. */
  private readonly lostLog: LogLimiter;
  private readonly partitionNotices = new Set<string>();
  /** The last message of another cc_partition left out, and when: the problem holds for heartbeat_ttl after it. */
  private lastForeign: { theirs: string | null; at: number } | undefined;

  private unsubscribe: (() => void)[] = [];
  private timer: Timer | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly inflight = new Set<Promise<void>>();
  private running = false;

  private storeError: string | null = null;

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
    this.clock = ctx.clock;
    this.logger = ctx.logger;
    this.lastPrune = ctx.clock.now();
    this.saveDeadline = opts.save_deadline ?? opts.sync_interval;
    this.drops = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    const m = heartbeatMetrics(ctx.metrics);
    this.received = m.received.labels(ctx.id);
    this.saved = m.saved.labels(ctx.id);
    this.saveFailures = m.saveFailures.labels(ctx.id);
    this.saveDuration = m.saveDuration.labels(ctx.id);
    this.dropped = droppedMessagesCounter(ctx.metrics);
    this.ingestLag = new HeartbeatIngestLag(() => ctx.clock.now(), ctx.bus);
    this.lostLog = new LogLimiter(ctx.freshness.actualTtlMs);
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
    this.unsubscribe.push(bus.subscribe(this.opts.subject, this.onHeartbeat));
    this.unsubscribe.push(
      this.ingestLag.listen(),
      this.ctx.freshness.registerLag(`sources.${this.ctx.id}`, () => this.ingestLag.lag()),
    );
    if (this.opts.advertise_subject !== '') this.unsubscribe.push(bus.subscribe(this.opts.advertise_subject, this.onAdvertise));
    // Exits and updates matter only to event policies that handle them (the engine knows by now).
    const { events } = this.ctx;
    if (events.wants('exit')) this.unsubscribe.push(bus.subscribe(this.exitedSubject, this.onExited));
    if (events.wants('updated')) this.unsubscribe.push(bus.subscribe(this.updatedSubject, this.onUpdated));
    this.logger.info(
      {
        subject: this.opts.subject,
        advertise_subject: this.opts.advertise_subject || null,
        sync_interval_ms: this.opts.sync_interval,
        heartbeat_ttl_ms: this.opts.heartbeat_ttl,
      },
      `listening for heartbeats on ${this.opts.subject}`,
    );
    // HM9000 runs the sync loop once at once, then on every tick.
    this.tick();
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const off of this.unsubscribe.splice(0)) off();
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    await this.https?.stop();
    await this.idle();
  }

  health(): StageHealth {
    const failure = this.storeError ?? this.https?.error ?? null;
    return { healthy: failure === null, last_error: failure ?? this.partitionNotice() };
  }

  /** Why the leader's part of this stage fails here (its saves), or null: the engine's leader fitness reads it. */
  leaderWorkError(): string | null {
    return this.storeError;
  }

  private get exitedSubject(): string {
    return this.opts.exited_subject ?? 'droplet.exited';
  }

  private get updatedSubject(): string {
    return this.opts.updated_subject ?? 'droplet.updated';
  }

  /** Messages of another cc_partition in words, while they arrived within heartbeat_ttl. */
  private partitionNotice(): string | null {
    const f = this.lastForeign;
    if (f === undefined || this.clock.now() - f.at >= this.opts.heartbeat_ttl) return null;
    const mine = JSON.stringify(this.opts.cc_partition);
    const key = `sources.${this.ctx.id}.cc_partition`;
    return f.theirs === null
      ? `agents report instances without a cc_partition but this daemon is on ${mine}: their heartbeats, exits and updates are ignored; remove ${key}`
      : `agents report cc_partition ${JSON.stringify(f.theirs)} but this daemon is on ${mine}: their heartbeats, exits and updates are ignored; set ${key}: ${f.theirs}`;
  }

  /** Saves the pending batch now, after any save under way (the loop itself goes through here). */
  syncNow(): Promise<void> {
    const run = this.chain.then(() => this.sync());
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves once no save and no freshness bump is under way. */
  async idle(): Promise<void> {
    for (;;) {
      const chain = this.chain;
      await Promise.all([chain, ...this.inflight]);
      if (chain === this.chain && this.inflight.size === 0) return;
    }
  }

  // --- intake (kept cheap: one decode, one map write per heartbeat) ---

  private readonly onHeartbeat = (msg: BusMessage): void => {
    const decoded = decodeHeartbeat(msg.data);
    if (!decoded.ok) {
      // One bad or over-long entry loses only itself when entries are read one by one.
      if ((decoded.reason === 'invalid' || decoded.reason === 'too_long') && this.raisesBeats()) this.acceptEntries(msg.data, this.opts.subject);
      else this.drops.drop(this.opts.subject, decoded.reason, decoded.detail);
      return;
    }
    this.accept(decoded.value, this.opts.subject);
  };

  /** Whether heartbeat events are raised now: some policy handles them, and this daemon leads. */
  private raisesBeats(): boolean {
    const { events } = this.ctx;
    return this.running && (events.wants('heartbeat') || events.wants('heartbeat-message')) && this.ctx.isLeader();
  }

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
    const mine = this.opts.cc_partition;
    let otherPartition = 0;
    for (const b of r.bad) {
      if (b.code !== 'too_long' && mine !== undefined && b.ccPartition !== mine) {
        otherPartition++;
        this.noticePartition(r.dea, b.ccPartition);
      } else {
        this.drops.drop(subject, b.code, `entry ${b.position} of agent ${r.dea}'s heartbeat: ${b.reason}; the other entries are kept`, { agent: r.dea });
      }
    }
    if (otherPartition > 0) this.dropped.inc({ subject, reason: 'other_cc_partition' }, otherPartition);
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
    this.pending.set(hb.dea, this.keep(hb.dea, hb.droplets, subject));
    this.ingestLag.accepted();
    this.ctx.freshness.heard(hb.dea);
    this.lastReceived = this.clock.now();
    this.received.inc();
    if (this.raisesBeats()) this.raiseBeats(hb, entries);
  }

  /**
   * `heartbeat-message` for the whole heartbeat, then one `heartbeat` per entry of this stage's
   * cc_partition, in message order. Entries with an empty version are raised too: only the store
   * cannot key them.
   */
  private raiseBeats(hb: HeartbeatMessage, entries: number): void {
    const { events } = this.ctx;
    const mine = this.opts.cc_partition;
    const beats = mine === undefined ? hb.droplets : hb.droplets.filter((d) => d.cc_partition === mine);
    if (events.wants('heartbeat-message')) events.emit({ kind: 'heartbeat-message', agent: hb.dea, entries, accepted: beats.length });
    if (!events.wants('heartbeat')) return;
    for (const d of beats) events.emit({ kind: 'heartbeat', app: d.droplet, agent: hb.dea, beat: instanceRecord(d, hb.dea, d.index, d.state_timestamp) });
  }

  /** Whether a message of this cc_partition passes the filter; one that does not is counted and named. */
  private ownPartition(subject: string, theirs: string | undefined): boolean {
    const mine = this.opts.cc_partition;
    if (mine === undefined || theirs === mine) return true;
    this.dropped.inc({ subject, reason: 'other_cc_partition' });
    this.lastForeign = { theirs: theirs ?? null, at: this.clock.now() };
    const key = `${subject}\u0000${theirs ?? ''}`;
    if (!this.partitionNotices.has(key) && this.partitionNotices.size < MAX_PARTITION_NOTICES) {
      this.partitionNotices.add(key);
      const what = theirs === undefined ? 'without a cc_partition' : `of cc_partition ${JSON.stringify(theirs)}`;
      const fix = theirs === undefined ? `remove sources.${this.ctx.id}.cc_partition to keep them` : `set sources.${this.ctx.id}.cc_partition: ${theirs}`;
      this.logger.warn(
        { subject, cc_partition: theirs ?? null, kept_cc_partition: mine },
        `${subject} messages ${what} are ignored, this stage keeps only ${JSON.stringify(mine)}: ${fix}`,
      );
    }
    return false;
  }

  /** droplet.exited → `exit`, for the leader's event policies. */
  private readonly onExited = (msg: BusMessage): void => {
    if (!this.running) return;
    const subject = this.exitedSubject;
    const decoded = decodeExited(msg.data);
    if (!decoded.ok) {
      this.drops.drop(subject, decoded.reason, decoded.detail);
      return;
    }
    const m = decoded.value;
    if (!this.ownPartition(subject, m.cc_partition)) return;
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
    if (!this.running) return;
    const subject = this.updatedSubject;
    const decoded = decodeUpdated(msg.data);
    if (!decoded.ok) {
      this.drops.drop(subject, decoded.reason, decoded.detail);
      return;
    }
    if (!this.ownPartition(subject, decoded.value.cc_partition)) return;
    if (this.ctx.isLeader()) this.ctx.events.emit({ kind: 'updated', app: decoded.value.droplet });
  };

  /**
   * The instances this stage keeps, in one pass that allocates only when something is left out:
   * those of another cc_partition (when cc_partition is set), counted and named once per agent
   * and value, and those with an empty version, which the store cannot key.
   */
  private keep(agent: string, droplets: readonly DropletMessage[], subject: string): readonly DropletMessage[] {
    const mine = this.opts.cc_partition;
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
        this.noticePartition(agent, d.cc_partition);
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
    if (otherPartition > 0) this.dropped.inc({ subject, reason: 'other_cc_partition' }, otherPartition);
    return kept;
  }

  private noticePartition(agent: string, theirs: string | undefined): void {
    this.lastForeign = { theirs: theirs ?? null, at: this.clock.now() };
    const key = theirs === undefined ? `${agent}\u0000` : `${agent}\u0000=${theirs}`;
    if (this.partitionNotices.has(key) || this.partitionNotices.size >= MAX_PARTITION_NOTICES) return;
    this.partitionNotices.add(key);
    const mine = JSON.stringify(this.opts.cc_partition);
    const text =
      theirs === undefined
        ? `agent ${agent} heartbeats instances without a cc_partition, this stage keeps only ${mine}: remove sources.${this.ctx.id}.cc_partition to keep them`
        : `agent ${agent} heartbeats instances of cc_partition ${JSON.stringify(theirs)}, this stage keeps only ${mine}: set sources.${this.ctx.id}.cc_partition: ${theirs}`;
    this.logger.warn({ agent, cc_partition: theirs ?? null, kept_cc_partition: this.opts.cc_partition }, text);
  }

  /**
   * dea.advertise keeps actual state fresh where nothing heartbeats. HM9000 bumped on any message
   * once no heartbeat had been received for the freshness TTL (and on every one before the first
   * heartbeat). But an agent that runs instances heartbeats them: an advertise naming instances
   * while nothing heartbeats shows heartbeats being lost, and then advertises must not stand in
   * for them. So by default an advertise bumps only when it is valid, names no instance, and no
   * advertise named any within the freshness TTL. One that names instances in that silence also
   * revokes the freshness advertises made: otherwise the marker would hold for up to a TTL more,
   * and the analyzer would start that agent's unseen instances again elsewhere. Freshness made by
   * heartbeat saves is left to lapse on its own, as when no advertise comes at all.
   */
  private readonly onAdvertise = (msg: BusMessage): void => {
    if (!this.running) return;
    const now = this.clock.now();
    const ttl = this.ctx.freshness.actualTtlMs;
    const silent = this.lastReceived === undefined || now - this.lastReceived >= ttl;
    if (this.opts.advertise_payload === 'ignored') {
      if (silent) this.bumpFromAdvertise(now);
      return;
    }
    const decoded = decodeAdvertise(msg.data);
    if (!decoded.ok) {
      this.drops.drop(this.opts.advertise_subject, decoded.reason, decoded.detail);
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
    this.bumpFromAdvertise(now);
  };

  private bumpFromAdvertise(now: number): void {
    // Only the leader writes freshness, as only it saves heartbeats.
    if (!this.ctx.isLeader()) return;
    this.lastAdvertiseBump = now;
    this.track(this.bumpActual('dea.advertise'));
  }

  /** An advertise named instances while no heartbeat arrives: said in /v1/status and the log, and advertise-made freshness undone. */
  private heartbeatsLost(agent: string, instances: number, now: number): void {
    const ttl = this.ctx.freshness.actualTtlMs;
    const text = `agent ${agent} advertises ${instances} instance(s) but no heartbeat arrived within the actual freshness TTL (${ttl}ms): its heartbeats are missing, so advertises do not keep actual state fresh until heartbeats arrive`;
    this.ctx.freshness.setReason('actual', text);
    const held = this.lastAdvertiseBump !== undefined && (this.lastReceived === undefined || this.lastAdvertiseBump >= this.lastReceived);
    if (held && this.ctx.isLeader()) {
      this.lastAdvertiseBump = undefined;
      this.track(this.revokeActual(text));
    }
    const line = this.lostLog.pass('', now);
    if (line) this.logger.warn({ agent, instances, ...(line.heldBack ? { advertised_since_last_log: line.heldBack } : {}) }, text);
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  // --- the sync loop ---

  private tick(): void {
    if (!this.running) return;
    this.ingestLag.probe();
    const started = this.clock.now();
    void this.syncNow()
      .catch((err: unknown) => this.logger.error({ error: errorText(err) }, `heartbeat sync failed unexpectedly: ${errorText(err)}`))
      .finally(() => {
        if (!this.running) return;
        // A ticker: the period runs from the start of a sync; a late sync is followed at once.
        this.timer = this.clock.setTimeout(
          () => {
            this.timer = undefined;
            this.tick();
          },
          Math.max(0, started + this.opts.sync_interval - this.clock.now()),
        );
      });
  }

  private async sync(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.ingestLag.saving();
    try {
      await this.save(batch);
    } finally {
      this.ingestLag.saveEnded();
    }
  }

  private async save(batch: ReadonlyMap<string, readonly DropletMessage[]>): Promise<void> {
    // A standby drops what it heard: the leader's own heartbeat stream makes its freshness.
    if (!this.ctx.isLeader()) return;
    const ttl = this.opts.heartbeat_ttl;
    const t0 = this.clock.now();
    const heartbeats: AgentHeartbeat[] = [];
    const nextSaved: SavedAgent[] = [];
    let instanceCount = 0;
    for (const [agent, droplets] of batch) {
      const instances = this.normalise(agent, droplets, t0);
      instanceCount += instances.length;
      heartbeats.push({ agent, instances });
      nextSaved.push({ expiresAt: t0 + ttl, droplets, instances });
    }

    try {
      await this.ctx.store.saveHeartbeats(heartbeats, ttl);
    } catch (err) {
      // What the store holds for these agents is unknown now: write them in full next time.
      for (const hb of heartbeats) this.savedAgents.delete(hb.agent);
      await this.saveFailed(errorText(err));
      return;
    }
    const took = this.clock.now() - t0;
    this.saveDuration.observe(took / 1000);
    this.saved.inc(instanceCount);
    for (let i = 0; i < heartbeats.length; i++) this.savedAgents.set(heartbeats[i]!.agent, nextSaved[i]!);
    this.pruneSaved(t0);
    this.storeError = null;
    if (took < this.saveDeadline) {
      await this.bumpActual('heartbeat save');
    } else {
      this.logger.warn(
        { took_ms: took, save_deadline_ms: this.saveDeadline, agents: heartbeats.length },
        `save took too long (${took}ms); not bumping freshness`,
      );
      this.ctx.freshness.setReason('actual', `saving heartbeats took ${took}ms, not less than save_deadline (${this.saveDeadline}ms): not bumping freshness`);
    }
  }

  /**
   * The instances to save for one agent, by guid (a guid reported twice counts once, the later
   * report winning). An instance whose state equals the one saved before — earlier in this
   * heartbeat or in the agent's last saved heartbeat — keeps the saved index and state timestamp.
   */
  private normalise(agent: string, droplets: readonly DropletMessage[], now: number): readonly InstanceHeartbeat[] {
    const savedAgent = this.savedAgents.get(agent);
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

  /** Forget agents whose presence has lapsed, at most once per heartbeat_ttl. */
  private pruneSaved(now: number): void {
    if (now - this.lastPrune < this.opts.heartbeat_ttl) return;
    this.lastPrune = now;
    for (const [agent, s] of this.savedAgents) if (s.expiresAt <= now) this.savedAgents.delete(agent);
  }

  private async saveFailed(error: string): Promise<void> {
    this.saveFailures.inc();
    this.storeError = `saving heartbeats to the store failed: ${error}`;
    this.logger.error({ error }, this.storeError);
    this.ctx.freshness.setReason('actual', this.storeError);
    try {
      await this.ctx.store.revokeFreshness('actual');
    } catch (err) {
      this.logger.error({ error: errorText(err) }, `revoking actual freshness failed: ${errorText(err)}`);
    }
  }

  /** Revokes actual freshness that advertises made; the reason is already set. */
  private async revokeActual(why: string): Promise<void> {
    try {
      await this.ctx.store.revokeFreshness('actual');
    } catch (err) {
      this.logger.error({ error: errorText(err), why }, `revoking actual freshness failed: ${errorText(err)}`);
    }
  }

  private async bumpActual(why: string): Promise<void> {
    try {
      await this.ctx.store.bumpFreshness('actual', this.ctx.freshness.actualTtlMs);
      this.ctx.freshness.setReason('actual', null);
    } catch (err) {
      const text = `bumping actual freshness after a ${why} failed: ${errorText(err)}`;
      this.storeError = text;
      this.logger.error({ error: errorText(err) }, text);
      this.ctx.freshness.setReason('actual', text);
    }
  }
}
