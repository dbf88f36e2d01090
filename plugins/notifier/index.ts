/**
 * The notifier (HM9000's sender transport, spec §2.4): tells the Cloud Controller to start or stop
 * an instance. protocol hm9000 publishes the wire message on NATS, fire-and-forget, as HM9000 did;
 * protocol hm9000-http POSTs the same body to the CC's internal API, as HM9000 HEAD did (§18).
 * A send that fails throws, so the dispatcher keeps the message for the next cycle; the stage is
 * unhealthy from a failed send until the next successful one.
 */
import { Counter, type Registry } from 'prom-client';
import { errorText } from '../../src/log.js';
import type { InstanceOrder, Order, SinkStage } from '../../src/pipeline/decisions.js';
import { definePlugin, type StageContext, type StageHealth } from '../../src/pipeline/plugin.js';
import { loadCaFile } from '../../src/http/client.js';
import { CcClient } from './http.js';
import { formatOrderMessage } from './messages.js';
import { checkOptions, NotifierOptionsSchema, type NotifierOptions, type Protocol } from './options.js';

export { formatOrderMessage, formatStartMessage, formatStopMessage, type StartMessageFields, type StopMessageFields } from './messages.js';
export { checkOptions, NotifierOptionsSchema, type NotifierOptions } from './options.js';

type SendLabels = 'protocol' | 'action' | 'result';
const counters = new WeakMap<Registry, Counter<SendLabels>>();

export function notifierSendsCounter(registry: Registry): Counter<SendLabels> {
  let c = counters.get(registry);
  if (!c) {
    c =
      (registry.getSingleMetric('hmgate_notifier_sends_total') as Counter<SendLabels> | undefined) ??
      new Counter({
        name: 'hmgate_notifier_sends_total',
        help: 'Start and stop orders the notifier sent, by protocol, action and result (ok or failed)',
        labelNames: ['protocol', 'action', 'result'],
        registers: [registry],
      });
    counters.set(registry, c);
  }
  return c;
}

/** Where an order goes and how; one per protocol. */
interface Transport {
  /** Sends the wire body; returns where it went, for the log line. */
  send(order: InstanceOrder, body: string): Promise<Record<string, string>>;
  close(): Promise<void>;
}

class NatsTransport implements Transport {
  constructor(
    private readonly ctx: StageContext,
    private readonly subjects: { start: string; stop: string },
  ) {}

  async send(order: InstanceOrder, body: string): Promise<Record<string, string>> {
    const subject = this.subjects[order.action];
    // Throws BusNotConnectedError while NATS is down; the caller rethrows it as is.
    this.ctx.bus.publish(subject, body);
    return { subject };
  }

  async close(): Promise<void> {}
}

class HttpTransport implements Transport {
  constructor(private readonly client: CcClient) {}

  async send(order: InstanceOrder, body: string): Promise<Record<string, string>> {
    await this.client.post(order.action, order.app, body);
    return { url: this.client.urlFor(order.action, order.app) };
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export class Notifier implements SinkStage {
  private lastError: string | null = null;
  private readonly sends: Counter<SendLabels>;

  private constructor(
    private readonly protocol: Protocol,
    private readonly transport: Transport,
    private readonly ctx: StageContext,
  ) {
    this.sends = notifierSendsCounter(ctx.metrics);
  }

  /** Checks the option combinations, reads ca_file, and builds the stage. */
  static async create(options: NotifierOptions, ctx: StageContext): Promise<Notifier> {
    const problems = checkOptions(options, ctx.id);
    if (problems.length > 0) throw new Error(problems.join('; '));
    if (options.protocol === 'hm9000') {
      return new Notifier('hm9000', new NatsTransport(ctx, { start: options.start_subject, stop: options.stop_subject }), ctx);
    }
    const ca = options.ca_file !== undefined ? await loadCaFile(options.ca_file, ctx.configDir, `sinks.${ctx.id}.ca_file`) : undefined;
    const client = new CcClient({
      id: ctx.id,
      ccUrl: options.cc_url!,
      user: options.user!,
      password: options.password!,
      timeoutMs: options.timeout,
      skipCertVerify: options.skip_cert_verify,
      ...(ca !== undefined ? { ca } : {}),
    });
    return new Notifier('hm9000-http', new HttpTransport(client), ctx);
  }

  async send(order: Order): Promise<void> {
    if (order.action === 'request') throw new Error(`protocol ${this.protocol} cannot send the requests of event policies`);
    const body = formatOrderMessage(order);
    let where: Record<string, string>;
    try {
      where = await this.transport.send(order, body);
    } catch (err) {
      this.lastError = `${order.action} ${order.reason} for ${order.app}/${order.index} not sent: ${errorText(err)}`;
      this.sends.inc({ protocol: this.protocol, action: order.action, result: 'failed' });
      this.ctx.logger.debug({ protocol: this.protocol, action: order.action, message_id: order.messageId, error: errorText(err) }, this.lastError);
      throw err;
    }
    this.lastError = null;
    this.sends.inc({ protocol: this.protocol, action: order.action, result: 'ok' });
    const facts =
      order.action === 'start'
        ? { app: order.app, version: order.version, index: order.index, priority: order.priority }
        : { app: order.app, version: order.version, index: order.index, instance: order.instance, is_duplicate: order.isDuplicate };
    this.ctx.logger.info(
      { protocol: this.protocol, action: order.action, reason: order.reason, message_id: order.messageId, ...facts, ...where },
      `Sent ${order.action} message (${order.reason})`,
    );
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  async stop(): Promise<void> {
    await this.transport.close();
  }
}

export default definePlugin({
  name: 'notifier',
  kind: 'sink',
  description:
    "Sends each start and stop order to the Cloud Controller in HM9000's wire format: published on NATS (protocol hm9000) or POSTed to the CC's internal API (protocol hm9000-http, HM9000 HEAD).",
  optionsSchema: NotifierOptionsSchema,
  create: (options, ctx) => Notifier.create(options, ctx),
});
