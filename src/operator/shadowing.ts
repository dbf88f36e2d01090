/**
 * Shadow mode wired to the bus: listens to the subjects the sinks would publish to (or
 * dispatch.shadow.subjects) — what arrives there comes from the health manager still in charge — and
 * adds what hmgate would have sent, as the sinks would have put it on the wire.
 */
import type { Logger } from 'pino';
import type { Bus } from '../sdk/bus.js';
import type { Order } from '../sdk/orders.js';
import { ShadowComparer } from './shadow.js';

export interface ShadowingOptions {
  windowMs: number;
  /** The subjects to listen to; empty: set dispatch.shadow.subjects. */
  subjects: string[];
  bus: Bus;
  logger: Logger;
  now(): number;
  /** What the sinks would put on the wire for an order. */
  wireForms(order: Order): { subject: string; body: string }[];
}

export class Shadowing {
  readonly comparer: ShadowComparer;
  private readonly unsubscribes: (() => void)[] = [];

  constructor(private readonly o: ShadowingOptions) {
    this.comparer = new ShadowComparer(o.windowMs, o.logger, o.now);
    const text = new TextDecoder();
    for (const subject of o.subjects) this.unsubscribes.push(o.bus.subscribe(subject, (msg) => this.comparer.addTheirs(msg.subject, text.decode(msg.data))));
    o.logger.info(
      { subjects: o.subjects, window_ms: this.comparer.windowMs },
      `shadow mode: comparing with the requests on ${o.subjects.join(', ') || '(no subject: set dispatch.shadow.subjects)'}`,
    );
  }

  /** What hmgate would have sent joins the comparison. */
  ours(order: Order): void {
    for (const wire of this.o.wireForms(order)) this.comparer.addOurs(wire.subject, wire.body);
  }

  expire(): void {
    this.comparer.expire();
  }

  stop(): void {
    for (const unsubscribe of this.unsubscribes) unsubscribe();
  }
}
