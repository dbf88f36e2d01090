/**
 * Sends one order through every sink: it counts as sent only if every sink took it. Only the
 * leader sends (leadership can end mid-cycle: the message then stays for the next leader). Why a
 * send failed is kept for the audit record of that message, since the dispatcher only knows that it did.
 */
import { errorText } from '../log.js';
import type { Order, SinkStage } from '../sdk/orders.js';

export class OrderSender {
  private readonly errors = new Map<string, string>();

  constructor(
    private readonly sinks: readonly { id: string; stage: SinkStage }[],
    private readonly isLeader: () => boolean,
  ) {}

  async send(order: Order): Promise<void> {
    if (!this.isLeader()) throw new Error('this daemon is no longer the leader; the message is left for the leader');
    try {
      for (const { stage } of this.sinks) await stage.send(order);
    } catch (err) {
      this.errors.set(order.messageId, errorText(err));
      throw err;
    }
  }

  /** Why the send of a message failed (since the last clearErrors). */
  sendError(messageId: string): string | undefined {
    return this.errors.get(messageId);
  }

  clearErrors(): void {
    this.errors.clear();
  }

  /** What the sinks would put on the wire for an order (shadow comparison). */
  wireForms(order: Order): { subject: string; body: string }[] {
    const out: { subject: string; body: string }[] = [];
    for (const { stage } of this.sinks) {
      const wire = stage.render?.(order);
      if (wire) out.push(wire);
    }
    return out;
  }

  /** The subjects the sinks publish to (what shadow mode listens to from the other health manager). */
  publishSubjects(): string[] {
    return [...new Set(this.sinks.flatMap(({ stage }) => stage.publishSubjects?.() ?? []))];
  }
}
