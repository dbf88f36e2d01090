/**
 * `hmgate simulate --live`: a foundation of real messages for load tests. Agents publish real
 * dea.heartbeat messages to the config's NATS every heartbeat interval, spread evenly over it; a
 * simulated Cloud Controller serves the bulk API on a loopback port; with --obey the agents carry
 * out the start and stop orders they hear (on NATS, or POSTed by the hm9000-http notifier). Runs
 * until stop() (SIGINT/SIGTERM in the CLI) or its duration, then reports what it sent and how late.
 */
import { connect, type NatsConnection, type Subscription } from 'nats';
import type { LoadedConfig } from '../config/load.js';
import { maskUrl } from '../config/mask.js';
import { natsConnectSettings } from '../bus/nats-url.js';
import { counted } from '../sdk/summary.js';
import { LiveCloudController, type LiveCcStats } from './live-cc.js';
import { LiveFoundation } from './live-foundation.js';

export interface LiveOptions {
  agents: number;
  instancesPerAgent: number;
  instancesPerApp: number;
  /** Share of all instances restarted each heartbeat period (0–1). */
  churn: number;
  seed: number;
  heartbeatMs: number;
  /** Real time to run; undefined: until stop(). */
  durationMs?: number;
  /** Carry out start and stop orders. */
  obey: boolean;
  /** When instance 0 (app 0, index 0) vanishes, ms after the start. */
  removeAtMs?: number;
  nats: { servers: string[]; user?: string; password?: string; token?: string };
  heartbeatSubject: string;
  startSubject: string;
  stopSubject: string;
  /** Answer bulk API credentials requests here (the bulk-api source's credentials: nats). */
  credentialsSubject?: string;
  cc: { host: string; port: number; user: string; password: string };
  /**
   * Called with every start and stop order heard (NATS or HTTP), before it is carried out, so a
   * watcher can judge it against the foundation as it is at that moment (test/chaos).
   */
  onOrder?: (action: 'start' | 'stop', body: Record<string, unknown>) => void;
}

export interface LiveSummary {
  agents: number;
  instances: number;
  apps: number;
  ranMs: number;
  heartbeats: number;
  bytes: number;
  lag: { p50: number; p99: number; max: number };
  restarts: number;
  starts: { obeyed: number; ignored: number };
  stops: { obeyed: number; ignored: number };
  cc: LiveCcStats;
  ccUrl: string;
}

/** Publish lag in whole ms; the last bucket holds everything later. */
const LAG_BUCKETS = 60_001;
/** At most this many heartbeats are published before the event loop gets a turn. */
const PUBLISH_BURST = 500;
/**
 * Bytes published and not yet confirmed by the server (a flush) before publishing waits: a NATS
 * that cannot keep up (it holds back a publisher whose subscriber is slow) makes the heartbeats
 * late, which the lag shows, instead of piling up in this process.
 */
const MAX_UNFLUSHED_BYTES = 16 * 1024 * 1024;
const DRAIN_TIMEOUT_MS = 2_000;

/** Lags in whole ms, up to `buckets` - 1 ms; later ones count in the last bucket. */
export class LagHistogram {
  private readonly counts: Uint32Array;
  n = 0;
  max = 0;

  constructor(private readonly buckets = LAG_BUCKETS) {
    this.counts = new Uint32Array(buckets);
  }

  add(ms: number): void {
    const b = Math.min(this.buckets - 1, Math.max(0, Math.floor(ms)));
    this.counts[b]!++;
    this.n++;
    if (ms > this.max) this.max = ms;
  }

  quantile(q: number): number {
    if (this.n === 0) return 0;
    const want = Math.ceil(q * this.n);
    let seen = 0;
    for (let b = 0; b < this.buckets; b++) {
      seen += this.counts[b]!;
      if (seen >= want) return b;
    }
    return this.buckets - 1;
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class LiveSimulator {
  readonly foundation: LiveFoundation;
  private nc: NatsConnection | undefined;
  private cc: LiveCloudController | undefined;
  private url = '';
  private readonly subs: Subscription[] = [];
  private timer: ReturnType<typeof setTimeout> | undefined;
  private endTimer: ReturnType<typeof setTimeout> | undefined;
  private removeTimer: ReturnType<typeof setTimeout> | undefined;
  private t0 = 0;
  private next = 0;
  private stopped = false;
  private stopping: Promise<LiveSummary> | undefined;
  private finished!: (s: LiveSummary) => void;
  /** Resolves with the summary once the run ended (duration or stop()). */
  readonly done: Promise<LiveSummary>;
  private readonly lag = new LagHistogram();
  private heartbeats = 0;
  private bytes = 0;
  private readonly starts = { obeyed: 0, ignored: 0 };
  private readonly stops = { obeyed: 0, ignored: 0 };
  private period = { n: 0, heartbeats: 0, bytes: 0, lagMax: 0, restartsAt: 0 };
  private unflushed = 0;
  private flushing: Promise<void> | undefined;
  /** Agents that publish no heartbeat for now; their instances keep running (see silence()). */
  private readonly silent = new Set<number>();

  constructor(
    readonly o: LiveOptions,
    private readonly say: (line: string) => void = () => undefined,
    /** The foundation to simulate (one that can change, for the demo); by default one made from the options. */
    foundation?: LiveFoundation,
  ) {
    for (const [name, v] of [
      ['agents', o.agents],
      ['instances', o.instancesPerAgent],
      ['per-app', o.instancesPerApp],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} must be a whole number > 0, not ${v}`);
    }
    if (!(o.churn >= 0 && o.churn <= 1)) throw new Error(`--churn must be between 0 and 1, not ${o.churn}`);
    if (!(o.heartbeatMs > 0)) throw new Error(`the heartbeat interval must be > 0, not ${o.heartbeatMs}`);
    this.foundation =
      foundation ??
      new LiveFoundation(
        { agents: o.agents, instancesPerAgent: o.instancesPerAgent, instancesPerApp: o.instancesPerApp, churn: o.churn, seed: o.seed },
        Date.now(),
      );
    this.done = new Promise((r) => (this.finished = r));
  }

  /** The simulated Cloud Controller's base URL (after start). */
  get ccUrl(): string {
    if (!this.url) throw new Error('the live simulator is not started');
    return this.url;
  }

  async start(): Promise<void> {
    const f = this.foundation;
    this.cc = new LiveCloudController(f, { ...this.o.cc, onOrder: (action, body) => this.order(action, body) });
    try {
      await this.cc.start();
    } catch (err) {
      throw new Error(`the simulated Cloud Controller cannot listen on ${this.o.cc.host}:${this.o.cc.port}: ${(err as Error).message}`, { cause: err });
    }
    this.url = this.cc.url;
    try {
      const nats = natsConnectSettings(this.o.nats.servers, this.o.nats).settings;
      this.nc = await connect({
        ...nats,
        name: 'hmgate-simulate',
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        timeout: 5_000,
      });
    } catch (err) {
      await this.cc.stop();
      throw new Error(`cannot connect to NATS at ${this.o.nats.servers.map(maskUrl).join(', ')}: ${maskUrl((err as Error).message)}`, { cause: err });
    }
    if (this.o.obey || this.o.onOrder) {
      for (const [subject, action] of [
        [this.o.startSubject, 'start'],
        [this.o.stopSubject, 'stop'],
      ] as const) {
        this.subs.push(
          this.nc.subscribe(subject, {
            callback: (err, m) => {
              if (err) return;
              try {
                this.order(action, JSON.parse(decoder.decode(m.data)) as Record<string, unknown>);
              } catch {
                (action === 'start' ? this.starts : this.stops).ignored++;
              }
            },
          }),
        );
      }
    }
    if (this.o.credentialsSubject) {
      const reply = encoder.encode(JSON.stringify({ user: this.o.cc.user, password: this.o.cc.password }));
      this.subs.push(this.nc.subscribe(this.o.credentialsSubject, { callback: (err, m) => !err && m.respond(reply) }));
    }
    await this.nc.flush();
    this.say(
      `live simulation: ${counted(this.o.agents, 'agent')} × ${counted(this.o.instancesPerAgent, 'instance')} (${counted(f.instances, 'instance')}, ${counted(f.apps, 'app')} of ${this.o.instancesPerApp}), ` +
        `heartbeat ${this.o.heartbeatMs / 1000}s on ${this.o.heartbeatSubject}, churn ${(this.o.churn * 100).toFixed(2)}% per heartbeat${this.o.obey ? ', obeying orders' : ''}`,
    );
    this.say(`bulk API: ${this.url} (user ${this.o.cc.user})`);
    this.t0 = Date.now();
    if (this.o.durationMs !== undefined) this.endTimer = setTimeout(() => void this.stop(), this.o.durationMs);
    if (this.o.removeAtMs !== undefined) {
      this.removeTimer = setTimeout(() => {
        const guid = f.currentGuid(0);
        if (f.remove(0)) this.say(`removed instance ${guid} (app ${f.desiredApp(0).id}, index 0) from agent ${f.agentOf(0)}`);
      }, this.o.removeAtMs);
    }
    this.step();
  }

  /** Ends the run: stops publishing, drains NATS, closes the bulk API. Idempotent. */
  stop(): Promise<LiveSummary> {
    this.stopping ??= (async () => {
      this.stopped = true;
      for (const t of [this.timer, this.endTimer, this.removeTimer]) clearTimeout(t);
      for (const s of this.subs.splice(0)) s.unsubscribe();
      const nc = this.nc;
      if (nc) {
        // Bounded: a NATS that went away must not hold up the exit.
        await Promise.race([nc.drain().catch(() => undefined), new Promise((r) => setTimeout(r, DRAIN_TIMEOUT_MS).unref())]);
        if (!nc.isClosed()) await nc.close().catch(() => undefined);
      }
      await this.cc?.stop();
      const summary = this.summary();
      this.finished(summary);
      return summary;
    })();
    return this.stopping;
  }

  summary(): LiveSummary {
    const f = this.foundation;
    return {
      agents: this.o.agents,
      instances: f.instances,
      apps: f.apps,
      ranMs: this.t0 ? Date.now() - this.t0 : 0,
      heartbeats: this.heartbeats,
      bytes: this.bytes,
      lag: { p50: this.lag.quantile(0.5), p99: this.lag.quantile(0.99), max: Math.round(this.lag.max) },
      restarts: f.restarts,
      starts: { ...this.starts },
      stops: { ...this.stops },
      cc: this.cc ? { ...this.cc.stats } : { pages: 0, fetches: 0, refused: 0 },
      ccUrl: this.url,
    };
  }

  /**
   * Agents fall silent: they publish no heartbeat until unsilence(), while their instances keep
   * running (a partitioned or paused agent). Their state stands still meanwhile: restarts and
   * STARTING → RUNNING are applied at their next published heartbeat.
   */
  silence(agents: Iterable<number>): void {
    for (const d of agents) this.silent.add(d);
  }

  /** The given agents (all, when omitted) heartbeat again from their next turn. */
  unsilence(agents?: Iterable<number>): void {
    if (agents === undefined) this.silent.clear();
    else for (const d of agents) this.silent.delete(d);
  }

  /** True while agent d publishes no heartbeat. */
  isSilent(d: number): boolean {
    return this.silent.has(d);
  }

  private order(action: 'start' | 'stop', body: Record<string, unknown>): void {
    if (this.stopped) return;
    this.o.onOrder?.(action, body);
    if (!this.o.obey) return;
    const f = this.foundation;
    const ok =
      action === 'start' ? f.start(String(body.droplet), String(body.version), Number(body.instance_index), Date.now()) : f.stop(String(body.instance_guid));
    (action === 'start' ? this.starts : this.stops)[ok ? 'obeyed' : 'ignored']++;
  }

  /**
   * Publishes every heartbeat that is due: agent d of period k at t0 + k × interval + d × interval
   * / agents. A late run catches up in bursts, each followed by a turn of the event loop.
   */
  private step(): void {
    this.timer = undefined;
    if (this.stopped) return;
    const { agents, heartbeatMs } = this.o;
    const nc = this.nc!;
    let now = Date.now();
    for (let burst = 0; burst < PUBLISH_BURST; burst++) {
      if (this.unflushed >= MAX_UNFLUSHED_BYTES) {
        this.flush();
        return; // step() again once the server has taken what was sent
      }
      const k = Math.floor(this.next / agents);
      const d = this.next % agents;
      const due = this.t0 + k * heartbeatMs + (d * heartbeatMs) / agents;
      if (due > now) {
        if (this.unflushed >= 1024 * 1024) this.flush();
        this.timer = setTimeout(() => this.step(), Math.max(1, Math.min(20, Math.ceil(due - now))));
        return;
      }
      if (d === 0) this.newPeriod(k);
      if (this.silent.has(d)) {
        this.next++;
        continue;
      }
      const body = Buffer.from(this.foundation.heartbeat(d, now), 'utf8');
      nc.publish(this.o.heartbeatSubject, body);
      this.unflushed += body.byteLength;
      this.heartbeats++;
      this.bytes += body.byteLength;
      this.period.heartbeats++;
      this.period.bytes += body.byteLength;
      this.lag.add(now - due);
      this.period.lagMax = Math.max(this.period.lagMax, now - due);
      this.next++;
      now = Date.now();
    }
    this.timer = setTimeout(() => this.step(), 0);
  }

  /** A round trip to the server; what was published before it is then off this process's hands. */
  private flush(): void {
    if (this.flushing || this.stopped) return;
    const sent = this.unflushed;
    this.flushing = this.nc!.flush()
      .catch(() => undefined)
      .then(() => {
        this.unflushed = Math.max(0, this.unflushed - sent);
        this.flushing = undefined;
        if (this.timer === undefined && !this.stopped) this.step();
      });
  }

  private newPeriod(k: number): void {
    const f = this.foundation;
    if (k > 0) {
      const p = this.period;
      this.say(
        `period ${k - 1}: ${counted(p.heartbeats, 'heartbeat')} (${(p.bytes / 1048576).toFixed(1)} MiB), ${counted(f.restarts - p.restartsAt, 'restart')}, publish lag max ${Math.round(p.lagMax)} ms`,
      );
      if (this.o.churn > 0) f.planChurn();
    }
    this.period = { n: k, heartbeats: 0, bytes: 0, lagMax: 0, restartsAt: f.restarts };
  }
}

/** The live simulator's options from a loaded config and the command-line values. */
export function liveOptionsFromConfig(
  loaded: LoadedConfig,
  a: {
    agents: number;
    instancesPerAgent: number;
    instancesPerApp: number;
    churn: number;
    seed: number;
    durationMs?: number;
    obey: boolean;
    removeAtMs?: number;
    ccPort?: number;
  },
): LiveOptions {
  const { config } = loaded;
  const stage = (plugin: string) => loaded.stages.find((s) => s.plugin.name === plugin)?.options as Record<string, unknown> | undefined;
  const hb = stage('heartbeat');
  const notifier = stage('notifier');
  const bulk = stage('bulk-api');
  const str = (v: unknown, dflt: string) => (typeof v === 'string' && v !== '' ? v : dflt);
  // The port the config's bulk-api url names, when it is plain http on this machine.
  let port = a.ccPort;
  if (port === undefined && typeof bulk?.url === 'string') {
    try {
      const u = new URL(bulk.url);
      if (u.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname) && u.port !== '') port = Number(u.port);
    } catch {
      /* the config validated it */
    }
  }
  return {
    agents: a.agents,
    instancesPerAgent: a.instancesPerAgent,
    instancesPerApp: a.instancesPerApp,
    churn: a.churn,
    seed: a.seed,
    heartbeatMs: loaded.heartbeatMs,
    durationMs: a.durationMs,
    obey: a.obey,
    removeAtMs: a.removeAtMs,
    nats: { servers: config.bus.servers, user: config.bus.user, password: config.bus.password, token: config.bus.token },
    heartbeatSubject: str(hb?.subject, 'dea.heartbeat'),
    startSubject: str(notifier?.start_subject, 'hm9000.start'),
    stopSubject: str(notifier?.stop_subject, 'hm9000.stop'),
    credentialsSubject: bulk?.credentials === 'nats' ? str(bulk.credentials_subject, 'cloudcontroller.bulk.credentials.default') : undefined,
    cc: {
      host: '127.0.0.1',
      port: port ?? 0,
      user: str(bulk?.user, 'bulk_api'),
      password: typeof bulk?.password === 'string' ? bulk.password : 'bulk-password',
    },
  };
}

export function formatLiveSummary(s: LiveSummary): string {
  const mib = (b: number) => (b / 1048576).toFixed(1);
  return [
    `simulated ${counted(s.agents, 'agent')} × ${counted(s.instances / s.agents, 'instance')} (${counted(s.instances, 'instance')}, ${counted(s.apps, 'app')}) live for ${(s.ranMs / 1000).toFixed(1)}s`,
    `heartbeats sent: ${s.heartbeats} (${mib(s.bytes)} MiB); publish lag p50 ${s.lag.p50} ms, p99 ${s.lag.p99} ms, max ${s.lag.max} ms`,
    `restarts (churn): ${s.restarts}`,
    `orders obeyed: ${counted(s.starts.obeyed, 'start')}, ${counted(s.stops.obeyed, 'stop')} (ignored: ${counted(s.starts.ignored, 'start')}, ${counted(s.stops.ignored, 'stop')})`,
    `bulk API ${s.ccUrl}: ${counted(s.cc.pages, 'page')}, ${counted(s.cc.fetches, 'complete fetch', 'complete fetches')}, ${s.cc.refused} refused`,
    '',
  ].join('\n');
}
