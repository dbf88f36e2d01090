/**
 * What policies propose, what the dispatcher sends, and what sinks receive. Every proposal and
 * order carries its reason and the facts behind it, so it is logged once, audited and explained.
 */
import type { AppView } from './app-view.js';
import type { DropletRequest } from './droplets.js';
import type { Stage } from './plugin.js';
import type { CrashCount, PendingStart, PendingStop } from './store.js';

export type StartReason = 'MISSING' | 'CRASHED' | 'EVACUATING' | string;
export type StopReason = 'EXTRA' | 'DUPLICATE' | 'EVACUATION_COMPLETE' | string;

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

export interface StartOrder {
  action: 'start';
  messageId: string;
  app: string;
  version: string;
  index: number;
  reason: StartReason;
  priority: number;
}

export interface StopOrder {
  action: 'stop';
  messageId: string;
  app: string;
  version: string;
  instance: string;
  index: number;
  /** true: stop unconditionally (a duplicate or an evacuating instance). */
  isDuplicate: boolean;
  reason: StopReason;
}

/** A request decided by an event policy (the Ruby HM's start/stop), rendered by the notifier's protocol. */
export interface RequestOrder {
  action: 'request';
  messageId: string;
  app: string;
  reason: string;
  request: DropletRequest;
  /** The queue priority it was sent with; absent for requests sent at once. */
  priority?: number;
}

/** What the analyze → dispatch cycle sends (HM9000's per-instance messages). */
export type InstanceOrder = StartOrder | StopOrder;

export type Order = InstanceOrder | RequestOrder;

/**
 * A sink stage (a notifier): sends one verified order. Throwing means the send failed: the pending
 * message is left untouched and tried again in a later cycle.
 */
export interface SinkStage extends Stage {
  send(order: Order): Promise<void>;
  /** The wire form of an order (where it would go, and the body), for shadow comparison. */
  render?(order: Order): { subject: string; body: string } | undefined;
  /** The subjects this sink publishes to: what shadow mode listens to from the other health manager. */
  publishSubjects?(): string[];
}
