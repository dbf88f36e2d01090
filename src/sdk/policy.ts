/**
 * The contract of HM9000-style policies: a pure rule from (one app, now, its options) to proposals
 * — starts and stops, each with its reason and the facts behind it — which the cycle enqueues,
 * logs, audits and later sends.
 */
import type { AppView } from './app-view.js';
import { hasMethods, type Stage } from './stage.js';
import type { CrashCount, PendingStart, PendingStop } from './state.js';

/** What a policy rule reads: one app, the time, and HM9000's start priority for the app. */
export interface PolicyInput {
  app: AppView;
  now: number;
  /** (N − desired indices with a STARTING/RUNNING instance) / N, computed once per app. */
  priority: number;
}

/** A proposal's message may carry an empty messageId: the analyzer assigns one when it enqueues it. */
export type Proposal =
  | {
      kind: 'start';
      start: PendingStart;
      /** Saved with count + 1 and this TTL, only if the start is actually enqueued (no pending start for its key). */
      crashCount?: { count: CrashCount; ttlMs: number };
      /** One sentence for the log, e.g. "instance is missing". */
      log: string;
      facts: Record<string, unknown>;
    }
  | { kind: 'stop'; stop: PendingStop; log: string; facts: Record<string, unknown> };

/**
 * A policy stage: a pure rule from (app, now, its options) to proposals. Policies run per app in
 * the order the config lists them; a later proposal for the same message key replaces an earlier
 * one within the pass; a pending message already in the store is never overwritten.
 */
export interface PolicyStage extends Stage {
  evaluate(input: PolicyInput): Proposal[];
  /** 'no-new-start': skip this rule for an app when the pass enqueued a new start for it (HM9000 step 4). */
  readonly gate?: 'no-new-start';
  /**
   * true: the rule proposes nothing for a converged app — a desired one whose every desired index
   * has exactly one instance, RUNNING, and that has no other instance. When every policy says so
   * the analyzer passes such apps by without building their view (most apps, most of the time).
   */
  readonly quietWhenConverged?: boolean;
}

/** Whether a stage keeps the policy contract (checked at start, so a broken plugin fails naming itself). */
export function isPolicy(stage: Stage): stage is PolicyStage {
  return hasMethods(stage, 'evaluate');
}
