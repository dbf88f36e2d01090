/**
 * The engine: builds every stage from its plugin with a context of its own, starts them in
 * dependency order (store → bus → sources → policies → sinks → api), runs the analyze → dispatch
 * cycle, and stops everything in reverse. It knows no plugin by name.
 */
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import type { Logger } from 'pino';
import { buildApi } from '../api/app.js';
import type { StatusBody } from '../api/routes/status.js';
import { listen, type RunningServer } from '../api/server.js';
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import { createLoggerFactory, errorText, type LoggerFactory } from '../log.js';
import { RealClock, type Clock } from './clock.js';
import { FreshnessBoard, freshnessError, isActualFresh, isDesiredFresh } from './freshness.js';
import { AppMetrics } from './app-metrics.js';
import { buildAppViews } from './app-view.js';
import { NatsBus } from './nats-bus.js';
import type { Stage, StageContext } from './plugin.js';
import type { Bus } from './bus.js';
import { CycleScheduler } from './scheduler.js';
import type { Store, StoreSnapshot } from './store.js';
import type { Order, PolicyStage, SinkStage } from './decisions.js';
import { analyze } from './analyzer.js';
import { dispatch } from './dispatcher.js';
import { ChangedApps } from './changed-apps.js';

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
  plugin: string;
  stage: Stage;
  started: boolean;
}

export interface EngineOptions {
  clock?: Clock;
  loggers?: LoggerFactory;
  /** Stop timeout per stage, so a stuck stage cannot hold up shutdown. */
  stopTimeoutMs?: number;
  /** The bus instead of a NATS connection (simulations on a virtual clock). */
  bus?: Bus & Stage;
}

const STOP_TIMEOUT_MS = 5_000;

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
  private readonly appMetrics: AppMetrics;
  private lastCycleFailed = false;
  private readonly sentOrders: Counter<'action' | 'reason' | 'mode'>;
  private readonly suppressedOrders: Counter<'action' | 'why'>;

  constructor(
    readonly loaded: LoadedConfig,
    private readonly opts: EngineOptions = {},
  ) {
    const { config } = loaded;
    this.clock = opts.clock ?? new RealClock();
    this.loggers = opts.loggers ?? createLoggerFactory({ foundation: config.foundation, level: config.log.level, levels: config.log.levels });
    this.logger = this.loggers.component('engine');
    this.freshness = new FreshnessBoard(() => this.clock.now(), config.freshness.actual_ttl, config.freshness.desired_ttl);
    this.metrics.setDefaultLabels({ foundation: config.foundation });
    collectDefaultMetrics({ register: this.metrics });
    this.cycles = new Counter({ name: 'hmgate_cycles_total', help: 'Analyze → dispatch cycles run', registers: [this.metrics] });
    this.cycleFailures = new Counter({ name: 'hmgate_cycle_failures_total', help: 'Cycles that ended in an error', registers: [this.metrics] });
    this.stale = new Counter({ name: 'hmgate_cycles_not_fresh_total', help: 'Cycles that sent nothing because state was not fresh', registers: [this.metrics] });
    this.sentOrders = new Counter({
      name: 'hmgate_orders_sent_total',
      help: 'Starts and stops sent (mode="shadow": would have been sent), by reason',
      labelNames: ['action', 'reason', 'mode'],
      registers: [this.metrics],
    });
    this.suppressedOrders = new Counter({
      name: 'hmgate_orders_suppressed_total',
      help: 'Due messages not sent: failed verification, over the message limit, or a failed send',
      labelNames: ['action', 'why'],
      registers: [this.metrics],
    });
    this.appMetrics = new AppMetrics(this.metrics);
    this.cycleDuration = new Histogram({
      name: 'hmgate_cycle_duration_seconds',
      help: 'Duration of the analyze → dispatch cycle',
      buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.metrics],
    });
    const bus = config.bus;
    this.bus = opts.bus ?? new NatsBus(
      { servers: bus.servers, user: bus.user, password: bus.password, token: bus.token, name: bus.name, connectTimeoutMs: bus.connect_timeout },
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
    };
  }

  private async startStage(id: string, kind: string, plugin: string, build: () => Promise<Stage>): Promise<Stage> {
    const entry: Running = { id, kind, plugin, stage: {}, started: false };
    try {
      entry.stage = await build();
      await entry.stage.start?.();
      // Only started stages are stopped: a stage whose start failed cleans up after itself.
      entry.started = true;
      this.running.push(entry);
      this.logger.info({ stage: id, plugin }, `started ${kind} "${id}" (${plugin})`);
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
      this.store = (await this.startStage('store', 'store', storeStage.pluginSpec, async () =>
        storeStage.plugin.create(storeStage.options, this.context(storeStage)),
      )) as Store;
      await this.startStage('bus', 'bus', this.opts.bus ? 'in-process' : 'nats', async () => this.bus);
      for (const section of ['sources', 'policies', 'sinks'] as const) {
        for (const s of stages.filter((x) => x.section === section)) {
          const stage = await this.startStage(s.id, s.kind, s.pluginSpec, async () => {
            const created = await s.plugin.create(s.options, this.context(s));
            // The contract of each kind, checked at boot so a broken plugin fails naming itself.
            if (section === 'policies' && typeof (created as PolicyStage).evaluate !== 'function') throw new Error('a policy plugin must return a stage with evaluate(input)');
            if (section === 'sinks' && typeof (created as SinkStage).send !== 'function') throw new Error('a sink plugin must return a stage with send(order)');
            return created;
          });
          if (section === 'policies') this.policies.push({ id: s.id, stage: stage as PolicyStage });
          if (section === 'sinks') this.sinks.push({ id: s.id, stage: stage as SinkStage });
        }
      }
      const api = this.loaded.config.api;
      if (api.enabled) {
        await this.startStage('api', 'api', 'hono', async () => {
          const app = buildApi({
            user: api.user,
            password: api.password,
            status: () => this.status(),
            metrics: this.metrics,
            beforeMetrics: () => this.refreshAppMetrics(),
            appState: { snapshot: () => this.store!.snapshot(), fresh: () => this.bothFresh(), logger: this.loggers.component('api') },
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
    this.scheduler = new CycleScheduler(this.clock, this.loaded.config.analyze_interval, () => this.cycle(), this.loggers.component('engine'), (ms, ok) => {
      this.cycles.inc();
      this.lastCycleFailed = !ok;
      if (!ok) this.cycleFailures.inc();
      this.cycleDuration.observe(ms / 1000);
    });
    this.scheduler.start();
  }

  /**
   * One analyze → dispatch pass (HM9000's analyzer then sender). With no policies it only records
   * itself. Nothing is decided or sent on stale state while the freshness gate is on.
   */
  private async cycle(): Promise<void> {
    if (this.policies.length === 0) return;
    const store = this.store!;
    const { config } = this.loaded;
    const now = this.clock.now();
    this.changedApps ??= new ChangedApps(store);
    const collected = this.changedApps.collect();
    const snapshot = await store.snapshot();
    if (config.freshness.gate && !this.checkFreshness(snapshot, now)) {
      this.changedApps.markAll(); // analyse everything once state is fresh again
      return;
    }
    try {
      await this.analyzeAndDispatch(snapshot, now, this.changedApps.take(snapshot, collected));
    } catch (err) {
      this.changedApps.markAll();
      throw err;
    }
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
    }
    // HM9000 saves crash counts, then starts, then stops; a failure aborts the rest of the run.
    for (const { count, ttlMs } of analysis.crashCounts) await store.putCrashCounts([count], ttlMs);
    if (analysis.starts.length) await store.putPendingStarts(analysis.starts);
    if (analysis.stops.length) await store.putPendingStops(analysis.stops);

    const result = await dispatch(await store.snapshot(), now, (order) => this.send(order), { messageLimit: config.dispatch.message_limit, shadow: config.dispatch.mode === 'shadow' }, this.logger);
    for (const order of result.sent) {
      this.sentOrders.inc({ action: order.action, reason: order.reason, mode: config.dispatch.mode });
      if (config.dispatch.mode === 'live') this.appMetrics.countSent(order);
    }
    for (const s of result.suppressed) this.suppressedOrders.inc({ action: s.kind, why: s.why });
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

  private async bothFresh(): Promise<boolean> {
    const s = await this.store!.snapshot();
    const now = this.clock.now();
    return isActualFresh(s.freshness.actual, now, this.loaded.config.freshness.actual_ttl) && isDesiredFresh(s.freshness.desired, now);
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
    for (const { stage } of this.sinks) await stage.send(order);
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
    for (const r of this.running) {
      const h = r.stage.health?.() ?? { healthy: r.started, last_error: null };
      stages[r.id] = { kind: r.kind, plugin: r.plugin, healthy: h.healthy, last_error: h.last_error };
    }
    return {
      foundation: config.foundation,
      leader: true,
      actual: await view('actual'),
      desired: await view('desired'),
      stages,
      counters: await this.counters(),
    };
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
    await this.scheduler?.stop();
    this.changedApps?.close();
    await this.stopStages();
    this.logger.info('stopped');
  }
}
