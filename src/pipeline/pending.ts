/** The one place pending messages are made, so every rule fills them the same way. */
import { randomUUID } from 'node:crypto';
import type { AppView } from './app-view.js';
import type { InstanceHeartbeat, PendingStart, PendingStop } from './store.js';

export function newStart(
  app: AppView,
  index: number,
  now: number,
  o: { delayMs: number; keepAliveMs: number; priority: number; reason: string; skipVerification?: boolean },
): PendingStart {
  return {
    messageId: randomUUID(),
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
    messageId: randomUUID(),
    sendOn: now + o.delayMs,
    sentOn: 0,
    keepAlive: o.keepAliveMs,
    app: instance.app,
    version: instance.version,
    instance: instance.instance,
    reason: o.reason,
  };
}
