/**
 * The engine: builds every stage from its plugin with a context of its own, starts them in
 * dependency order (store → bus → sources → policies → sinks → api), runs the analyze → dispatch
 * cycle, and stops everything in reverse. It knows no plugin by name.
 */
import { hostname } from 'node:os';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { buildApi } from '../api/app.js';
import type { StatusBody } from '../api/routes/status.js';
import { listen, type RunningServer } from '../api/server.js';
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import { createLoggerFactory, errorText, type LoggerFactory } from '../log.js';
import { RealClock, SteppedClock, VirtualClock, type Clock, type Timer } from '../sdk/clock.js';
import { AlwaysLeader } from './leadership/always-leader.js';
import { type Leadership } from '../sdk/leadership.js';
import { LeaderFitness, type FitnessCheck } from './leadership/leader-fitness.js';
import { suppressedOrdersCounter } from '../sdk/order-metrics.js';
import { FreshnessBoard } from './freshness/board.js';
import { freshnessError, isActualFresh, isDesiredFresh } from '../sdk/freshness.js';
import { AppMetrics } from './cycle/app-metrics.js';
import { buildAppViews, isStartingOrRunning, type AppView } from '../sdk/app-view.js';
import { NatsBus } from '../bus/nats-bus.js';
import type { Stage } from '../sdk/stage.js';
import type { PluginDefinition, StageContext } from '../sdk/plugin.js';
import type { Bus } from '../sdk/bus.js';
import { CycleScheduler } from './scheduler.js';
import { appKey } from '../sdk/app-key.js';
import { startKey, stopKey, type PendingStart, type PendingStop, type StoreSnapshot } from '../sdk/state.js';
import { type Store } from '../sdk/store.js';
import type { Order, SinkStage } from '../sdk/orders.js';
import type { PolicyStage } from '../sdk/policy.js';
import { analyze } from './cycle/analyzer.js';
import { dispatch, isTimeToSend, type DispatchResult } from './cycle/dispatcher.js';
import { ChangedApps } from './cycle/changed-apps.js';
import { DecisionAudit, type DecisionInput, type DecisionRecord } from '../operator/audit.js';
import {
  deriveProblems,
  ProblemTracker,
  startStopSubjects,
  type ListenerFacts,
  type ProblemEntry,
  type ProblemFacts,
  type StageFacts,
  type StateFacts,
} from '../operator/problems.js';
import { subscribersOf } from '../bus/nats-monitor.js';
import { stageSummary } from '../operator/stage-summary.js';
import { buildDump, type DumpDoc, type DumpFreshness } from '../dump/build.js';
import { EventRunner } from './event-path/event-runner.js';
import { isEventPolicy, type EventHub, type EventPolicyStage } from '../sdk/events.js';
import { DropletRegistry } from '../sdk/droplets.js';
import type { RequestOrder } from '../sdk/orders.js';
import { ShadowComparer } from '../operator/shadow.js';
import { hasVarz, type VarzSource } from '../api/routes/varz.js';

export class StageStartError extends Error {
  constructor(
    readonly stageId: string,
    readonly plugin: string,
    cause: unknown,
  ) {
    super(`stage "${stageId}" (${plugin}) failed to start: ${errorText(cause)}`);
    this.name = 'StageStartError';
  }
}

interface Running {
  id: string;
  kind: string;
  /** The config section: store, bus, sources, policies, sinks, api. */
  section: string;
  /** The plugin as written (`plugin:`). */
  plugin: string;
  /** The plugin's own name (heartbeat, bulk-api, …), for summaries and problems. */
  pluginName: string;
  /** The plugin, which describes its stages (summary, problems); none for the bus and the API. */
  definition?: PluginDefinition;
  options: Record<string, unknown>;
  stage: Stage;
  started: boolean;
}

interface StageInfo {
  section: string;
  pluginName: string;
  definition?: PluginDefinition;
  options: Record<string, unknown>;
}

/** How long the engine's own probes (the NATS monitoring endpoint) wait for an answer. */
const PROBE_TIMEOUT_MS = 5_000;

export interface EngineOptions {
  clock?: Clock;
  loggers?: LoggerFactory;
  /** Stop timeout per stage, so a stuck stage cannot hold up shutdown. */
  stopTimeoutMs?: number;
  /** The bus instead of a NATS connection (simulations on a virtual clock). */
  bus?: Bus & Stage;
  /** The random source of event policies (jitter), for reproducible runs. */
  random?: () => number;
}

const STOP_TIMEOUT_MS = 5_000;
/** With a manual clock, how long a step waits for the sources' requests (real time) before moving on. */
const MANUAL_SETTLE_MS = 10_000;

export class Engine {
  readonly clock: Clock;
  readonly loggers: LoggerFactory;
  readonly metrics = new Registry();
  readonly freshness: FreshnessBoard;
  private readonly logger: Logger;
  private readonly bus: Bus & Stage;
  private store: Store | undefined;
  private readonly running: Running[] = [];
  private readonly policies: { id: string; stage: PolicyStage }[] = [];
  private readonly sinks: { id: string; stage: SinkStage }[] = [];
  private scheduler: CycleScheduler | undefined;
  private server: RunningServer | undefined;
  private readonly cycles: Counter;
  private readonly cycleFailures: Counter;
  private readonly cycleDuration: Histogram;
  private readonly stale: Counter;
  private lastGateError: string | null = null;
  private changedApps: ChangedApps | undefined;
  /** The last decision record written to a shared store. */
  private auditPersisted = 0;
  /** Leadership: an etcd election when the store offers one, else this daemon alone leads. */
  private leadership: Leadership = new AlwaysLeader(daemonId());
  /** With an election: whether this daemon can do the leader's work, which decides whether it campaigns. */
  private fitness: LeaderFitness | undefined;
  private readonly appMetrics: AppMetrics;
  private lastCycleFailed = false;
  private readonly sentOrders: Counter<'action' | 'reason' | 'mode'>;
  private readonly suppressedOrders: Counter<'action' | 'why'>;
  /** Every decision, sent or held back, with its reason and facts (bounded). */
  readonly audit = new DecisionAudit();
  private readonly problems: ProblemTracker;
  private startedAt: number | undefined;
  /** Due messages already audited as held back during the current stale period. */
  private readonly heldBackAudited = new Set<string>();
  private listenerFacts: ListenerFacts[] = [];
  private probeTimer: Timer | undefined;
  private probeRun: Promise<void> | undefined;
  private stopping = false;
  /** Why each send of the current dispatch failed, by message id. */
  private readonly sendErrors = new Map<string, string>();
  private readonly eventPolicies: { id: string; stage: EventPolicyStage }[] = [];
  /** The event path (event policies); built once the policies are. */
  private runner: EventRunner | undefined;
  /** With `clock: manual`: the clock that moves only on healthmanager.advance_time. */
  private readonly manualClock: VirtualClock | undefined;
  private desiredFreshCache = false;
  /** The clock below the time_resolution step. */
  private readonly preciseClock: Clock;
  /** In shadow mode: the comparison with the other health manager's requests. */
  private shadowComparer: ShadowComparer | undefined;
  private readonly shadowUnsubscribes: (() => void)[] = [];
  /** What stages see as ctx.events; forwards to the runner once it exists. */
  private readonly eventHub: EventHub;

  constructor(
    readonly loaded: LoadedConfig,
    private readonly opts: EngineOptions = {},
  ) {
    const { config } = loaded;
    // A manual clock starts at 1 s, as the Ruby HM's black-box test mode did.
    this.manualClock = !opts.clock && config.clock === 'manual' ? new VirtualClock(1000) : undefined;
    const base = opts.clock ?? this.manualClock ?? new RealClock();
    this.preciseClock = base;
    // HM9000 compared whole seconds; finer steps keep sub-second heartbeat intervals working.
    const step = Math.min(config.time_resolution, loaded.heartbeatMs);
    this.clock = step > 1 ? new SteppedClock(base, step) : base;
    this.loggers = opts.loggers ?? createLoggerFactory({ foundation: config.foundation, level: config.log.level, levels: config.log.levels });
    this.logger = this.loggers.component('engine');
    this.problems = new ProblemTracker(this.logger, () => this.clock.now());
    const f = config.freshness;
    this.freshness = new FreshnessBoard(() => this.clock.now(), f.actual_ttl, f.desired_ttl, {
      // Gaps between heartbeats are measured below the time_resolution step.
      now: () => this.preciseClock.now(),
      intervalMs: loaded.heartbeatMs,
      maxIngestLagMs: f.max_ingest_lag,
      collapse: { share: f.collapse.share, minAgents: f.collapse.min_agents, silentAfterMs: f.collapse.silent_after, windowMs: f.collapse.window },
    });
    this.metrics.setDefaultLabels({ foundation: config.foundation });
    collectDefaultMetrics({ register: this.metrics });
    this.cycles = new Counter({ name: 'hmgate_cycles_total', help: 'Analyze → dispatch cycles run', registers: [this.metrics] });
    this.cycleFailures = new Counter({ name: 'hmgate_cycle_failures_total', help: 'Cycles that ended in an error', registers: [this.metrics] });
    this.stale = new Counter({
      name: 'hmgate_cycles_not_fresh_total',
      help: 'Cycles that sent nothing because state was not fresh',
      registers: [this.metrics],
    });
    this.sentOrders = new Counter({
      name: 'hmgate_orders_sent_total',
      help: 'Starts and stops sent (mode="shadow": would have been sent), by reason',
      labelNames: ['action', 'reason', 'mode'],
      registers: [this.metrics],
    });
    this.suppressedOrders = suppressedOrdersCounter(this.metrics);
    this.appMetrics = new AppMetrics(this.metrics);
    const board = this.freshness;
    new Gauge({
      name: 'hmgate_ingest_lag_seconds',
      help: 'How far the stored actual state is behind the heartbeats (unsaved heartbeats, bus delay, slow arrivals); over freshness.max_ingest_lag it is not fresh',
      registers: [this.metrics],
      collect() {
        this.set(board.ingestLagMs() / 1000);
      },
    });
    this.cycleDuration = new Histogram({
      name: 'hmgate_cycle_duration_seconds',
      help: 'Duration of the analyze → dispatch cycle',
      buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.metrics],
    });
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const engine = this;
    const noRecords = new DropletRegistry();
    this.eventHub = {
      emit: (event) => this.runner?.emit(event),
      wants: (kind) => this.runner?.hub.wants(kind) ?? false,
      get droplets() {
        return engine.runner?.droplets ?? noRecords;
      },
    };
    const bus = config.bus;
    this.bus =
      opts.bus ??
      new NatsBus(
        {
          servers: bus.servers,
          user: bus.user,
          password: bus.password,
          token: bus.token,
          name: bus.name,
          connectTimeoutMs: bus.connect_timeout,
          // Half a heartbeat (1–5 s): a dead connection is found well within leader.resign_after.
          pingIntervalMs: Math.min(5_000, Math.max(1_000, loaded.heartbeatMs / 2)),
        },
        this.loggers.component('bus'),
      );
  }

  /** The state store, once started (for tools and tests that look inside a running engine). */
  get stateStore(): Store | undefined {
    return this.store;
  }

  /** The listening API address, once started. */
  get apiAddress(): RunningServer | undefined {
    return this.server;
  }

  private context(s: ResolvedStage): StageContext {
    const { config, heartbeatMs, file } = this.loaded;
    const engine = this;
    return {
      id: s.id,
      kind: s.kind,
      foundation: config.foundation,
      logger: this.loggers.component(s.id),
      clock: this.clock,
      heartbeatMs,
      configDir: file.replace(/[/\\][^/\\]*$/, ''),
      metrics: this.metrics,
      bus: this.bus,
      get store(): Store {
        if (!engine.store) throw new Error('the store is not available to the store stage itself');
        return engine.store;
      },
      freshness: this.freshness,
      isLeader: () => engine.leadership.isLeader,
      events: this.eventHub,
    };
  }

  private async startStage(id: string, kind: string, plugin: string, info: StageInfo, build: () => Promise<Stage>): Promise<Stage> {
    const entry: Running = { id, kind, plugin, ...info, stage: {}, started: false };
    try {
      entry.stage = await build();
      await entry.stage.start?.();
      // Only started stages are stopped: a stage whose start failed cleans up after itself.
      entry.started = true;
      this.running.push(entry);
      // One readable line per stage: what it does, with its main options.
      this.logger.info({ stage: id, kind, plugin }, stageSummary({ id, kind, plugin: info.pluginName, definition: info.definition, options: info.options }));
      return entry.stage;
    } catch (err) {
      throw new StageStartError(id, plugin, err);
    }
  }

  async start(): Promise<void> {
    const stages = this.loaded.stages;
    try {
      const storeStage = stages.find((s) => s.section === 'store');
      if (!storeStage) throw new StageStartError('store', '(none)', new Error('no store configured'));
      this.startedAt = this.clock.now();
      this.store = (await this.startStage('store', 'store', storeStage.pluginSpec, this.info(storeStage), async () =>
        storeStage.plugin.create(storeStage.options, this.context(storeStage)),
      )) as Store;
      this.startLeadership(this.store);
      const busName = this.opts.bus ? 'in-process' : 'nats';
      const busInfo: StageInfo = { section: 'bus', pluginName: busName, options: this.opts.bus ? {} : { servers: this.loaded.config.bus.servers } };
      await this.startStage('bus', 'bus', busName, busInfo, async () => this.bus);
      // Consumers first: sources raise events from their first message on.
      for (const section of ['policies', 'sinks', 'sources'] as const) {
        if (section === 'sources') this.buildRunner();
        for (const s of stages.filter((x) => x.section === section)) {
          const stage = await this.startStage(s.id, s.kind, s.pluginSpec, this.info(s), async () => {
            const created = await s.plugin.create(s.options, this.context(s));
            // The contract of each kind, checked at boot so a broken plugin fails naming itself.
            if (section === 'policies' && typeof (created as PolicyStage).evaluate !== 'function' && !isEventPolicy(created))
              throw new Error('a policy plugin must return a stage with evaluate(input), or events and handle(input)');
            if (section === 'sinks' && typeof (created as SinkStage).send !== 'function') throw new Error('a sink plugin must return a stage with send(order)');
            return created;
          });
          if (section === 'policies' && typeof (stage as PolicyStage).evaluate === 'function') this.policies.push({ id: s.id, stage: stage as PolicyStage });
          if (section === 'policies' && isEventPolicy(stage)) this.eventPolicies.push({ id: s.id, stage });
          if (section === 'sinks') this.sinks.push({ id: s.id, stage: stage as SinkStage });
        }
      }
      const api = this.loaded.config.api;
      if (api.enabled) {
        await this.startStage('api', 'api', 'hono', { section: 'api', pluginName: 'hono', options: { listen: api.listen } }, async () => {
          const app = buildApi({
            user: api.user,
            password: api.password,
            status: () => this.status(),
            metrics: this.metrics,
            beforeMetrics: () => this.refreshAppMetrics(),
            appState: { snapshot: () => this.store!.snapshot(), fresh: () => this.bothFresh(), logger: this.loggers.component('api') },
            confirmLoss: () => this.confirmLoss(),
            inspect: {
              dump: () => this.dump(),
              snapshot: () => this.store!.snapshot(),
              now: () => this.clock.now(),
              audit: this.audit,
              records: { peek: (guid) => this.eventHub.droplets.peek(guid) },
            },
            shadow: () => this.shadowComparer,
            ...this.varzSource(),
            logger: this.loggers.component('api'),
          });
          return {
            start: async () => {
              this.server = await listen(app, api.listen);
              this.logger.info({ listen: `${this.server.host}:${this.server.port}` }, `API listening on ${this.server.host}:${this.server.port}`);
            },
            stop: async () => this.server?.close(),
          };
        });
      }
    } catch (err) {
      this.logger.error({ error: errorText(err) }, errorText(err));
      await this.stopStages();
      throw err;
    }
    this.scheduler = new CycleScheduler(
      this.clock,
      this.loaded.config.analyze_interval,
      () => this.cycle(),
      this.loggers.component('engine'),
      (ms, ok) => {
        this.cycles.inc();
        this.lastCycleFailed = !ok;
        if (!ok) this.cycleFailures.inc();
        this.cycleDuration.observe(ms / 1000);
      },
    );
    this.scheduler.start();
    this.startShadowing();
    this.runner?.start();
    this.startManualClock();
    this.startListenerProbe();
  }

  /**
   * In shadow mode, listens to the subjects the sinks would publish to (or dispatch.shadow.subjects):
   * what arrives there comes from the health manager still in charge.
   */
  private startShadowing(): void {
    const { config } = this.loaded;
    if (config.dispatch.mode !== 'shadow') return;
    const comparer = new ShadowComparer(config.dispatch.shadow.window, this.loggers.component('shadow'), () => this.clock.now());
    this.shadowComparer = comparer;
    const subjects = config.dispatch.shadow.subjects ?? [...new Set(this.sinks.flatMap(({ stage }) => stage.publishSubjects?.() ?? []))];
    const text = new TextDecoder();
    for (const subject of subjects) this.shadowUnsubscribes.push(this.bus.subscribe(subject, (msg) => comparer.addTheirs(msg.subject, text.decode(msg.data))));
    this.logger.info(
      { subjects, window_ms: comparer.windowMs },
      `shadow mode: comparing with the requests on ${subjects.join(', ') || '(no subject: set dispatch.shadow.subjects)'}`,
    );
  }

  /** In shadow mode, what a sink would have put on the wire joins the comparison. */
  private shadowOurs(order: Order): void {
    if (!this.shadowComparer) return;
    for (const { stage } of this.sinks) {
      const wire = stage.render?.(order);
      if (wire) this.shadowComparer.addOurs(wire.subject, wire.body);
    }
  }

  /** The first stage that keeps the Ruby HM's statistics, for GET /varz. */
  private varzSource(): { varz?: VarzSource } {
    const keeper = this.running.find((r) => hasVarz(r.stage));
    return keeper ? { varz: () => (keeper.stage as unknown as { varz(): Record<string, unknown> }).varz() } : {};
  }

  /** The event path, if any policy handles events. */
  private buildRunner(): void {
    if (this.eventPolicies.length === 0) return;
    const { config } = this.loaded;
    const mode = config.dispatch.mode;
    this.runner = new EventRunner({
      clock: this.clock,
      logger: this.loggers.component('dispatcher'),
      policies: this.eventPolicies,
      send: (order) => this.send(order),
      onSent: (order) => {
        this.sentOrders.inc({ action: order.request.op.toLowerCase(), reason: order.reason, mode });
        if (mode === 'shadow') this.shadowOurs(order);
        if (mode === 'live') this.audit.record(requestRecord(order, this.clock.now(), 'sent', {}));
      },
      onDecided: (order, delivery, facts) => {
        this.audit.record(requestRecord(order, this.clock.now(), 'enqueued', { ...facts, delivery }));
        // The Ruby HM's varz queue_length was the queue's size at the last insert.
        if (delivery === 'queued')
          for (const r of this.running) (r.stage as { setQueueLength?: (n: number) => void }).setQueueLength?.(this.runner!.queue.size);
      },
      onSuppressed: (order, why, detail) => {
        this.suppressedOrders.inc({ action: order.request.op.toLowerCase(), why });
        this.audit.record(requestRecord(order, this.clock.now(), 'suppressed', {}, why, detail));
      },
      shadow: mode === 'shadow',
      // The guards hold even without the gate: they stop mass action on state known to be wrong.
      mayAct: () => (!config.freshness.gate || this.lastGateError === null) && !this.freshness.actualHeld(),
      isLeader: () => this.leadership.isLeader,
      desiredAvailable: () => this.desiredAvailable(),
      ...(this.opts.random ? { random: this.opts.random } : {}),
      busConnected: () => this.bus.connected,
      analyzeEveryMs: config.analyze_interval,
      analysisSlice: config.events.analysis_slice,
      runLoopMs: config.events.run_loop,
      timerClock: this.preciseClock,
      queue: { intervalMs: config.dispatch.queue.interval, batchSize: config.dispatch.queue.batch_size, dedupe: config.dispatch.queue.dedupe },
      refreshDesired: () => {
        for (const r of this.running) {
          const source = r.stage as { refreshDesired?: () => void | Promise<void> };
          if (r.section === 'sources' && typeof source.refreshDesired === 'function') {
            void Promise.resolve(source.refreshDesired()).catch((err: unknown) =>
              this.logger.warn({ stage: r.id, error: errorText(err) }, `desired refresh failed: ${errorText(err)}`),
            );
          }
        }
      },
    });
  }

  /** Desired state available: what the desired-state sources say, else the desired marker. */
  private desiredAvailable(): boolean {
    let answered = false;
    for (const r of this.running) {
      const source = r.stage as { desiredAvailable?: () => boolean };
      if (typeof source.desiredAvailable !== 'function') continue;
      answered = true;
      if (source.desiredAvailable()) return true;
    }
    return answered ? false : this.desiredFreshCache;
  }

  /** With `clock: manual`, time moves only on `healthmanager.advance_time {"seconds":N}`, a second at a time. */
  private startManualClock(): void {
    const clock = this.manualClock;
    if (!clock) return;
    const logger = this.loggers.component('engine');
    let advancing: Promise<void> = Promise.resolve();
    const unsubscribe = this.bus.subscribe('healthmanager.advance_time', (msg) => {
      let seconds: unknown;
      try {
        seconds = (JSON.parse(new TextDecoder().decode(msg.data)) as { seconds?: unknown }).seconds;
      } catch {
        seconds = undefined;
      }
      if (typeof seconds !== 'number' || !Number.isInteger(seconds) || seconds < 0 || seconds > 86_400) {
        logger.warn({ subject: msg.subject }, 'healthmanager.advance_time ignored: expected {"seconds": N} with N a whole number of seconds from 0 to 86400');
        return;
      }
      advancing = advancing.then(async () => {
        for (let i = 0; i < seconds; i++) {
          await this.sourcesSettled();
          await clock.advanceAsync(1000);
        }
        await this.sourcesSettled();
        logger.info({ seconds, now: clock.now() }, `clock advanced by ${seconds}s`);
        if (msg.reply) this.bus.publish(msg.reply, JSON.stringify({ seconds }));
      });
    });
    this.stopManualClock = unsubscribe;
  }

  private stopManualClock: (() => void) | undefined;

  /** Waits (at most MANUAL_SETTLE_MS of real time) for the sources' requests in flight to end. */
  private async sourcesSettled(): Promise<void> {
    const pending = this.running.map((r) => (r.stage as { settled?: () => Promise<void> }).settled?.()).filter((p): p is Promise<void> => p !== undefined);
    if (pending.length === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(pending), new Promise((r) => (timer = setTimeout(r, MANUAL_SETTLE_MS)))]).finally(() => clearTimeout(timer));
  }

  /**
   * Joins the store's leader election, if it has one. A daemon that becomes leader revokes actual
   * freshness: it acts only after a full freshness window of heartbeats it saved itself, never on
   * what the previous leader last saw.
   */
  private startLeadership(store: Store): void {
    const elect = (store as Store & { leaderElection?: (o: { id: string; ttlSeconds: number; logger: Logger }) => Leadership }).leaderElection;
    const logger = this.loggers.component('leader');
    if (typeof elect === 'function') {
      this.leadership = elect.call(store, { id: daemonId(), ttlSeconds: Math.max(1, Math.ceil(this.loaded.config.leader.ttl / 1000)), logger });
      this.fitness = new LeaderFitness({
        leadership: this.leadership,
        checks: this.fitnessChecks(),
        resignAfterMs: this.loaded.config.leader.resign_after,
        logger,
      });
      // Before campaigning: NATS is not connected yet, so this daemon starts out of the election.
      this.fitness.evaluate();
    }
    this.leadership.onChange((leading) => {
      if (leading) {
        logger.info({ id: daemonId() }, 'this daemon leads: waiting for a full freshness window of its own heartbeats before acting');
        this.changedApps?.markAll();
        if (this.leadership instanceof AlwaysLeader) return;
        void this.adoptAudit(store);
        // Until the predecessor's marker is reset, this daemon's view of it (its store's cache) may
        // still call the state fresh: the verdict says not fresh until the reset is done.
        this.freshness.suspendActual('this daemon has just taken the lead: resetting actual freshness, then a freshness window of its own heartbeats');
        const reset = (): void => {
          void store.revokeFreshness('actual').then(
            () => this.freshness.resumeActual(),
            (err: unknown) => {
              logger.error({ error: errorText(err) }, `could not reset actual freshness: ${errorText(err)}; trying again`);
              if (this.leadership.isLeader && !this.stopping) this.clock.setTimeout(reset, 1_000);
            },
          );
        };
        reset();
      } else {
        // A standby does not act: the suspension of a reset it will not finish ends with its lead.
        this.freshness.resumeActual();
        // A shutdown resigns on purpose (and one daemon alone never hands over): nothing to warn about.
        if (this.stopping) return;
        const { why } = this.leadership.candidacy();
        logger.warn({ leader: this.leadership.leaderId(), reason: why }, `this daemon no longer leads${why ? `: ${why}` : ''}: it stops writing and sending`);
      }
    });
    this.leadership.start();
    this.fitness?.start();
  }

  /**
   * What this daemon needs to do the leader's work itself: its own NATS connection, and heartbeat
   * saves that succeed (stages that report leaderWorkError). Shared dependencies (the CC) are not
   * checked: the next leader would fare no better.
   */
  private fitnessChecks(): FitnessCheck[] {
    return [
      {
        problem: () => (this.bus.connected ? null : `not connected to NATS (${this.bus.health?.().last_error ?? 'disconnected'})`),
      },
      {
        whileLeading: true,
        problem: () => {
          for (const r of this.running) {
            const stage = r.stage as { leaderWorkError?: () => string | null };
            const error = typeof stage.leaderWorkError === 'function' ? stage.leaderWorkError() : null;
            if (error) return `stage ${r.id}: ${error}`;
          }
          return null;
        },
      },
    ];
  }

  private info(s: ResolvedStage): StageInfo {
    return { section: s.section, pluginName: s.plugin.name, definition: s.plugin, options: s.options };
  }

  /**
   * One analyze → dispatch pass (HM9000's analyzer then sender). With no policies it only records
   * itself. Nothing is decided or sent on stale state while the freshness gate is on.
   */
  private async cycle(): Promise<void> {
    let snapshot: StoreSnapshot | undefined;
    try {
      this.checkGuards();
      if (!this.leadership.isLeader) return;
      const store = this.store!;
      const { config } = this.loaded;
      const now = this.clock.now();
      if (this.policies.length === 0) {
        // Event policies only: keep the freshness verdict current for their gate and fallbacks.
        if (this.runner) {
          snapshot = await store.snapshot();
          this.desiredFreshCache = isDesiredFresh(snapshot.freshness.desired, now);
          if (config.freshness.gate) this.checkFreshness(snapshot, now);
        }
        return;
      }
      this.changedApps ??= new ChangedApps(store);
      const collected = this.changedApps.collect();
      snapshot = await store.snapshot();
      this.desiredFreshCache = isDesiredFresh(snapshot.freshness.desired, now);
      if (config.freshness.gate && !this.checkFreshness(snapshot, now)) {
        this.auditHeldBack(snapshot, now);
        this.changedApps.markAll(); // analyse everything once state is fresh again
        return;
      }
      this.heldBackAudited.clear();
      try {
        await this.analyzeAndDispatch(snapshot, now, this.changedApps.take(snapshot, collected));
      } catch (err) {
        this.changedApps.markAll();
        throw err;
      }
    } finally {
      // Problems are looked at every cycle, so each is logged when it appears and when it clears.
      await this.evaluateProblems(snapshot);
      this.shadowComparer?.expire();
      await this.persistAudit();
    }
  }

  /** With a shared store, the leader writes its new decision records beside the state. */
  private async persistAudit(): Promise<void> {
    const store = this.store as (Store & AuditStore) | undefined;
    if (!store?.appendAudit || !this.leadership.isLeader) return;
    const records = this.audit.after(this.auditPersisted);
    if (records.length === 0) return;
    try {
      await store.appendAudit(records);
      this.auditPersisted = records[records.length - 1]!.seq;
    } catch (err) {
      // Kept in memory and tried again next cycle; the store's own health says what is wrong.
      this.logger.debug({ error: errorText(err) }, 'decision audit not written to the store');
    }
  }

  /** A new leader takes in the decisions its predecessor persisted, so /v1/decisions goes on. */
  private async adoptAudit(store: Store): Promise<void> {
    const shared = store as Store & AuditStore;
    if (!shared.readAudit) return;
    try {
      const n = this.audit.adopt((await shared.readAudit(this.audit.capacity)) as DecisionInput[]);
      this.auditPersisted = this.audit.lastSeq;
      if (n > 0) this.logger.info({ records: n }, `took in ${n} decision records from the store`);
    } catch (err) {
      this.logger.warn({ error: errorText(err) }, `could not read the decision audit from the store: ${errorText(err)}`);
    }
  }

  /** The due messages the freshness gate holds back, audited once per message per stale period. */
  private auditHeldBack(snapshot: StoreSnapshot, now: number): void {
    const due: (PendingStart | PendingStop)[] = [];
    for (const m of snapshot.starts.values()) if (isTimeToSend(m, now) && !this.heldBackAudited.has(`start:${startKey(m)}`)) due.push(m);
    for (const m of snapshot.stops.values()) if (isTimeToSend(m, now) && !this.heldBackAudited.has(`stop:${stopKey(m)}`)) due.push(m);
    if (due.length === 0) return;
    const views = buildAppViews(
      snapshot,
      due.map((m) => appKey(m.app, m.version)),
    );
    const detail = `${this.lastGateError ?? 'state is not fresh'}: nothing is sent`;
    for (const m of due) {
      this.heldBackAudited.add('index' in m ? `start:${startKey(m)}` : `stop:${stopKey(m)}`);
      this.audit.record(this.heldBackRecord(m, now, views.get(appKey(m.app, m.version)), 'not_fresh', detail));
    }
  }

  private heldBackRecord(
    m: PendingStart | PendingStop,
    now: number,
    view: AppView | undefined,
    why: NonNullable<DecisionInput['why']>,
    detail: string,
  ): DecisionInput {
    const start = 'index' in m ? m : undefined;
    const stop = 'instance' in m ? m : undefined;
    const index = start ? start.index : view?.instances.find((i) => i.instance === stop!.instance)?.index;
    return {
      at: now,
      action: start ? 'start' : 'stop',
      outcome: 'suppressed',
      why,
      detail,
      reason: m.reason,
      app: m.app,
      version: m.version,
      ...(index !== undefined ? { index } : {}),
      ...(stop ? { instance: stop.instance } : {}),
      message_id: m.messageId,
      facts: { ...this.audit.enqueued(m.messageId)?.facts, ...appFacts(view, index), send_on: new Date(m.sendOn).toISOString() },
    };
  }

  private async analyzeAndDispatch(snapshot: StoreSnapshot, now: number, keys: Set<string> | undefined): Promise<void> {
    const store = this.store!;
    const { config } = this.loaded;
    const analysis = analyze(snapshot, now, this.policies, this.logger, keys);
    for (const p of analysis.enqueued) {
      const m = p.kind === 'start' ? p.start : p.stop;
      this.logger.info(
        { decision: p.kind, reason: m.reason, app: m.app, version: m.version, ...p.facts, send_in_ms: m.sendOn - now, message_id: m.messageId },
        `Enqueuing ${p.kind === 'start' ? 'Start' : 'Stop'} Message: ${p.log}`,
      );
      const view = analysis.apps.get(appKey(m.app, m.version));
      const index = p.kind === 'start' ? p.start.index : view?.instances.find((i) => i.instance === p.stop.instance)?.index;
      this.audit.record({
        at: now,
        action: p.kind,
        outcome: 'enqueued',
        reason: m.reason,
        detail: p.log,
        app: m.app,
        version: m.version,
        ...(index !== undefined ? { index } : {}),
        ...(p.kind === 'stop' ? { instance: p.stop.instance } : {}),
        message_id: m.messageId,
        facts: { ...appFacts(view, index), ...p.facts, delay_ms: m.sendOn - now },
      });
    }
    // HM9000 saves crash counts, then starts, then stops; a failure aborts the rest of the run.
    for (const { count, ttlMs } of analysis.crashCounts) await store.putCrashCounts([count], ttlMs);
    if (analysis.starts.length) await store.putPendingStarts(analysis.starts);
    if (analysis.stops.length) await store.putPendingStops(analysis.stops);
    // The decisions go beside the messages they made: a leader that dies now leaves both to its successor.
    if (analysis.starts.length || analysis.stops.length) await this.persistAudit();

    const dispatched = await store.snapshot();
    this.sendErrors.clear();
    const result = await dispatch(
      dispatched,
      now,
      (order) => this.send(order),
      { messageLimit: config.dispatch.message_limit, shadow: config.dispatch.mode === 'shadow' },
      this.logger,
    );
    for (const order of result.sent) {
      this.sentOrders.inc({ action: order.action, reason: order.reason, mode: config.dispatch.mode });
      if (config.dispatch.mode === 'shadow') this.shadowOurs(order);
      if (config.dispatch.mode === 'live') this.appMetrics.countSent(order);
    }
    for (const s of result.suppressed) this.suppressedOrders.inc({ action: s.kind, why: s.why });
    this.auditDispatch(dispatched, now, result);
    // Every step is attempted even when one fails (HM9000's sender); the first failure is reported.
    const steps = [
      () => (result.saveStarts.length ? store.putPendingStarts(result.saveStarts) : undefined),
      () => (result.deleteStarts.length ? store.deletePendingStarts(result.deleteStarts) : undefined),
      () => (result.saveStops.length ? store.putPendingStops(result.saveStops) : undefined),
      () => (result.deleteStops.length ? store.deletePendingStops(result.deleteStops) : undefined),
    ];
    let firstError: unknown;
    for (const step of steps) {
      try {
        await step();
      } catch (err) {
        firstError ??= err;
      }
    }
    if (firstError !== undefined) throw firstError;
    if (result.failures > 0) throw new Error(`${result.failures} message(s) failed to send; they are kept for the next cycle`);
  }

  /** Sent orders and held-back messages of one dispatch, with the facts they were sent on. */
  private auditDispatch(snapshot: StoreSnapshot, now: number, result: DispatchResult): void {
    if (result.sent.length === 0 && result.suppressed.length === 0) return;
    const shadow = this.loaded.config.dispatch.mode === 'shadow';
    const keys = [...result.sent, ...result.suppressed.map((s) => s.message)].map((m) => appKey(m.app, m.version));
    const views = buildAppViews(snapshot, keys);
    for (const order of result.sent) {
      const m = order.action === 'start' ? snapshot.starts.get(startKey(order)) : snapshot.stops.get(stopKey(order));
      this.audit.record({
        at: now,
        action: order.action,
        outcome: shadow ? 'suppressed' : 'sent',
        ...(shadow ? { why: 'shadow' as const, detail: 'shadow mode: would have been sent' } : {}),
        reason: order.reason,
        app: order.app,
        version: order.version,
        index: order.index,
        ...(order.action === 'stop' ? { instance: order.instance } : {}),
        message_id: order.messageId,
        facts: {
          ...this.audit.enqueued(order.messageId)?.facts,
          ...appFacts(views.get(appKey(order.app, order.version)), order.index),
          ...(order.action === 'start' ? { priority: order.priority } : { is_duplicate: order.isDuplicate }),
          ...(m ? { send_on: new Date(m.sendOn).toISOString() } : {}),
        },
      });
    }
    for (const s of result.suppressed) {
      const error = s.why === 'send_failed' ? this.sendErrors.get(s.message.messageId) : undefined;
      this.audit.record(
        this.heldBackRecord(s.message, now, views.get(appKey(s.message.app, s.message.version)), s.why, error ? `${s.detail}: ${error}` : s.detail),
      );
    }
    this.sendErrors.clear();
  }

  private async bothFresh(): Promise<boolean> {
    const s = await this.store!.snapshot();
    const now = this.clock.now();
    return (
      isActualFresh(s.freshness.actual, now, this.loaded.config.freshness.actual_ttl) &&
      !this.freshness.actualHeld() &&
      isDesiredFresh(s.freshness.desired, now)
    );
  }

  /** Re-evaluates the freshness guards (ingest lag, mass disappearance); logs each change once. */
  private checkGuards(): void {
    for (const { hold, held } of this.freshness.evaluateGuards()) {
      if (held) this.logger.warn({ guard: hold.code }, `actual state is not fresh: ${hold.reason}`);
      else
        this.logger.info(
          { guard: hold.code, lasted_ms: this.clock.now() - hold.since },
          `${hold.code === 'INGEST_BEHIND' ? 'ingest caught up' : 'the silent agents are back'}: ${hold.code} cleared`,
        );
      // Starts queued by event policies rest on the state the guard distrusts: decided again after it.
      const dropped = this.runner?.discardQueued(`${hold.code} ${held ? 'began' : 'ended'}: decided on a state not to be trusted, not sent`) ?? 0;
      if (dropped > 0) this.logger.info({ guard: hold.code, dropped }, `${dropped} queued start(s) dropped: the policies decide again on the current state`);
    }
  }

  /**
   * The operator's word that the agents lost together are gone (POST /v1/actual/confirm-loss):
   * their instances count as missing from now on. Only the leader acts on it; a standby says who leads.
   */
  confirmLoss(): { ok: true; confirmed: number } | { ok: false; error: string } {
    if (!this.leadership.isLeader) {
      const id = this.leadership.leaderId();
      return { ok: false, error: `this daemon does not lead${id ? `; ${id} does: send it there` : ' and no leader is known'}` };
    }
    this.checkGuards();
    const confirmed = this.freshness.confirmLoss();
    this.logger.warn(
      { agents: confirmed },
      confirmed > 0
        ? `an operator confirmed the loss of ${confirmed} silent agent(s): their instances count as missing now`
        : 'an operator confirmed a loss, but no collapse holds',
    );
    return { ok: true, confirmed };
  }

  /**
   * HM9000's ten NumberOf* gauges, computed when scraped (as HM9000 N's /varz did): from the current
   * state when it is fresh and the last cycle succeeded, else all -1.
   */
  private async refreshAppMetrics(): Promise<void> {
    if (!this.store || this.lastCycleFailed || !(await this.bothFresh())) {
      this.appMetrics.update(null);
      return;
    }
    this.appMetrics.update(buildAppViews(await this.store.snapshot()));
  }

  /** The freshness gate: logs each change of verdict once and counts the cycles it holds back. */
  private checkFreshness(snapshot: { freshness: StoreSnapshot['freshness'] }, now: number): boolean {
    const { config } = this.loaded;
    const actual = this.freshness.verdict('actual', snapshot.freshness.actual, now, config.freshness.actual_ttl);
    const desired = this.freshness.verdict('desired', snapshot.freshness.desired, now, config.freshness.actual_ttl);
    const gate = freshnessError(actual.fresh, desired.fresh);
    if (gate !== this.lastGateError) {
      if (gate) this.logger.warn({ actual: actual.reason, desired: desired.reason }, `${gate}: sending nothing`);
      else this.logger.info('actual and desired state are fresh');
      this.lastGateError = gate;
    }
    if (gate) this.stale.inc();
    return gate === null;
  }

  /** Sends one order through every sink; it counts as sent only if every sink took it. */
  private async send(order: Order): Promise<void> {
    // Leadership can end mid-cycle (etcd unreachable, lease lost): the message stays for the leader.
    if (!this.leadership.isLeader) throw new Error('this daemon is no longer the leader; the message is left for the leader');
    try {
      for (const { stage } of this.sinks) await stage.send(order);
    } catch (err) {
      // Kept for the audit record of this message (the dispatcher only knows that it failed).
      this.sendErrors.set(order.messageId, errorText(err));
      throw err;
    }
  }

  async status(): Promise<StatusBody> {
    const { config } = this.loaded;
    const now = this.clock.now();
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    const view = async (which: 'actual' | 'desired') => {
      const marker = this.store ? await this.store.getFreshness(which) : undefined;
      const v = this.freshness.verdict(which, marker, now, config.freshness.actual_ttl);
      return { fresh: v.fresh, since: iso(v.since), reason: v.reason };
    };
    const stages: StatusBody['stages'] = {};
    // Listed as the config reads (sources, policies, sinks), whatever order they started in.
    const order = ['store', 'bus', 'sources', 'policies', 'sinks', 'api'];
    for (const r of [...this.running].sort((a, b) => order.indexOf(a.section) - order.indexOf(b.section))) {
      const h = r.stage.health?.() ?? { healthy: r.started, last_error: null };
      stages[r.id] = { kind: r.kind, plugin: r.plugin, healthy: h.healthy, last_error: h.last_error };
    }
    this.checkGuards();
    await this.evaluateProblems();
    return {
      foundation: config.foundation,
      leader: this.leadership.isLeader,
      leader_id: this.leadership.leaderId(),
      ...candidacyStatus(this.leadership),
      actual: await view('actual'),
      desired: await view('desired'),
      stages,
      counters: await this.counters(),
      problems: this.problems.list(),
    };
  }

  /** HM9000's structured dump as data (GET /v1/dump, hmgate dump). */
  async dump(): Promise<DumpDoc> {
    if (!this.store) throw new Error('the store is not started');
    const { config } = this.loaded;
    const now = this.clock.now();
    const snapshot = await this.store.snapshot();
    const verdict = (which: 'actual' | 'desired'): DumpFreshness => {
      const v = this.freshness.verdict(which, snapshot.freshness[which], now, config.freshness.actual_ttl);
      return { fresh: v.fresh, since: v.since === null ? null : new Date(v.since).toISOString(), reason: v.reason };
    };
    const actual = verdict('actual');
    const desired = verdict('desired');
    return buildDump({ foundation: config.foundation, now, snapshot, actual, desired, freshnessError: freshnessError(actual.fresh, desired.fresh) });
  }

  /** The problems that hold, as of the last evaluation (each cycle and each status request). */
  currentProblems(): ProblemEntry[] {
    return this.problems.list();
  }

  /** Re-derives the problems from what the engine knows now; never throws. */
  private async evaluateProblems(snapshot?: StoreSnapshot): Promise<void> {
    if (this.startedAt === undefined || this.stopping) return;
    try {
      this.problems.update(deriveProblems(await this.problemFacts(snapshot)));
    } catch (err) {
      this.logger.debug({ error: errorText(err) }, `could not evaluate problems: ${errorText(err)}`);
    }
  }

  private async problemFacts(given?: StoreSnapshot): Promise<ProblemFacts> {
    const { config, heartbeatMs } = this.loaded;
    const now = this.clock.now();
    const stages: StageFacts[] = this.running.map((r) => {
      const h = r.stage.health?.() ?? { healthy: r.started, last_error: null };
      return { id: r.id, section: r.section, plugin: r.pluginName, definition: r.definition, options: r.options, healthy: h.healthy, last_error: h.last_error };
    });
    let state: StateFacts;
    let markers: StoreSnapshot['freshness'] = {};
    try {
      const snapshot = given ?? (await this.store!.snapshot());
      markers = snapshot.freshness;
      state = await this.stateFacts(snapshot);
    } catch (err) {
      state = { error: errorText(err) };
    }
    const verdict = (which: 'actual' | 'desired') => {
      const v = this.freshness.verdict(which, markers[which], now, config.freshness.actual_ttl);
      return { fresh: v.fresh, reason: v.reason };
    };
    return {
      uptimeMs: now - (this.startedAt ?? now),
      heartbeatMs,
      actualTtlMs: config.freshness.actual_ttl,
      servers: this.opts.bus ? [] : config.bus.servers,
      ...(config.bus.monitor_url ? { monitorUrl: config.bus.monitor_url } : {}),
      stages,
      actual: verdict('actual'),
      desired: verdict('desired'),
      state,
      listeners: this.listenerFacts,
      holds: this.freshness.holds(),
    };
  }

  private async stateFacts(s: StoreSnapshot): Promise<StateFacts> {
    let live = 0;
    const guids = new Set<string>();
    for (const list of s.instances.values()) {
      if (list.length === 0) continue;
      live += list.length;
      guids.add(list[0]!.app);
    }
    let desiredHeartbeating = false;
    if (live > 0) {
      for (const d of s.desired.values()) {
        if (guids.has(d.guid)) {
          desiredHeartbeating = true;
          break;
        }
      }
    }
    const facts: StateFacts = { desiredApps: s.desired.size, liveInstances: live, heartbeatingApps: guids.size, desiredHeartbeating };
    // Agents that heartbeat no instance are only in the agent records: counted when it matters.
    if (live === 0) facts.agents = (await this.store!.getAgents()).size;
    return facts;
  }

  /**
   * With bus.monitor_url set, asks the NATS server now and then whether anybody subscribes to the
   * notifiers' start/stop subjects (never publishing there: the CC would act on it).
   */
  private startListenerProbe(): void {
    const url = this.loaded.config.bus.monitor_url;
    const targets = startStopSubjects(this.loaded.stages.map((s) => ({ id: s.id, plugin: s.plugin.name, definition: s.plugin, options: s.options })));
    if (!url || this.opts.bus || targets.length === 0) return;
    const subjects = [...new Set(targets.flatMap((t) => t.subjects))];
    const interval = Math.min(30_000, Math.max(1_000, 3 * this.loaded.heartbeatMs));
    const probe = async () => {
      const answer = await subscribersOf(url, subjects, PROBE_TIMEOUT_MS);
      this.listenerFacts = answer.ok
        ? targets.map((t) => ({ stage: t.stage, missing: t.subjects.filter((s) => (answer.subscribers.get(s) ?? 0) === 0) }))
        : [{ stage: targets[0]!.stage, error: answer.error }];
      await this.evaluateProblems();
    };
    const loop = () => {
      this.probeRun = probe()
        .catch((err: unknown) => this.logger.debug({ error: errorText(err) }, 'start/stop listener probe failed'))
        .finally(() => {
          this.probeRun = undefined;
          if (!this.stopping) this.probeTimer = this.clock.setTimeout(loop, interval);
        });
    };
    loop();
  }

  /** Every hmgate_* counter, summed over its labels, named without prefix and _total. */
  private async counters(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const m of await this.metrics.getMetricsAsJSON()) {
      if (String(m.type) !== 'counter' || !m.name.startsWith('hmgate_')) continue;
      const name = m.name.replace(/^hmgate_/, '').replace(/_total$/, '');
      out[name] = m.values.reduce((sum, v) => sum + v.value, 0);
    }
    return out;
  }

  private async stopStages(): Promise<void> {
    const timeout = this.opts.stopTimeoutMs ?? STOP_TIMEOUT_MS;
    for (const r of [...this.running].reverse()) {
      if (!r.stage.stop) continue;
      try {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.resolve(r.stage.stop()),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`did not stop within ${timeout}ms`)), timeout))),
        ]).finally(() => clearTimeout(timer));
      } catch (err) {
        this.logger.error({ stage: r.id, error: errorText(err) }, `stage "${r.id}" failed to stop: ${errorText(err)}`);
      }
    }
    this.running.length = 0;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    // Resign at once so a standby takes over without waiting for the lease to lapse.
    this.fitness?.stop();
    await this.leadership.stop().catch((err: unknown) => this.logger.warn({ error: errorText(err) }, 'resigning leadership failed'));
    this.clock.clearTimeout(this.probeTimer);
    await this.probeRun;
    await this.scheduler?.stop();
    this.stopManualClock?.();
    for (const unsubscribe of this.shadowUnsubscribes) unsubscribe();
    await this.runner?.stop();
    this.changedApps?.close();
    await this.stopStages();
    this.logger.info('stopped');
  }
}

/** What an audited decision rests on: the app's desired count, running indices and crash count at the index. */
function appFacts(view: AppView | undefined, index: number | undefined): Record<string, unknown> {
  if (!view) return {};
  const running = [...new Set(view.instances.filter(isStartingOrRunning).map((i) => i.index))].sort((a, b) => a - b);
  const facts: Record<string, unknown> = { desired_instances: view.desired?.instances ?? 0, running_indices: running };
  if (index !== undefined) facts.crash_count = view.crashCounts.get(index)?.count ?? 0;
  return facts;
}

/** An audit record of a request decided by an event policy. */
function requestRecord(
  order: RequestOrder,
  at: number,
  outcome: 'enqueued' | 'suppressed' | 'sent',
  facts: Record<string, unknown>,
  why?: DecisionInput['why'],
  detail?: string,
): DecisionInput {
  const r = order.request;
  const instance = r.instances?.[0]?.instance;
  return {
    at,
    action: r.op === 'START' ? 'start' : 'stop',
    outcome,
    ...(why ? { why } : {}),
    ...(detail ? { detail } : {}),
    reason: order.reason,
    app: order.app,
    version: r.version ?? '',
    ...(r.indices?.length ? { index: r.indices[0] } : {}),
    ...(instance ? { instance } : {}),
    message_id: order.messageId,
    facts: { ...facts, request: r, ...(order.priority !== undefined ? { priority: order.priority } : {}) },
  };
}

/** Whether this daemon campaigns for leadership (or leads), and if not why, for the status. */
function candidacyStatus(leadership: Leadership): Pick<StatusBody, 'candidate' | 'not_candidate_because'> {
  const { candidate, why } = leadership.candidacy();
  return { candidate, not_candidate_because: candidate ? null : why };
}

/** This daemon's id in the leader election and the status: host and process. */
function daemonId(): string {
  return `${hostname()}:${process.pid}`;
}

/** What a shared store offers to keep the decision audit (the etcd store does). */
interface AuditStore {
  appendAudit?(records: readonly DecisionRecord[]): Promise<void>;
  readAudit?(limit: number): Promise<unknown[]>;
}
