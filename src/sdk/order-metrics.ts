/**
 * The counter of starts and stops held back, shared by the engine (verification at send time,
 * the message limit, failed sends, shadow mode) and by the stages that refuse an order before it
 * is written (an evacuation start that fails verification). One definition, one series.
 */
import { Counter, type Registry } from 'prom-client';

export function suppressedOrdersCounter(registry: Registry): Counter<'action' | 'why'> {
  return (
    (registry.getSingleMetric('hmgate_orders_suppressed_total') as Counter<'action' | 'why'> | undefined) ??
    new Counter({
      name: 'hmgate_orders_suppressed_total',
      help: 'Due messages not sent: failed verification, over the message limit, or a failed send',
      labelNames: ['action', 'why'],
      registers: [registry],
    })
  );
}
