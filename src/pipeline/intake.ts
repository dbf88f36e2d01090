/**
 * Bad input is dropped, counted per subject and reason in hmgate_dropped_messages_total, and logged
 * with the reason — at most once per subject and reason every `logEveryMs`, with the number dropped
 * since, so a flood of garbage cannot flood the log.
 */
import { Counter, type Registry } from 'prom-client';
import type { Logger } from 'pino';
import type { Clock } from './clock.js';

const counters = new WeakMap<Registry, Counter<'subject' | 'reason'>>();

export function droppedMessagesCounter(registry: Registry): Counter<'subject' | 'reason'> {
  let c = counters.get(registry);
  if (!c) {
    c = (registry.getSingleMetric('hmgate_dropped_messages_total') as Counter<'subject' | 'reason'> | undefined) ??
      new Counter({
        name: 'hmgate_dropped_messages_total',
        help: 'Inbound messages dropped as bad input, by subject and reason',
        labelNames: ['subject', 'reason'],
        registers: [registry],
      });
    counters.set(registry, c);
  }
  return c;
}

export class DropReporter {
  private readonly counter: Counter<'subject' | 'reason'>;
  private readonly lastLogged = new Map<string, { at: number; suppressed: number }>();

  constructor(
    registry: Registry,
    private readonly logger: Logger,
    private readonly clock: Clock,
    private readonly logEveryMs = 10_000,
  ) {
    this.counter = droppedMessagesCounter(registry);
  }

  drop(subject: string, reason: string, detail: string, facts: Record<string, unknown> = {}): void {
    this.counter.inc({ subject, reason });
    const key = `${subject}\u0000${reason}`;
    const now = this.clock.now();
    const last = this.lastLogged.get(key);
    if (last && now - last.at < this.logEveryMs) {
      last.suppressed++;
      return;
    }
    this.lastLogged.set(key, { at: now, suppressed: 0 });
    this.logger.warn(
      { subject, reason, detail, ...facts, ...(last?.suppressed ? { dropped_since_last_log: last.suppressed } : {}) },
      `dropped a message on ${subject}: ${reason} (${detail})`,
    );
  }
}
