/**
 * The engine's own metrics: cycles, their failures and durations, cycles held back by the gate,
 * orders sent and held back, the ingest lag, and HM9000's app gauges (computed when scraped).
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { suppressedOrdersCounter } from '../sdk/order-metrics.js';
import { AppMetrics } from './cycle/app-metrics.js';
import type { FreshnessBoard } from './freshness/board.js';

export class EngineMetrics {
  readonly cycles: Counter;
  readonly cycleFailures: Counter;
  readonly cycleDuration: Histogram;
  /** Cycles that sent nothing because state was not fresh. */
  readonly heldBack: Counter;
  readonly sentOrders: Counter<'action' | 'reason' | 'mode'>;
  readonly suppressedOrders: Counter<'action' | 'why'>;
  readonly apps: AppMetrics;

  constructor(registry: Registry, foundation: string, board: FreshnessBoard) {
    registry.setDefaultLabels({ foundation });
    collectDefaultMetrics({ register: registry });
    this.cycles = new Counter({ name: 'hmgate_cycles_total', help: 'Analyze → dispatch cycles run', registers: [registry] });
    this.cycleFailures = new Counter({ name: 'hmgate_cycle_failures_total', help: 'Cycles that ended in an error', registers: [registry] });
    this.heldBack = new Counter({ name: 'hmgate_cycles_not_fresh_total', help: 'Cycles that sent nothing because state was not fresh', registers: [registry] });
    this.sentOrders = new Counter({
      name: 'hmgate_orders_sent_total',
      help: 'Starts and stops sent (mode="shadow": would have been sent), by reason',
      labelNames: ['action', 'reason', 'mode'],
      registers: [registry],
    });
    this.suppressedOrders = suppressedOrdersCounter(registry);
    this.apps = new AppMetrics(registry);
    new Gauge({
      name: 'hmgate_ingest_lag_seconds',
      help: 'How far the stored actual state is behind the heartbeats (unsaved heartbeats, bus delay, slow arrivals); over freshness.max_ingest_lag it is not fresh',
      registers: [registry],
      collect() {
        this.set(board.ingestLagMs() / 1000);
      },
    });
    this.cycleDuration = new Histogram({
      name: 'hmgate_cycle_duration_seconds',
      help: 'Duration of the analyze → dispatch cycle',
      buckets: [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
  }

  /** One cycle ran for `ms`, and succeeded or not. */
  observeCycle(ms: number, ok: boolean): void {
    this.cycles.inc();
    if (!ok) this.cycleFailures.inc();
    this.cycleDuration.observe(ms / 1000);
  }

  /** Every hmgate_* counter of a registry, summed over its labels, named without prefix and _total (for /v1/status). */
  static async counters(registry: Registry): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const m of await registry.getMetricsAsJSON()) {
      if (String(m.type) !== 'counter' || !m.name.startsWith('hmgate_')) continue;
      const name = m.name.replace(/^hmgate_/, '').replace(/_total$/, '');
      out[name] = m.values.reduce((sum, v) => sum + v.value, 0);
    }
    return out;
  }
}
