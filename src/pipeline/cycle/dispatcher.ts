/**
 * The dispatcher (HM9000's sender, docs/hm9000.md#sender): sends due pending messages that still hold, in order —
 * starts by send_on then priority (highest first), at most `messageLimit` starts a run, then every
 * due stop — and keeps, deletes or marks each one. Nothing is ever re-sent: a sent message with a
 * keep-alive only blocks re-scheduling until it expires. A failed send leaves its message untouched.
 */
import type { Logger } from 'pino';
import { buildAppViews, isIndexDesired, isStartingOrRunning, type AppView } from '../../sdk/app-view.js';
import type { InstanceOrder, StartOrder, StopOrder } from '../../sdk/orders.js';
import { errorText } from '../../log.js';
import { startKey, stopKey, type PendingMessageBase, type PendingStart, type PendingStop, type StoreSnapshot } from '../../sdk/state.js';
import { type AppKey } from '../../sdk/app-key.js';
import { counted } from '../../sdk/summary.js';

export const isTimeToSend = (m: PendingMessageBase, now: number): boolean => m.sentOn === 0 && m.sendOn <= now;
export const isExpired = (m: PendingMessageBase, now: number): boolean => m.sentOn !== 0 && m.sentOn + m.keepAlive <= now;

/** HM9000's order of starts (docs/hm9000.md#pending-messages): send_on ascending, then priority descending. */
export function sortStarts(starts: Iterable<PendingStart>): PendingStart[] {
  return [...starts].sort((a, b) => a.sendOn - b.sendOn || b.priority - a.priority);
}

export type Verdict<T> = { send: true; order: T } | { send: false; why: string };

export function verifyStart(m: PendingStart, apps: ReadonlyMap<AppKey, AppView>): Verdict<StartOrder> {
  const order: StartOrder = { action: 'start', messageId: m.messageId, app: m.app, version: m.version, index: m.index, reason: m.reason, priority: m.priority };
  if (m.skipVerification) return { send: true, order };
  const app = apps.get(`${m.app},${m.version}`);
  if (!app || !app.desired) return { send: false, why: 'app is no longer desired' };
  if (!isIndexDesired(app, m.index)) return { send: false, why: 'instance index is beyond the desired # of instances' };
  if (app.instances.some((i) => i.index === m.index && isStartingOrRunning(i))) return { send: false, why: 'instance is already running' };
  return { send: true, order };
}

export function verifyStop(m: PendingStop, apps: ReadonlyMap<AppKey, AppView>): Verdict<StopOrder> {
  const app = apps.get(`${m.app},${m.version}`);
  if (!app) return { send: false, why: 'instance is no longer running' };
  // HM9000 falls back to a zero-value instance (index 0, state "") for a guid no longer heartbeating.
  const inst = app.instances.find((i) => i.instance === m.instance);
  const index = inst?.index ?? 0;
  const state = inst?.state ?? '';
  const order = (isDuplicate: boolean): Verdict<StopOrder> => ({
    send: true,
    order: { action: 'stop', messageId: m.messageId, app: m.app, version: m.version, instance: m.instance, index, isDuplicate, reason: m.reason },
  });
  if (!app.desired) return order(false);
  if (!isIndexDesired(app, index)) return order(false);
  if (state === 'EVACUATING') return order(true);
  if (app.instances.filter((i) => i.index === index && isStartingOrRunning(i)).length > 1) return order(true);
  return { send: false, why: 'instance is running on a desired index (and there are no other instances running at that index)' };
}

export interface DispatchOptions {
  messageLimit: number;
  /** Shadow mode: everything runs, nothing is sent; what would have been sent is logged and counted. */
  shadow: boolean;
}

export interface Suppressed {
  kind: 'start' | 'stop';
  key: string;
  why: 'verification' | 'message_limit' | 'send_failed' | 'expired';
  detail: string;
  message: PendingStart | PendingStop;
}

export interface DispatchResult {
  sent: InstanceOrder[];
  suppressed: Suppressed[];
  saveStarts: PendingStart[];
  deleteStarts: string[];
  saveStops: PendingStop[];
  deleteStops: string[];
  failures: number;
}

export type Send = (order: InstanceOrder) => Promise<void>;

export async function dispatch(snapshot: StoreSnapshot, now: number, send: Send, opts: DispatchOptions, logger: Logger): Promise<DispatchResult> {
  // Views only of the apps that have a due message: verification needs nothing else.
  const dueApps = new Set<AppKey>();
  for (const m of snapshot.starts.values()) if (isTimeToSend(m, now) && !m.skipVerification) dueApps.add(`${m.app},${m.version}`);
  for (const m of snapshot.stops.values()) if (isTimeToSend(m, now)) dueApps.add(`${m.app},${m.version}`);
  const apps = buildAppViews(snapshot, dueApps);
  const r: DispatchResult = { sent: [], suppressed: [], saveStarts: [], deleteStarts: [], saveStops: [], deleteStops: [], failures: 0 };
  let startsSent = 0;

  const deliver = async (order: InstanceOrder): Promise<boolean> => {
    if (opts.shadow) {
      logger.info({ order, shadow: true }, `shadow: would send ${order.action} ${order.reason}`);
      return true;
    }
    try {
      await send(order);
      return true;
    } catch (err) {
      r.failures++;
      logger.error({ order, error: errorText(err) }, `failed to send ${order.action}; the message is kept for the next run`);
      return false;
    }
  };

  for (const m of sortStarts(snapshot.starts.values())) {
    const key = startKey(m);
    if (isTimeToSend(m, now)) {
      const v = verifyStart(m, apps);
      if (!v.send) {
        logger.info({ key, app: m.app, index: m.index, reason: m.reason, why: v.why }, 'Deleting start message that will not be sent');
        r.deleteStarts.push(key);
        r.suppressed.push({ kind: 'start', key, why: 'verification', detail: v.why, message: m });
      } else if (startsSent < opts.messageLimit) {
        if (await deliver(v.order)) {
          startsSent++;
          r.sent.push(v.order);
          if (m.keepAlive === 0) r.deleteStarts.push(key);
          else r.saveStarts.push({ ...m, sentOn: now });
        } else {
          r.suppressed.push({ kind: 'start', key, why: 'send_failed', detail: 'the send failed', message: m });
        }
      } else {
        r.suppressed.push({ kind: 'start', key, why: 'message_limit', detail: `${counted(opts.messageLimit, 'start')} already sent this run`, message: m });
      }
    } else if (isExpired(m, now)) {
      r.deleteStarts.push(key);
    }
  }

  for (const m of snapshot.stops.values()) {
    const key = stopKey(m);
    if (isTimeToSend(m, now)) {
      const v = verifyStop(m, apps);
      if (!v.send) {
        logger.info({ key, app: m.app, reason: m.reason, why: v.why }, 'Deleting stop message that will not be sent');
        r.deleteStops.push(key);
        r.suppressed.push({ kind: 'stop', key, why: 'verification', detail: v.why, message: m });
      } else if (await deliver(v.order)) {
        r.sent.push(v.order);
        if (m.keepAlive === 0) r.deleteStops.push(key);
        else r.saveStops.push({ ...m, sentOn: now });
      } else {
        r.suppressed.push({ kind: 'stop', key, why: 'send_failed', detail: 'the send failed', message: m });
      }
    } else if (isExpired(m, now)) {
      r.deleteStops.push(key);
    }
  }
  return r;
}
