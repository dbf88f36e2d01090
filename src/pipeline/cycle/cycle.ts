/**
 * One analyze → dispatch pass, as HM9000's analyzer then sender: on fresh state, the policies'
 * proposals are enqueued as pending messages (crash counts, then starts, then stops), and the due
 * messages that still hold are sent. `analyze` and `dispatch` compute; this is the one place that
 * writes their results, logs and audits each decision, and counts what was sent or held back.
 */
import type { Logger } from 'pino';
import { enqueuedRecord, heldBackRecord, sentRecord } from '../../operator/decision-records.js';
import type { DecisionAudit } from '../../operator/audit.js';
import type { AuditSharing } from '../../operator/audit-sharing.js';
import { buildAppViews } from '../../sdk/app-view.js';
import { appKey } from '../../sdk/app-key.js';
import type { Order } from '../../sdk/orders.js';
import type { PendingStart, PendingStop, StoreSnapshot } from '../../sdk/state.js';
import { startKey, stopKey } from '../../sdk/state.js';
import type { Store } from '../../sdk/store.js';
import type { EngineMetrics } from '../engine-metrics.js';
import type { FreshnessAssessment } from '../freshness/board.js';
import type { FreshnessGate } from '../freshness/gate.js';
import type { OrderSender } from '../order-sender.js';
import { analyze, type AnalysisResult, type NamedPolicy } from './analyzer.js';
import { ChangedApps } from './changed-apps.js';
import { dispatch, isTimeToSend, type DispatchResult } from './dispatcher.js';

export interface CycleOptions {
  store: Store;
  policies: readonly NamedPolicy[];
  gate: FreshnessGate;
  mode: 'live' | 'shadow';
  messageLimit: number;
  sender: OrderSender;
  audit: DecisionAudit;
  auditSharing: AuditSharing;
  metrics: EngineMetrics;
  /** In shadow mode, what a sink would have put on the wire joins the comparison. */
  shadowOurs(order: Order): void;
  isLeader(): boolean;
  logger: Logger;
}

export class AnalyzeDispatchCycle {
  /** Made at the first pass this daemon leads for: a standby does not track changes. */
  private changed: ChangedApps | undefined;
  /** Due messages already audited as held back during the current stale period. */
  private readonly heldBackAudited = new Set<string>();

  constructor(private readonly o: CycleOptions) {}

  /** Analyse every app at the next pass (a new leader; state fresh again). */
  markAll(): void {
    this.changed?.markAll();
  }

  close(): void {
    this.changed?.close();
  }

  /** One pass at `now`; `seen` gets the snapshot it read and the verdicts it was judged by (the problems use both). */
  async run(now: number, seen: (snapshot: StoreSnapshot, freshness: FreshnessAssessment) => void): Promise<void> {
    const changed = (this.changed ??= new ChangedApps(this.o.store));
    const collected = changed.collect();
    const snapshot = await this.o.store.snapshot();
    const freshness = this.o.gate.observe(snapshot.freshness, now);
    seen(snapshot, freshness);
    if (this.o.gate.holdsBack(freshness)) {
      this.auditHeldBack(snapshot, now);
      changed.markAll(); // analyse everything once state is fresh again
      return;
    }
    this.heldBackAudited.clear();
    try {
      const analysis = analyze(snapshot, now, this.o.policies, this.o.logger, changed.take(snapshot, collected));
      await this.enqueue(analysis, now);
      await this.dispatchDue(now);
    } catch (err) {
      changed.markAll();
      throw err;
    }
  }

  /** Logs, audits and saves what the analysis enqueued. */
  private async enqueue(analysis: AnalysisResult, now: number): Promise<void> {
    const { store, audit, logger } = this.o;
    for (const p of analysis.enqueued) {
      const m = p.kind === 'start' ? p.start : p.stop;
      logger.info(
        { decision: p.kind, reason: m.reason, app: m.app, version: m.version, ...p.facts, send_in_ms: m.sendOn - now, message_id: m.messageId },
        `Enqueuing ${p.kind === 'start' ? 'Start' : 'Stop'} Message: ${p.log}`,
      );
      audit.record(enqueuedRecord(p, analysis.apps.get(appKey(m.app, m.version)), now));
    }
    // HM9000 saves crash counts, then starts, then stops; a failure aborts the rest of the run.
    for (const { count, ttlMs } of analysis.crashCounts) await store.putCrashCounts([count], ttlMs);
    if (analysis.starts.length) await store.putPendingStarts(analysis.starts);
    if (analysis.stops.length) await store.putPendingStops(analysis.stops);
    // The decisions go beside the messages they made: a leader that dies now leaves both to its successor.
    if (analysis.starts.length || analysis.stops.length) await this.o.auditSharing.persist(store, this.o.isLeader());
  }

  /** Sends the due messages, then saves what the sends changed. */
  private async dispatchDue(now: number): Promise<void> {
    const { store, sender, metrics, mode } = this.o;
    const dispatched = await store.snapshot();
    sender.clearErrors();
    const result = await dispatch(
      dispatched,
      now,
      (order) => sender.send(order),
      { messageLimit: this.o.messageLimit, shadow: mode === 'shadow' },
      this.o.logger,
    );
    for (const order of result.sent) {
      metrics.sentOrders.inc({ action: order.action, reason: order.reason, mode });
      if (mode === 'shadow') this.o.shadowOurs(order);
      if (mode === 'live') metrics.apps.countSent(order);
    }
    for (const s of result.suppressed) metrics.suppressedOrders.inc({ action: s.kind, why: s.why });
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
    if (result.failures > 0)
      throw new Error(
        result.failures === 1
          ? '1 message failed to send; it is kept for the next cycle'
          : `${result.failures} messages failed to send; they are kept for the next cycle`,
      );
  }

  /** Sent orders and held-back messages of one dispatch, with the facts they were sent on. */
  private auditDispatch(snapshot: StoreSnapshot, now: number, result: DispatchResult): void {
    if (result.sent.length === 0 && result.suppressed.length === 0) return;
    const { audit, sender } = this.o;
    const keys = [...result.sent, ...result.suppressed.map((s) => s.message)].map((m) => appKey(m.app, m.version));
    const views = buildAppViews(snapshot, keys);
    for (const order of result.sent) {
      const m = order.action === 'start' ? snapshot.starts.get(startKey(order)) : snapshot.stops.get(stopKey(order));
      audit.record(sentRecord(order, m, views.get(appKey(order.app, order.version)), now, this.o.mode === 'shadow', audit));
    }
    for (const s of result.suppressed) {
      const error = s.why === 'send_failed' ? sender.sendError(s.message.messageId) : undefined;
      const view = views.get(appKey(s.message.app, s.message.version));
      audit.record(heldBackRecord(s.message, now, view, s.why, error ? `${s.detail}: ${error}` : s.detail, audit));
    }
    sender.clearErrors();
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
    const detail = `${this.o.gate.error ?? 'state is not fresh'}: nothing is sent`;
    for (const m of due) {
      this.heldBackAudited.add('index' in m ? `start:${startKey(m)}` : `stop:${stopKey(m)}`);
      this.o.audit.record(heldBackRecord(m, now, views.get(appKey(m.app, m.version)), 'not_fresh', detail, this.o.audit));
    }
  }
}
