/**
 * The notifier: tells the Cloud Controller to start or stop instances.
 *
 * - HM9000's orders (one instance each, from the analyze → dispatch cycle): protocol hm9000
 *   publishes the wire message on NATS, fire-and-forget, as HM9000 did; protocol hm9000-http POSTs
 *   the same body to the CC's internal API, as HM9000 HEAD did (docs/hm9000.md#start-and-stop-messages,
 *   #start-and-stop-over-http).
 * - The Ruby Health Manager's requests (from event policies): protocol health publishes them on
 *   health.start / health.stop, protocol cc-partition on cloudcontrollers.hm.requests.<partition>
 *   (docs/ruby-hm.md#start-and-stop-requests, #partitioned-requests), fire-and-forget.
 *
 * A protocol sends one family of orders only; an order of the other family is refused with an error
 * naming the fix. A send that fails throws, so the caller keeps or reports the message; the stage is
 * unhealthy from a failed send until the next successful one.
 */
import { Counter, type Registry } from 'prom-client';
import {
  definePlugin,
  errorText,
  type InstanceOrder,
  loadCaFile,
  type Order,
  type RequestOrder,
  type SinkStage,
  type StageContext,
  type StageHealth,
} from '../../src/sdk/index.js';
import { notifierProblems, notifierPublishes, notifierSummary } from './describe.js';
import { notifierDoctor } from './doctor.js';
import { CcClient } from './http.js';
import { formatOrderMessage, formatRequestMessage } from './messages.js';
import { checkOptions, NotifierOptionsSchema, REQUEST_PROTOCOLS, subjectsFor, type NotifierOptions, type Protocol } from './options.js';

export {
  formatHealthStart,
  formatHealthStop,
  formatOrderMessage,
  formatPartitionStart,
  formatPartitionStop,
  formatRequestMessage,
  formatStartMessage,
  formatStopMessage,
  type StartMessageFields,
  type StopMessageFields,
} from './messages.js';
export { checkOptions, NotifierOptionsSchema, subjectsFor, type NotifierOptions } from './options.js';

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

/**
 * Requests of the Ruby protocols sent successfully, per metrics registry, readable at once (the
 * Ruby HM's varz health_start_messages_sent / health_stop_messages_sent; prom-client reads are async).
 */
const requestTallies = new WeakMap<Registry, { start: number; stop: number }>();

function tallyOf(registry: Registry): { start: number; stop: number } {
  let t = requestTallies.get(registry);
  if (!t) {
    t = { start: 0, stop: 0 };
    requestTallies.set(registry, t);
  }
  return t;
}

export function sentRequestTally(registry: Registry): Readonly<{ start: number; stop: number }> {
  return tallyOf(registry);
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
  /** Which family of orders this stage sends: HM9000's per-instance orders or event-policy requests. */
  readonly accepts: 'instance' | 'request';
  private lastError: string | null = null;
  private readonly sends: Counter<SendLabels>;
  /** Refusals already logged (one line per kind of wrong order, not per order). */
  private readonly refusedLogged = new Set<string>();

  private constructor(
    private readonly protocol: Protocol,
    private readonly transport: Transport | undefined,
    private readonly subjects: { start: string; stop: string },
    private readonly ctx: StageContext,
  ) {
    this.accepts = REQUEST_PROTOCOLS.includes(protocol) ? 'request' : 'instance';
    this.sends = notifierSendsCounter(ctx.metrics);
  }

  /** Checks the option combinations, reads ca_file, and builds the stage. */
  static async create(options: NotifierOptions, ctx: StageContext): Promise<Notifier> {
    const problems = checkOptions(options, ctx.id);
    if (problems.length > 0) throw new Error(problems.join('; '));
    const subjects = subjectsFor(options);
    if (options.protocol === 'health' || options.protocol === 'cc-partition') return new Notifier(options.protocol, undefined, subjects, ctx);
    if (options.protocol === 'hm9000') return new Notifier('hm9000', new NatsTransport(ctx, subjects), subjects, ctx);
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
    return new Notifier('hm9000-http', new HttpTransport(client), subjects, ctx);
  }

  async send(order: Order): Promise<void> {
    if (order.action === 'request') {
      if (this.accepts !== 'request') throw this.refuse(order);
      return this.sendRequest(order);
    }
    if (this.accepts !== 'instance' || !this.transport) throw this.refuse(order);
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

  /** A request of an event policy, published on NATS in this stage's Ruby protocol. */
  private async sendRequest(order: RequestOrder): Promise<void> {
    const r = order.request;
    const action = r.op === 'START' ? 'start' : 'stop';
    const subject = this.subjects[action];
    const body = formatRequestMessage(this.protocol as 'health' | 'cc-partition', r);
    try {
      // Throws BusNotConnectedError while NATS is down; rethrown as is.
      this.ctx.bus.publish(subject, body);
    } catch (err) {
      this.lastError = `${r.op} ${order.reason} for ${order.app} not sent on ${subject}: ${errorText(err)}`;
      this.sends.inc({ protocol: this.protocol, action, result: 'failed' });
      this.ctx.logger.debug({ protocol: this.protocol, action, message_id: order.messageId, subject, error: errorText(err) }, this.lastError);
      throw err;
    }
    this.lastError = null;
    this.sends.inc({ protocol: this.protocol, action, result: 'ok' });
    tallyOf(this.ctx.metrics)[action]++;
    const facts =
      r.op === 'START'
        ? { indices: r.indices ?? [], flapping: r.flapping === true, ...(order.priority !== undefined ? { priority: order.priority } : {}) }
        : { instances: (r.instances ?? []).map((i) => i.instance) };
    this.ctx.logger.info(
      { protocol: this.protocol, action, reason: order.reason, message_id: order.messageId, app: order.app, version: r.version, ...facts, subject, body },
      `Sent ${r.op} (${order.reason}) on ${subject}: ${body}`,
    );
  }

  /** The error for an order of the wrong family, logged once per kind. */
  private refuse(order: Order): Error {
    const what =
      order.action === 'request'
        ? `a ${order.request.op} request of an event policy (${order.reason} for ${order.app})`
        : `HM9000's ${order.action} order (${order.reason} for ${order.app}/${order.index})`;
    const fix =
      order.action === 'request'
        ? `set sinks.${this.ctx.id}.protocol to health or cc-partition (Ruby HM presets), or use HM9000's policies with this sink`
        : `set sinks.${this.ctx.id}.protocol to hm9000 or hm9000-http (HM9000 presets), or use event policies with this sink`;
    this.lastError = `protocol ${this.protocol} cannot send ${what}: ${fix}`;
    const action = order.action === 'request' ? (order.request.op === 'START' ? 'start' : 'stop') : order.action;
    this.sends.inc({ protocol: this.protocol, action, result: 'failed' });
    const kind = `${order.action}:${action}`;
    if (!this.refusedLogged.has(kind)) {
      this.refusedLogged.add(kind);
      this.ctx.logger.error({ protocol: this.protocol, action, reason: order.reason, message_id: order.messageId }, this.lastError);
    }
    return new Error(this.lastError);
  }

  /** Where an order would go and its body (shadow mode compares these with the other health manager's). */
  render(order: Order): { subject: string; body: string } | undefined {
    if (order.action === 'request') {
      if (this.accepts !== 'request') return undefined;
      return {
        subject: this.subjects[order.request.op === 'START' ? 'start' : 'stop'],
        body: formatRequestMessage(this.protocol as 'health' | 'cc-partition', order.request),
      };
    }
    // Over HTTP there is no subject another health manager publishes on to compare with.
    if (this.protocol !== 'hm9000') return undefined;
    return { subject: this.subjects[order.action], body: formatOrderMessage(order) };
  }

  /** The NATS subjects this stage publishes on (none over HTTP). */
  publishSubjects(): string[] {
    return this.protocol === 'hm9000-http' ? [] : [...new Set([this.subjects.start, this.subjects.stop])];
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  async stop(): Promise<void> {
    await this.transport?.close();
  }
}

export default definePlugin({
  name: 'notifier',
  kind: 'sink',
  family: 'common',
  description:
    "Sends each start and stop to the Cloud Controller: HM9000's orders published on NATS (protocol hm9000) or POSTed to the CC's internal API (hm9000-http, HM9000 HEAD); the Ruby Health Manager's requests on health.start / health.stop (health) or cloudcontrollers.hm.requests.<cc_partition> (cc-partition).",
  optionsSchema: NotifierOptionsSchema,
  create: (options, ctx) => Notifier.create(options, ctx),
  summary: notifierSummary,
  problems: notifierProblems,
  doctor: notifierDoctor,
  publishes: notifierPublishes,
});
