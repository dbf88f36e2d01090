/**
 * Bad input is dropped, counted per subject and reason in hmgate_dropped_messages_total, and logged
 * with the reason — at most once per subject and reason every `logEveryMs`, with the number dropped
 * since, so a flood of garbage cannot flood the log.
 */
import { Counter, type Registry } from 'prom-client';
import type { Logger } from 'pino';
import type { Clock } from './clock.js';
import { LogLimiter } from './log-limiter.js';

const counters = new WeakMap<Registry, Counter<'subject' | 'reason'>>();

export function droppedMessagesCounter(registry: Registry): Counter<'subject' | 'reason'> {
  let c = counters.get(registry);
  if (!c) {
    c =
      (registry.getSingleMetric('hmgate_dropped_messages_total') as Counter<'subject' | 'reason'> | undefined) ??
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
  private readonly limit: LogLimiter;

  constructor(
    registry: Registry,
    private readonly logger: Logger,
    private readonly clock: Clock,
    logEveryMs = 10_000,
  ) {
    this.counter = droppedMessagesCounter(registry);
    this.limit = new LogLimiter(logEveryMs);
  }

  drop(subject: string, reason: string, detail: string, facts: Record<string, unknown> = {}): void {
    this.counter.inc({ subject, reason });
    const line = this.limit.pass(`${subject}\u0000${reason}`, this.clock.now());
    if (!line) return;
    this.logger.warn(
      { subject, reason, detail, ...facts, ...(line.heldBack ? { dropped_since_last_log: line.heldBack } : {}) },
      `dropped a message on ${subject}: ${reason} (${detail})`,
    );
  }
}
