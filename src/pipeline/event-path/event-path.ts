/**
 * The event path wired to the engine: the runner of the event policies (Ruby HM presets), sending
 * through the sinks, auditing and counting each decision, acting only while the freshness guards
 * (and, when on, the gate) allow, and asking the desired-state sources for a fetch when a policy does.
 */
import type { Logger } from 'pino';
import { errorText } from '../../log.js';
import type { Config } from '../../config/schema.js';
import type { DecisionAudit } from '../../operator/audit.js';
import { requestRecord } from '../../operator/decision-records.js';
import { isDesiredStateSource, isQueueLengthObserver } from '../../sdk/capabilities.js';
import type { Clock } from '../../sdk/clock.js';
import { DropletRegistry } from '../../sdk/droplets.js';
import type { EventHub, EventObserverStage, EventPolicyStage } from '../../sdk/events.js';
import type { Order } from '../../sdk/orders.js';
import type { EngineMetrics } from '../engine-metrics.js';
import type { FreshnessGate } from '../freshness/gate.js';
import type { OrderSender } from '../order-sender.js';
import type { StageSet } from '../stages.js';
import { EventRunner } from './event-runner.js';

export interface EventPathOptions {
  config: Config;
  /** The engine clock (time_resolution steps) and the one below it, for policy timers. */
  clock: Clock;
  preciseClock: Clock;
  /** The runner's logger (component dispatcher) and the engine's. */
  logger: Logger;
  engineLogger: Logger;
  policies: { id: string; stage: EventPolicyStage }[];
  stages: StageSet;
  sender: OrderSender;
  audit: DecisionAudit;
  metrics: EngineMetrics;
  gate: FreshnessGate;
  isLeader(): boolean;
  busConnected(): boolean;
  shadowOurs(order: Order): void;
  random?: () => number;
}

export function buildEventPath(o: EventPathOptions): EventRunner {
  const { config, clock, audit } = o;
  const mode = config.dispatch.mode;
  const runner: EventRunner = new EventRunner({
    clock,
    logger: o.logger,
    policies: o.policies,
    send: (order) => o.sender.send(order),
    onSent: (order) => {
      o.metrics.sentOrders.inc({ action: order.request.op.toLowerCase(), reason: order.reason, mode });
      if (mode === 'shadow') o.shadowOurs(order);
      if (mode === 'live') audit.record(requestRecord(order, clock.now(), 'sent', {}));
    },
    onDecided: (order, delivery, facts) => {
      audit.record(requestRecord(order, clock.now(), 'enqueued', { ...facts, delivery }));
      // The Ruby HM's varz queue_length was the queue's size at the last insert.
      if (delivery === 'queued') for (const { stage } of o.stages.offering(isQueueLengthObserver)) stage.setQueueLength(runner.queue.size);
    },
    onSuppressed: (order, why, detail) => {
      o.metrics.suppressedOrders.inc({ action: order.request.op.toLowerCase(), why });
      audit.record(requestRecord(order, clock.now(), 'suppressed', {}, why, detail));
    },
    shadow: mode === 'shadow',
    // The guards hold even without the gate: they stop mass action on state known to be wrong.
    mayAct: () => o.gate.mayAct(),
    isLeader: o.isLeader,
    desiredAvailable: () => desiredAvailable(o.stages, o.gate),
    ...(o.random ? { random: o.random } : {}),
    busConnected: o.busConnected,
    analyzeEveryMs: config.analyze_interval,
    analysisSlice: config.events.analysis_slice,
    runLoopMs: config.events.run_loop,
    timerClock: o.preciseClock,
    queue: { intervalMs: config.dispatch.queue.interval, batchSize: config.dispatch.queue.batch_size, dedupe: config.dispatch.queue.dedupe },
    refreshDesired: () => {
      for (const { id, section, stage } of o.stages.offering(isDesiredStateSource)) {
        if (section !== 'sources') continue;
        void Promise.resolve(stage.refreshDesired()).catch((err: unknown) =>
          o.engineLogger.warn({ stage: id, error: errorText(err) }, `desired refresh failed: ${errorText(err)}`),
        );
      }
    },
  });
  return runner;
}

/** Desired state available: what the desired-state sources say, else whether the desired marker was fresh. */
function desiredAvailable(stages: StageSet, gate: FreshnessGate): boolean {
  const sources = stages.offering(isDesiredStateSource);
  if (sources.length === 0) return gate.desiredWasFresh;
  return sources.some(({ stage }) => stage.desiredAvailable());
}

/** What stages see as ctx.events: forwards to the runner once it exists (none without event policies). */
export function forwardingHub(runner: () => EventRunner | undefined): EventHub {
  const noRecords = new DropletRegistry();
  return {
    emit: (event) => runner()?.emit(event),
    wants: (kind) => runner()?.hub.wants(kind) ?? false,
    get droplets() {
      return runner()?.droplets ?? noRecords;
    },
  };
}

/** A reporter as the runner sees it: a policy that handles its events by observing them, deciding nothing. */
export function observing(observer: EventObserverStage): EventPolicyStage {
  return {
    events: observer.events,
    handle: (input) => {
      observer.observe(input);
      return [];
    },
  };
}
