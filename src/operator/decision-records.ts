/**
 * The decision audit's records, made in one place: a start or stop enqueued by a policy, sent (or,
 * in shadow mode, that would have been), held back (not fresh, verification, the message limit, a
 * failed send), and a request decided by an event policy. Each carries the facts it rests on.
 */
import { isStartingOrRunning, type AppView } from '../sdk/app-view.js';
import type { InstanceOrder, RequestOrder } from '../sdk/orders.js';
import type { Proposal } from '../sdk/policy.js';
import type { PendingStart, PendingStop } from '../sdk/state.js';
import type { DecisionAudit, DecisionInput } from './audit.js';

/** What an audited decision rests on: the app's desired count, running indices and crash count at the index. */
export function appFacts(view: AppView | undefined, index: number | undefined): Record<string, unknown> {
  if (!view) return {};
  const running = [...new Set(view.instances.filter(isStartingOrRunning).map((i) => i.index))].sort((a, b) => a - b);
  const facts: Record<string, unknown> = { desired_instances: view.desired?.instances ?? 0, running_indices: running };
  if (index !== undefined) facts.crash_count = view.crashCounts.get(index)?.count ?? 0;
  return facts;
}

/** The index a stop is for, as the app's view knows it. */
function stopIndex(view: AppView | undefined, instance: string): number | undefined {
  return view?.instances.find((i) => i.instance === instance)?.index;
}

/** A start or stop a policy proposed and the cycle enqueued. */
export function enqueuedRecord(p: Proposal, view: AppView | undefined, now: number): DecisionInput {
  const m = p.kind === 'start' ? p.start : p.stop;
  const index = p.kind === 'start' ? p.start.index : stopIndex(view, p.stop.instance);
  return {
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
  };
}

/** An order the dispatcher sent (shadow: would have sent), with the facts it was enqueued and sent on. */
export function sentRecord(
  order: InstanceOrder,
  message: PendingStart | PendingStop | undefined,
  view: AppView | undefined,
  now: number,
  shadow: boolean,
  audit: DecisionAudit,
): DecisionInput {
  return {
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
      ...audit.enqueued(order.messageId)?.facts,
      ...appFacts(view, order.index),
      ...(order.action === 'start' ? { priority: order.priority } : { is_duplicate: order.isDuplicate }),
      ...(message ? { send_on: new Date(message.sendOn).toISOString() } : {}),
    },
  };
}

/** A due message held back: not fresh, refused by verification, over the message limit, or its send failed. */
export function heldBackRecord(
  m: PendingStart | PendingStop,
  now: number,
  view: AppView | undefined,
  why: NonNullable<DecisionInput['why']>,
  detail: string,
  audit: DecisionAudit,
): DecisionInput {
  const start = 'index' in m ? m : undefined;
  const stop = 'instance' in m ? m : undefined;
  const index = start ? start.index : stopIndex(view, stop!.instance);
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
    facts: { ...audit.enqueued(m.messageId)?.facts, ...appFacts(view, index), send_on: new Date(m.sendOn).toISOString() },
  };
}

/** A request decided by an event policy: enqueued, sent, or held back. */
export function requestRecord(
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
