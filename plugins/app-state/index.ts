/**
 * The `app-state` source: HM9000's app-state API over NATS request/reply
 * (docs/hm9000.md#app-state-over-nats; HM9000 N `apiserver/apiserver.go`, HM9000 2013-10 …
 * 2014-10): `app.state` answers one app's App JSON, `app.state.bulk` the same object as the HTTP
 * /bulk_app_state. Subscribed in a queue group so several daemons can answer without a lock. Both
 * actual and desired state must be fresh; every failure answers `{}`. It writes nothing.
 */
import { Type } from '@sinclair/typebox';
import { Counter, type Registry } from 'prom-client';
import {
  appViewLookup,
  bulkAppStateBody,
  type BusMessage,
  decodeRequestBody,
  definePlugin,
  DropReporter,
  EMPTY_APP_STATE,
  errorText,
  isActualFresh,
  isDesiredFresh,
  parseAppStateRequest,
  parseBulkAppStateRequest,
  singleAppStateBody,
  type Stage,
  type StageContext,
  type StageHealth,
} from '../../src/sdk/index.js';

export const AppStateOptions = Type.Object(
  {
    subject: Type.String({
      minLength: 1,
      default: 'app.state',
      description: 'Subject of one app\'s state requests, {"droplet","version"} (HM9000 N: app.state).',
    }),
    bulk_subject: Type.String({
      minLength: 1,
      default: 'app.state.bulk',
      description: 'Subject of bulk requests, [{"droplet","version"}, ...], answered like POST /bulk_app_state (HM9000 N: app.state.bulk).',
    }),
    queue: Type.String({
      default: 'hm9000',
      description: 'NATS queue group of both subscriptions, so each request is answered by one daemon (HM9000: hm9000); "" subscribes without a group.',
    }),
  },
  { additionalProperties: false },
);

export interface AppStateStageOptions {
  subject: string;
  bulk_subject: string;
  queue: string;
}

type Result = 'found' | 'not_found' | 'not_fresh' | 'bad_request' | 'error';

function requestsCounter(registry: Registry): Counter<'subject' | 'result'> {
  return (
    (registry.getSingleMetric('hmgate_app_state_requests_total') as Counter<'subject' | 'result'> | undefined) ??
    new Counter({
      name: 'hmgate_app_state_requests_total',
      help: 'App-state requests answered over NATS, by subject and result (found, not_found, not_fresh, bad_request, error)',
      labelNames: ['subject', 'result'],
      registers: [registry],
    })
  );
}

export class AppStateSource implements Stage {
  private readonly unsubscribes: (() => void)[] = [];
  private readonly drops: DropReporter;
  private readonly requests: Counter<'subject' | 'result'>;
  private lastError: string | null = null;
  /** Answers in flight, so stop() lets them finish. */
  private readonly pending = new Set<Promise<void>>();

  constructor(
    private readonly options: AppStateStageOptions,
    private readonly ctx: StageContext,
  ) {
    this.drops = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    this.requests = requestsCounter(ctx.metrics);
  }

  start(): void {
    const opts = this.options.queue === '' ? undefined : { queue: this.options.queue };
    this.unsubscribes.push(
      this.ctx.bus.subscribe(this.options.subject, (msg) => this.receive(msg, 'single'), opts),
      this.ctx.bus.subscribe(this.options.bulk_subject, (msg) => this.receive(msg, 'bulk'), opts),
    );
  }

  /** Handles one request; returns the answer it started (for tests), none without a reply subject. */
  receive(msg: BusMessage, kind: 'single' | 'bulk'): Promise<void> | undefined {
    const reply = msg.reply;
    if (!reply) return undefined; // HM9000 drops these silently
    const work = this.answer(msg.subject, msg.data, kind).then((body) => {
      try {
        this.ctx.bus.publish(reply, body);
      } catch (err) {
        this.ctx.logger.warn({ subject: msg.subject, error: errorText(err) }, `could not reply to an ${msg.subject} request: ${errorText(err)}`);
      }
    });
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
    return work;
  }

  /** The reply body; never throws. */
  async answer(subject: string, data: Uint8Array | string, kind: 'single' | 'bulk'): Promise<string> {
    const done = (result: Result, body: string): string => {
      this.requests.inc({ subject, result });
      return body;
    };
    try {
      // HM9000 verified freshness before reading the request.
      const snapshot = await this.ctx.store.snapshot();
      const now = this.ctx.clock.now();
      this.lastError = null;
      if (!isActualFresh(snapshot.freshness.actual, now, this.ctx.freshness.actualTtlMs) || !isDesiredFresh(snapshot.freshness.desired, now)) {
        this.ctx.logger.debug({ subject }, `answered {} to an ${subject} request: state is not fresh`);
        return done('not_fresh', EMPTY_APP_STATE);
      }
      const text = decodeRequestBody(data);
      const apps = appViewLookup(snapshot);
      if (kind === 'single') {
        const parsed = parseAppStateRequest(text);
        if (!parsed.ok) {
          this.drops.drop(subject, parsed.reason, parsed.detail);
          return done('bad_request', EMPTY_APP_STATE);
        }
        const body = singleAppStateBody(apps, parsed.value);
        return done(body === EMPTY_APP_STATE ? 'not_found' : 'found', body);
      }
      const parsed = parseBulkAppStateRequest(text);
      if (!parsed.ok) {
        this.drops.drop(subject, parsed.reason, parsed.detail);
        return done('bad_request', EMPTY_APP_STATE);
      }
      const body = bulkAppStateBody(apps, parsed.value);
      return done(body === EMPTY_APP_STATE ? 'not_found' : 'found', body);
    } catch (err) {
      this.lastError = `could not answer an ${subject} request: ${errorText(err)}`;
      this.ctx.logger.error({ subject, error: errorText(err) }, this.lastError);
      return done('error', EMPTY_APP_STATE);
    }
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  async stop(): Promise<void> {
    for (const off of this.unsubscribes.splice(0)) off();
    await Promise.all(this.pending);
  }
}

export default definePlugin({
  name: 'app-state',
  kind: 'source',
  family: 'hm9000',
  description:
    "Answers HM9000's app-state requests over NATS (app.state: one app's JSON; app.state.bulk: apps keyed by guid) in a queue group; {} when state is not fresh or on any error.",
  optionsSchema: AppStateOptions,
  create: (options, ctx) => new AppStateSource(options, ctx),
  summary: (o) => `app-state answers ${String(o.subject)} and ${String(o.bulk_subject)}${o.queue ? ` (queue ${String(o.queue)})` : ''}`,
});
