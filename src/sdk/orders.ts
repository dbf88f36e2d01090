/**
 * What the dispatcher and the event path send, and what sinks receive. Every order carries its
 * reason (and, in the audit, the facts behind it), so it is logged once, audited and explained.
 */
import type { DropletRequest } from './droplets.js';
import { hasMethods, type Stage } from './stage.js';

export interface StartOrder {
  action: 'start';
  messageId: string;
  app: string;
  version: string;
  index: number;
  reason: string;
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
  reason: string;
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
/** Whether a stage keeps the sink contract (checked at start, so a broken plugin fails naming itself). */
export function isSink(stage: Stage): stage is SinkStage {
  return hasMethods(stage, 'send');
}

export interface SinkStage extends Stage {
  send(order: Order): Promise<void>;
  /** The wire form of an order (where it would go, and the body), for shadow comparison. */
  render?(order: Order): { subject: string; body: string } | undefined;
  /** The subjects this sink publishes to: what shadow mode listens to from the other health manager. */
  publishSubjects?(): string[];
}
