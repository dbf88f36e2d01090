/**
 * The engine: builds every stage from its plugin with a context of its own, starts them in
 * dependency order (store → bus → policies → sinks → sources → api), runs the cycle on the
 * scheduler, and stops everything in reverse. It knows no plugin by name: what a stage can do
 * beyond its kind it finds by the capabilities the stage declares.
 *
 * The parts it wires, each in a module of its own: the stages (stages.ts), the HM9000-style
 * analyze → dispatch cycle (cycle/), the Ruby-style event path (event-path/), freshness and its
 * gate (freshness/), leadership (leadership/), the metrics, the manual clock, and the operator's
 * views — status, problems, audit, shadow mode (src/operator/).
 */
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import { engineApi, type ApiStage, type EngineView } from '../api/api-stage.js';
import type { StatusBody } from '../api/routes/status.js';
import type { RunningServer } from '../api/server.js';
import { natsBus } from '../bus/nats-bus.js';
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import { configuredLoggers, errorText, type LoggerFactory } from '../log.js';
import { DecisionAudit } from '../operator/audit.js';
import { AuditSharing } from '../operator/audit-sharing.js';
import { ListenerProbe } from '../operator/listener-probe.js';
import { Shadowing } from '../operator/shadowing.js';
import { StatusModel } from '../operator/status.js';
import { buildAppViews } from '../sdk/app-view.js';
import type { Bus } from '../sdk/bus.js';
import { isVarzProvider } from '../sdk/capabilities.js';
import type { Clock, VirtualClock } from '../sdk/clock.js';
import { isEventObserver, isEventPolicy, type EventHub, type EventPolicyStage } from '../sdk/events.js';
import type { Leadership } from '../sdk/leadership.js';
import { isSink, type Order, type SinkStage } from '../sdk/orders.js';
import type { StageContext } from '../sdk/plugin.js';
import { isPolicy, type PolicyStage } from '../sdk/policy.js';
import type { Stage } from '../sdk/stage.js';
import type { StoreSnapshot } from '../sdk/state.js';
import { isStore, type Store } from '../sdk/store.js';
import { AnalyzeDispatchCycle } from './cycle/cycle.js';
import { engineClocks } from './engine-clocks.js';
import { EngineMetrics } from './engine-metrics.js';
import { buildEventPath, forwardingHub, observing } from './event-path/event-path.js';
import type { EventRunner } from './event-path/event-runner.js';
import { freshnessBoard, type FreshnessAssessment, type FreshnessBoard } from './freshness/board.js';
import { FreshnessGate, type ConfirmLossAnswer } from './freshness/gate.js';
import { AlwaysLeader } from './leadership/always-leader.js';
import { daemonId, joinLeadership } from './leadership/leadership.js';
import type { LeaderFitness } from './leadership/leader-fitness.js';
import { driveManualClock } from './manual-clock.js';
import { OrderSender } from './order-sender.js';
import { CycleScheduler } from './scheduler.js';
import { stageContext } from './stage-context.js';
import { StageSet, StageStartError, type StageInfo } from './stages.js';

export { StageStartError } from './stages.js';

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

export class Engine {
  readonly clock: Clock;
  readonly loggers: LoggerFactory;
  readonly metrics = new Registry();
  readonly freshness: FreshnessBoard;
  /** Every decision, sent or held back, with its reason and facts (bounded). */
  readonly audit = new DecisionAudit();
  private readonly logger: Logger;
  private readonly bus: Bus & Stage;
  private readonly stages: StageSet;
  private readonly engineMetrics: EngineMetrics;
  private readonly gate: FreshnessGate;
  private readonly auditSharing: AuditSharing;
  private readonly view: StatusModel;
  private store: Store | undefined;
  private sender: OrderSender | undefined;
  /** The HM9000-style cycle, when any policy evaluates apps. */
  private hm9000: AnalyzeDispatchCycle | undefined;
  /** The Ruby-style event path, when any policy handles events. */
  private runner: EventRunner | undefined;
  private scheduler: CycleScheduler | undefined;
  private api: ApiStage | undefined;
  private shadowing: Shadowing | undefined;
  private probe: ListenerProbe | undefined;
  /** This daemon alone leads until the store's election (if any) says otherwise. */
  private leadership: Leadership = new AlwaysLeader(daemonId());
  private fitness: LeaderFitness | undefined;
  /** With `clock: manual`: the clock that moves only on healthmanager.advance_time. */
  private readonly manualClock: VirtualClock | undefined;
  /** The clock below the time_resolution step. */
  private readonly preciseClock: Clock;
  private stopManualClock: (() => void) | undefined;
  private lastCycleFailed = false;
  private stopping = false;
  /** What stages see as ctx.events; forwards to the runner once it exists. */
  private readonly eventHub: EventHub;

  constructor(
    readonly loaded: LoadedConfig,
    private readonly opts: EngineOptions = {},
  ) {
    const { config } = loaded;
    ({ clock: this.clock, precise: this.preciseClock, manual: this.manualClock } = engineClocks(config, loaded.heartbeatMs, opts.clock));
    this.loggers = opts.loggers ?? configuredLoggers(config);
    this.logger = this.loggers.component('engine');
    this.freshness = freshnessBoard(config.freshness, loaded.heartbeatMs, this.clock, this.preciseClock);
    this.engineMetrics = new EngineMetrics(this.metrics, config.foundation, this.freshness);
    this.stages = new StageSet(this.logger);
    this.gate = new FreshnessGate({
      on: config.freshness.gate,
      board: this.freshness,
      logger: this.logger,
      now: () => this.clock.now(),
      heldBack: this.engineMetrics.heldBack,
      onGuardChange: (hold, held) => {
        // Starts queued by event policies rest on the state the guard distrusts: decided again after it.
        const dropped = this.runner?.discardQueued(`${hold.code} ${held ? 'began' : 'ended'}: decided on a state not to be trusted, not sent`) ?? 0;
        if (dropped > 0) this.logger.info({ guard: hold.code, dropped }, `${dropped} queued start(s) dropped: the policies decide again on the current state`);
      },
    });
    this.auditSharing = new AuditSharing(this.audit, this.logger);
    this.view = new StatusModel({
      config,
      heartbeatMs: loaded.heartbeatMs,
      inProcessBus: opts.bus !== undefined,
      stages: this.stages,
      store: () => this.store,
      board: this.freshness,
      leadership: () => this.leadership,
      checkGuards: () => this.gate.checkGuards(),
      counters: () => EngineMetrics.counters(this.metrics),
      listeners: () => this.probe?.current() ?? [],
      clock: this.clock,
      logger: this.logger,
    });
    this.eventHub = forwardingHub(() => this.runner);
    this.bus = opts.bus ?? natsBus(config.bus, loaded.heartbeatMs, this.loggers.component('bus'));
  }

  /** The state store, once started (for tools and tests that look inside a running engine). */
  get stateStore(): Store | undefined {
    return this.store;
  }

  /** The listening API address, once started. */
  get apiAddress(): RunningServer | undefined {
    return this.api?.address;
  }

  async start(): Promise<void> {
    try {
      await this.startStages();
    } catch (err) {
      this.logger.error({ error: errorText(err) }, errorText(err));
      await this.stages.stopAll(this.opts.stopTimeoutMs ?? STOP_TIMEOUT_MS);
      throw err;
    }
    const { config } = this.loaded;
    this.scheduler = new CycleScheduler(
      this.clock,
      config.analyze_interval,
      () => this.cycle(),
      this.logger,
      (ms, ok) => {
        this.lastCycleFailed = !ok;
        this.engineMetrics.observeCycle(ms, ok);
      },
    );
    this.scheduler.start();
    if (config.dispatch.mode === 'shadow') {
      this.shadowing = new Shadowing({
        windowMs: config.dispatch.shadow.window,
        subjects: config.dispatch.shadow.subjects ?? this.sender!.publishSubjects(),
        bus: this.bus,
        logger: this.loggers.component('shadow'),
        now: () => this.clock.now(),
        wireForms: (order) => this.sender!.wireForms(order),
      });
    }
    this.runner?.start();
    if (this.manualClock) this.stopManualClock = driveManualClock(this.manualClock, this.bus, this.stages, this.logger);
    this.startListenerProbe();
  }

  /** The stages in order: store (then leadership), bus, policies and sinks, the event path, sources, the API. */
  private async startStages(): Promise<void> {
    const { stages } = this.loaded;
    const storeStage = stages.find((s) => s.section === 'store');
    if (!storeStage) throw new StageStartError('store', '(none)', new Error('no store configured'));
    this.view.begin();
    this.store = await this.startPlugin(storeStage, isStore, 'a store plugin must return a stage with the Store methods (snapshot, saveHeartbeats, …)');
    const joined = joinLeadership({
      store: this.store,
      ttlMs: this.loaded.config.leader.ttl,
      resignAfterMs: this.loaded.config.leader.resign_after,
      logger: this.loggers.component('leader'),
      bus: this.bus,
      stages: this.stages,
      freshness: this.freshness,
      clock: this.clock,
      auditSharing: this.auditSharing,
      onLead: () => this.hm9000?.markAll(),
      stopping: () => this.stopping,
    });
    this.leadership = joined.leadership;
    this.fitness = joined.fitness;
    const busName = this.opts.bus ? 'in-process' : 'nats';
    const busOptions = this.opts.bus ? {} : { servers: this.loaded.config.bus.servers };
    await this.stages.start({ id: 'bus', kind: 'bus', section: 'bus', plugin: busName, pluginName: busName, options: busOptions }, () => this.bus);
    // Consumers first: sources raise events from their first message on.
    const policies: { id: string; stage: PolicyStage }[] = [];
    const eventPolicies: { id: string; stage: EventPolicyStage }[] = [];
    const sinks: { id: string; stage: SinkStage }[] = [];
    for (const s of stages.filter((x) => x.section === 'policies')) {
      const stage = await this.startPlugin(s, isAnyPolicy, 'a policy plugin must return a stage with evaluate(input), or events and handle(input)');
      if (isPolicy(stage)) policies.push({ id: s.id, stage });
      if (isEventPolicy(stage)) eventPolicies.push({ id: s.id, stage });
    }
    // Reporters see each event after every policy: the event path runs them last.
    for (const s of stages.filter((x) => x.section === 'reporters')) {
      eventPolicies.push({
        id: s.id,
        stage: observing(await this.startPlugin(s, isEventObserver, 'a reporter plugin must return a stage with events and observe(input)')),
      });
    }
    for (const s of stages.filter((x) => x.section === 'sinks')) {
      sinks.push({ id: s.id, stage: await this.startPlugin(s, isSink, 'a sink plugin must return a stage with send(order)') });
    }
    this.sender = new OrderSender(sinks, () => this.leadership.isLeader);
    this.buildPaths(policies, eventPolicies);
    for (const s of stages.filter((x) => x.section === 'sources')) await this.startPlugin(s, anyStage, '');
    await this.startApi();
  }

  /** Builds, checks against its kind's contract (so a broken plugin fails naming itself) and starts one stage. */
  private startPlugin<T extends Stage>(s: ResolvedStage, fits: (stage: Stage) => stage is T, contract: string): Promise<T> {
    return this.stages.start(this.info(s), async () => {
      const created = await s.plugin.create(s.options, this.context(s));
      if (!fits(created)) throw new Error(contract);
      return created;
    });
  }

  /** The HM9000-style cycle and the Ruby-style event path, for the policies that use each. */
  private buildPaths(policies: { id: string; stage: PolicyStage }[], eventPolicies: { id: string; stage: EventPolicyStage }[]): void {
    const { config } = this.loaded;
    const shared = {
      sender: this.sender!,
      audit: this.audit,
      metrics: this.engineMetrics,
      gate: this.gate,
      isLeader: () => this.leadership.isLeader,
      shadowOurs: (order: Order) => this.shadowing?.ours(order),
    };
    if (policies.length > 0) {
      const mode = config.dispatch.mode === 'shadow' ? 'shadow' : 'live';
      const cycle = { store: this.store!, policies, mode, messageLimit: config.dispatch.message_limit, auditSharing: this.auditSharing } as const;
      this.hm9000 = new AnalyzeDispatchCycle({ ...shared, ...cycle, logger: this.logger });
    }
    if (eventPolicies.length > 0) {
      const logger = this.loggers.component('dispatcher');
      const random = this.opts.random ? { random: this.opts.random } : {};
      this.runner = buildEventPath({
        ...shared,
        config,
        clock: this.clock,
        preciseClock: this.preciseClock,
        logger,
        engineLogger: this.logger,
        ...random,
        policies: eventPolicies,
        stages: this.stages,
        busConnected: () => this.bus.connected,
      });
    }
  }

  private async startApi(): Promise<void> {
    const api = this.loaded.config.api;
    if (!api.enabled) return;
    const varz = this.stages.offering(isVarzProvider)[0]?.stage;
    const info: StageInfo = { id: 'api', kind: 'api', section: 'api', plugin: 'hono', pluginName: 'hono', options: { listen: api.listen } };
    const view: EngineView = {
      status: () => this.status(),
      dump: () => this.view.dump(),
      confirmLoss: () => this.confirmLoss(),
      bothFresh: () => this.view.bothFresh(),
      snapshot: () => this.store!.snapshot(),
      refreshMetrics: () => this.refreshAppMetrics(),
      now: () => this.clock.now(),
      metrics: this.metrics,
      audit: this.audit,
      record: (guid) => this.eventHub.droplets.peek(guid),
      shadow: () => this.shadowing?.comparer,
      ...(varz ? { varz: () => varz.varz() } : {}),
    };
    this.api = await this.stages.start(info, () => engineApi(api, view, this.loggers));
  }

  private info(s: ResolvedStage): StageInfo {
    return { id: s.id, kind: s.kind, section: s.section, plugin: s.pluginSpec, pluginName: s.plugin.name, definition: s.plugin, options: s.options };
  }

  private context(s: ResolvedStage): StageContext {
    return stageContext(s, this.loaded, {
      logger: this.loggers.component(s.id),
      clock: this.clock,
      metrics: this.metrics,
      bus: this.bus,
      store: () => this.store,
      freshness: this.freshness,
      isLeader: () => this.leadership.isLeader,
      events: this.eventHub,
    });
  }

  /**
   * One pass: the guards re-evaluated, then on the leader the HM9000-style cycle (or, with event
   * policies only, the freshness verdict their gate and fallbacks read), then the problems, the
   * shadow comparison's expiry and the audit's write to a shared store.
   */
  private async cycle(): Promise<void> {
    let snapshot: StoreSnapshot | undefined;
    let assessment: FreshnessAssessment | undefined;
    try {
      this.gate.checkGuards();
      if (!this.leadership.isLeader) return;
      const now = this.clock.now();
      if (this.hm9000) {
        await this.hm9000.run(now, (s, a) => {
          snapshot = s;
          assessment = a;
        });
      } else if (this.runner) {
        snapshot = await this.store!.snapshot();
        assessment = this.gate.observe(snapshot.freshness, now);
      }
    } finally {
      // Problems are looked at every cycle, so each is logged when it appears and when it clears.
      await this.view.evaluateProblems(snapshot, assessment);
      this.shadowing?.expire();
      await this.auditSharing.persist(this.store, this.leadership.isLeader);
    }
  }

  /** HM9000's NumberOf* gauges, computed when scraped: all -1 unless state is fresh and the last cycle succeeded. */
  private async refreshAppMetrics(): Promise<void> {
    const snapshot = this.store && !this.lastCycleFailed ? await this.store.snapshot() : undefined;
    const verdicts = snapshot && this.freshness.assess(snapshot.freshness, this.clock.now());
    this.engineMetrics.apps.update(verdicts?.actual.fresh && verdicts.desired.fresh ? buildAppViews(snapshot!) : null);
  }

  /**
   * The operator's word that the agents lost together are gone (POST /v1/actual/confirm-loss):
   * their instances count as missing from now on. Only the leader acts on it; a standby says who leads.
   */
  confirmLoss(): ConfirmLossAnswer {
    return this.gate.confirmLoss(this.leadership);
  }

  status(): Promise<StatusBody> {
    return this.view.status();
  }

  /** With bus.monitor_url set, whether anybody listens to the sinks' start/stop subjects. */
  private startListenerProbe(): void {
    const url = this.loaded.config.bus.monitor_url;
    if (!url || this.opts.bus) return;
    this.probe = ListenerProbe.forStages(url, this.loaded, this.clock, this.logger, () => this.view.evaluateProblems());
    this.probe?.start();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.view.end();
    // Resign at once so a standby takes over without waiting for the lease to lapse.
    this.fitness?.stop();
    await this.leadership.stop().catch((err: unknown) => this.logger.warn({ error: errorText(err) }, 'resigning leadership failed'));
    await this.probe?.stop();
    await this.scheduler?.stop();
    this.stopManualClock?.();
    this.shadowing?.stop();
    await this.runner?.stop();
    this.hm9000?.close();
    await this.stages.stopAll(this.opts.stopTimeoutMs ?? STOP_TIMEOUT_MS);
    this.logger.info('stopped');
  }
}

const isAnyPolicy = (stage: Stage): stage is PolicyStage | EventPolicyStage => isPolicy(stage) || isEventPolicy(stage);
/** Sources have no contract beyond the stage lifecycle. */
const anyStage = (_stage: Stage): _stage is Stage => true;
