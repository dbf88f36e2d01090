/**
 * The one place pending messages are made, so every rule fills them the same way. The message id
 * is left empty: the analyzer gives one (a UUID v4) only to what it actually enqueues, since most
 * proposals of a steady foundation are already pending.
 */
import type { AppView } from './app-view.js';
import type { InstanceHeartbeat, PendingStart, PendingStop } from './store.js';

export function newStart(
  app: AppView,
  index: number,
  now: number,
  o: { delayMs: number; keepAliveMs: number; priority: number; reason: string; skipVerification?: boolean },
): PendingStart {
  return {
    messageId: '',
    sendOn: now + o.delayMs,
    sentOn: 0,
    keepAlive: o.keepAliveMs,
    app: app.guid,
    version: app.version,
    index,
    priority: o.priority,
    skipVerification: o.skipVerification ?? false,
    reason: o.reason,
  };
}

export function newStop(instance: InstanceHeartbeat, now: number, o: { delayMs: number; keepAliveMs: number; reason: string }): PendingStop {
  return {
    messageId: '',
    sendOn: now + o.delayMs,
    sentOn: 0,
    keepAlive: o.keepAliveMs,
    app: instance.app,
    version: instance.version,
    instance: instance.instance,
    reason: o.reason,
  };
}
