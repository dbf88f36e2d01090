/**
 * The analysis pass (docs/hm9000.md#analyzer, #overwrites-within-a-pass): for every app, run the
 * policies in order, collect their
 * proposals keyed by message key (a later one replaces an earlier one within the pass), and enqueue
 * only what is not already pending — a pending message is never overwritten. Crash counts are
 * incremented only for starts actually enqueued. Pure: it returns what to save.
 */
import type { Logger } from 'pino';
import { buildAppViews, isConverged, startPriority, type AppView } from '../../sdk/app-view.js';
import { newMessageId } from '../../sdk/pending-messages.js';
import type { PolicyStage, Proposal } from '../../sdk/policy.js';
import { crashKey, startKey, stopKey, type CrashCount, type PendingStart, type PendingStop, type StoreSnapshot } from '../../sdk/state.js';
import { type AppKey } from '../../sdk/app-key.js';

export interface AnalysisResult {
  apps: Map<AppKey, AppView>;
  starts: PendingStart[];
  stops: PendingStop[];
  crashCounts: { count: CrashCount; ttlMs: number }[];
  /** The proposals enqueued, with the facts behind them, in order (for logs and the audit). */
  enqueued: Proposal[];
}

export interface NamedPolicy {
  id: string;
  stage: PolicyStage;
}

/**
 * Analyzes every app, or only `keys` (the apps whose inputs changed since the last pass: an app
 * whose desired state, instances, crash counts and pending messages are unchanged would get exactly
 * the proposals it got last time, all of them already pending or deliberately not enqueued).
 */
export function analyze(snapshot: StoreSnapshot, now: number, policies: readonly NamedPolicy[], logger?: Logger, keys?: Iterable<AppKey>): AnalysisResult {
  // Converged apps get no proposal from policies that say so: their views are not built.
  const quiet = policies.length > 0 && policies.every((p) => p.stage.quietWhenConverged === true);
  const apps = buildAppViews(snapshot, keys, quiet ? isConverged : undefined);
  const result: AnalysisResult = { apps, starts: [], stops: [], crashCounts: [], enqueued: [] };
  for (const app of apps.values()) {
    // Most apps propose nothing: the maps are made for the first proposal.
    let starts: Map<string, Proposal & { kind: 'start' }> | undefined;
    let stops: Map<string, Proposal & { kind: 'stop' }> | undefined;
    let counts: Map<string, { count: CrashCount; ttlMs: number }> | undefined;
    const priority = startPriority(app);
    for (const { id, stage } of policies) {
      if (stage.gate === 'no-new-start' && starts !== undefined && starts.size > 0) continue;
      const proposals = stage.evaluate({ app, now, priority });
      if (proposals.length === 0) continue;
      for (const p of proposals) {
        if (p.kind === 'start') {
          const key = startKey(p.start);
          if (snapshot.starts.has(key)) {
            logger?.debug({ policy: id, key, reason: p.start.reason }, `Skipping Already Enqueued Start Message: ${p.log}`);
            continue;
          }
          (starts ??= new Map()).set(key, p);
          if (p.crashCount) {
            const c = p.crashCount.count;
            (counts ??= new Map()).set(crashKey(c), { count: { ...c, count: c.count + 1 }, ttlMs: p.crashCount.ttlMs });
          }
        } else {
          const key = stopKey(p.stop);
          if (snapshot.stops.has(key)) {
            logger?.debug({ policy: id, key, reason: p.stop.reason }, `Skipping Already Enqueued Stop Message: ${p.log}`);
            continue;
          }
          (stops ??= new Map()).set(key, p);
        }
      }
    }
    for (const p of starts?.values() ?? []) {
      p.start.messageId ||= newMessageId();
      result.starts.push(p.start);
      result.enqueued.push(p);
    }
    for (const p of stops?.values() ?? []) {
      p.stop.messageId ||= newMessageId();
      result.stops.push(p.stop);
      result.enqueued.push(p);
    }
    if (counts !== undefined) result.crashCounts.push(...counts.values());
  }
  return result;
}
