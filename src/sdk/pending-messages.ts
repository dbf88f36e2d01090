/**
 * The one place pending messages are made, so every rule fills them the same way. The message id
 * is left empty: the analyzer gives one (a UUID v4) only to what it actually enqueues, since most
 * proposals of a steady foundation are already pending.
 */
import { randomBytes } from 'node:crypto';
import type { AppView } from './app-view.js';
import type { InstanceHeartbeat, PendingStart, PendingStop } from './state.js';

/**
 * A message id as HM9000 made them (nu7hatch/gouuid's NewV4): random, version 4, with the variant
 * bits set to 01 — so the first digit of the fourth group is 4–7, not RFC 4122's 8–b. Consumers
 * treat the id as opaque; keeping its shape keeps hmgate's messages byte-for-byte alike.
 */
export function newMessageId(): string {
  const u = randomBytes(16);
  u[6] = (u[6]! & 0x0f) | 0x40;
  u[8] = (u[8]! | 0x40) & 0x7f;
  const h = u.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

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
