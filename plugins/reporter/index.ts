/**
 * The `reporter` (the Ruby Health Manager's Reporter, Varz and component registration):
 *
 * - answers `healthmanager.status`, `healthmanager.health` and `healthmanager.droplet` over NATS
 *   request/reply from the app records (docs/ruby-hm.md#status-health-and-droplet-replies; replies.ts);
 * - keeps the varz hash from the events it declares — heartbeats, exits, updates, the bulk walk and
 *   the analysis pass — with the desired/realtime publish split (docs/ruby-hm.md#statistics,
 *   #statistics-in-the-older-design; varz.ts), shown by `GET /varz` and as hmgate_ruby_* metrics;
 * - optionally registers as a VCAP component (docs/ruby-hm.md#component-registration; component.ts).
 *
 * It is a reporter: it decides nothing, and sees each event after every policy has handled it: its
 * per-app figures are taken when an app's analysis is over, as the Ruby HM took them.
 */
import { cpus } from 'node:os';
import { Type, type Static } from '@sinclair/typebox';
import { Counter, type Registry } from 'prom-client';
import {
  type BusMessage,
  counted,
  definePlugin,
  DropReporter,
  errorText,
  type EventInput,
  type EventKind,
  type EventObserverStage,
  type StageContext,
  type StageHealth,
} from '../../src/sdk/index.js';
import { sentRequestTally } from '../notifier/index.js';
import { checkComponent, Component, uptimeString } from './component.js';
import { dropletAnswer, healthAnswer, statusAnswer, type Answer } from './replies.js';
import { Varz, type ReceivedMessage } from './varz.js';

export { dropletJson } from '../../src/sdk/index.js';
export { rubyTime, uptimeString } from './component.js';

const Subject = (def: string, description: string) => Type.String({ minLength: 1, default: def, description });

export const ReporterOptions = Type.Object(
  {
    status_subject: Subject(
      'healthmanager.status',
      'Subject of status requests {"droplet","state":"FLAPPING"|"CRASHED","version"} (Ruby HM: healthmanager.status).',
    ),
    health_subject: Subject(
      'healthmanager.health',
      'Subject of health requests {"droplets":[{"droplet","version"}]}, one reply per known app (Ruby HM: healthmanager.health).',
    ),
    droplet_subject: Subject(
      'healthmanager.droplet',
      'Subject of debug requests {"droplets":[{"droplet"}]}, answered with each known app\'s record (Ruby HM: healthmanager.droplet).',
    ),
    start_stop_counters: Type.Boolean({
      default: true,
      description:
        'Show health_start_messages_sent / health_stop_messages_sent in varz, counted from the notifier (Ruby HM 1063399; false for the older design, which had none).',
    }),
    max_droplets_in_varz: Type.Integer({
      minimum: 0,
      default: 0,
      description:
        "At the end of each analysis pass varz `droplets` holds every app record if there are at most this many, else {} (the older Ruby HM's intervals.max_droplets_in_varz; 0 keeps it {}, as later versions always did).",
    }),
    component: Type.Object(
      {
        enabled: Type.Boolean({
          default: false,
          description: 'Register as a VCAP component: answer vcap.component.discover and announce on vcap.component.announce at start.',
        }),
        type: Type.String({ minLength: 1, default: 'HealthManager', description: 'The component type announced (Ruby HM: HealthManager).' }),
        index: Type.Integer({ minimum: 0, default: 0, description: 'The component index announced, also the prefix of its uuid (Ruby HM: index).' }),
        announce_host: Type.Optional(
          Type.String({
            pattern: '^[^\\s:/]+:\\d+$',
            description:
              "host:port where the collector reads /varz: this daemon's API as reachable from the collector (Ruby HM: local_route's IP and status.port). Required when enabled.",
          }),
        ),
        user: Type.Optional(
          Type.String({ description: "The API's basic-auth user, announced so the collector can read /varz (Ruby HM: status.user). Required when enabled." }),
        ),
        password: Type.Optional(
          Type.String({
            description: "The API's basic-auth password, announced for the same reason and never logged (Ruby HM: status.password). Required when enabled.",
          }),
        ),
        discover_subject: Subject('vcap.component.discover', 'Subject of discovery requests.'),
        announce_subject: Subject('vcap.component.announce', 'Subject of the announcement at start.'),
      },
      { additionalProperties: false, default: {}, description: 'VCAP component registration (off by default).' },
    ),
  },
  { additionalProperties: false },
);

export type ReporterConfig = Static<typeof ReporterOptions>;

type RequestKind = 'status' | 'health' | 'droplet';

const RECEIVED: Record<RequestKind, ReceivedMessage> = {
  status: 'healthmanager_status_msgs_received',
  health: 'healthmanager_health_request_msgs_received',
  droplet: 'healthmanager_droplet_request_msgs_received',
};

function repliesCounter(registry: Registry): Counter<'subject'> {
  return (
    (registry.getSingleMetric('hmgate_ruby_replies_total') as Counter<'subject'> | undefined) ??
    new Counter({
      name: 'hmgate_ruby_replies_total',
      help: 'Replies published to healthmanager.* requests, by request subject',
      labelNames: ['subject'],
      registers: [registry],
    })
  );
}

/** The walk event may carry the user count of the Cloud Controller (varz total_users). */
const usersOf = (event: object): number | undefined => {
  const users = (event as { users?: unknown }).users;
  return typeof users === 'number' && Number.isFinite(users) ? users : undefined;
};

export class Reporter implements EventObserverStage {
  readonly events: readonly EventKind[] = ['heartbeat-message', 'exit', 'updated', 'desired', 'walk', 'analyze', 'pass'];
  private readonly varzHash: Varz;
  private readonly component: Component;
  private readonly drops: DropReporter;
  private readonly replies: Counter<'subject'>;
  private readonly unsubscribes: (() => void)[] = [];
  private readonly startedMs: number;
  private lastError: string | null = null;

  constructor(
    private readonly o: ReporterConfig,
    private readonly ctx: StageContext,
  ) {
    this.startedMs = ctx.clock.now();
    this.varzHash = new Varz(
      { startStopCounters: o.start_stop_counters, maxDropletsInVarz: o.max_droplets_in_varz, sent: () => sentRequestTally(ctx.metrics) },
      ctx.metrics,
      this.startedMs,
    );
    this.component = new Component(o.component, ctx, this.startedMs);
    this.drops = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    this.replies = repliesCounter(ctx.metrics);
  }

  static create(o: ReporterConfig, ctx: StageContext): Reporter {
    const problems = checkComponent(o.component, ctx.id);
    if (problems.length > 0) throw new Error(problems.join('; '));
    return new Reporter(o, ctx);
  }

  start(): void {
    this.unsubscribes.push(
      this.ctx.bus.subscribe(this.o.status_subject, (m) => this.receive('status', m)),
      this.ctx.bus.subscribe(this.o.health_subject, (m) => this.receive('health', m)),
      this.ctx.bus.subscribe(this.o.droplet_subject, (m) => this.receive('droplet', m)),
    );
    if (this.o.component.enabled) this.component.start();
  }

  stop(): void {
    for (const off of this.unsubscribes.splice(0)) off();
    this.component.stop();
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  /** Counts what varz counts. */
  observe(input: EventInput): void {
    const e = input.event;
    const v = this.varzHash;
    switch (e.kind) {
      case 'heartbeat-message':
        v.received('heartbeat_msgs_received');
        break;
      case 'exit':
        v.received('droplet_exited_msgs_received');
        if (e.reason === 'CRASHED') v.crashExit();
        break;
      case 'updated':
        v.received('droplet_updated_msgs_received');
        break;
      case 'desired':
        v.desiredApp(e.app);
        break;
      case 'walk': {
        if (e.phase === 'start') v.walkStarted(input.now);
        else v.walkDone(input.now);
        const users = usersOf(e);
        if (users !== undefined) v.totalUsers(users);
        break;
      }
      case 'analyze':
        if (input.droplet) v.analysed(input.droplet);
        break;
      case 'pass':
        if (e.phase === 'start') v.passStarted();
        else {
          const durationMs = e.durationMs ?? 0;
          v.passDone(durationMs, this.ctx.events.droplets);
          const s = v.current();
          this.ctx.logger.info(
            {
              running_instances: s.running_instances,
              missing_instances: s.missing_instances,
              flapping_instances: s.flapping_instances,
              duration_ms: durationMs,
            },
            `Analyzed ${String(s.running_instances)} running ${String(s.missing_instances)} missing instances. Elapsed time: ${durationMs / 1000}`,
          );
        }
        break;
      default:
    }
  }

  /** The start queue's size after an insert (varz queue_length). */
  setQueueLength(n: number): void {
    this.varzHash.queueLength(n);
  }

  /** What `GET /varz` shows: the component's card (no credentials), the published hash, process figures. */
  varz(): Record<string, unknown> {
    const c = this.component.varz();
    const head: Record<string, unknown> = this.o.component.enabled ? c : { type: c.type, index: c.index, start: c.start };
    const now = this.ctx.clock.now();
    const cpu = process.cpuUsage();
    const processMs = Math.max(1, process.uptime() * 1000);
    return {
      ...head,
      num_cores: cpus().length,
      ...this.varzHash.publishedStats(),
      uptime: uptimeString(now - this.startedMs),
      // Resident set size in KB, and the CPU share since start in percent, as VCAP components showed them.
      mem: Math.round(process.memoryUsage().rss / 1024),
      cpu: Number(((cpu.user + cpu.system) / 10 / processMs).toFixed(1)),
    };
  }

  /** One request: counted first (as the Ruby HM counted even requests it then failed on), then answered. */
  private receive(kind: RequestKind, msg: BusMessage): void {
    this.varzHash.received(RECEIVED[kind]);
    const subject = msg.subject;
    if (!msg.reply) {
      this.drops.drop(subject, 'no_reply_subject', 'a request without a reply subject cannot be answered');
      return;
    }
    let answer: Answer;
    try {
      const droplets = this.ctx.events.droplets;
      answer =
        kind === 'status'
          ? statusAnswer(droplets, msg.data)
          : kind === 'health'
            ? healthAnswer(droplets, msg.data, this.ctx.clock.now())
            : dropletAnswer(droplets, msg.data);
    } catch (err) {
      this.lastError = `could not answer a ${subject} request: ${errorText(err)}`;
      this.ctx.logger.error({ subject, error: errorText(err) }, this.lastError);
      return;
    }
    for (const body of answer.bodies) {
      try {
        this.ctx.bus.publish(msg.reply, body);
        this.replies.inc({ subject });
      } catch (err) {
        this.ctx.logger.warn({ subject, error: errorText(err) }, `could not reply to a ${subject} request: ${errorText(err)}`);
        break;
      }
    }
    if (answer.bad) {
      const rest = answer.bodies.length > 0 ? ` (${counted(answer.bodies.length, 'reply', 'replies')} sent before it)` : '';
      this.drops.drop(subject, answer.bad.reason, `${answer.bad.detail}${rest}`);
    }
    if (answer.unknown.length > 0)
      this.ctx.logger.debug({ subject, droplets: answer.unknown }, `no reply for apps without a record: ${answer.unknown.join(', ')}`);
    if (answer.ignoredState !== undefined)
      this.ctx.logger.debug({ subject, state: answer.ignoredState }, `status requests for state ${JSON.stringify(answer.ignoredState)} are not answered`);
    this.lastError = null;
  }
}

export default definePlugin({
  name: 'reporter',
  kind: 'reporter',
  family: 'ruby-hm',
  description:
    "The Ruby Health Manager's reporter: answers healthmanager.status / .health / .droplet from the app records, keeps its varz (GET /varz, hmgate_ruby_* metrics), and can register as a VCAP component. Decides nothing.",
  optionsSchema: ReporterOptions,
  create: (options, ctx) => Reporter.create(options, ctx),
  summary: (o) =>
    `reporter answers ${String(o.status_subject)}, ${String(o.health_subject)} and ${String(o.droplet_subject)}; keeps /varz${(o.component as { enabled?: boolean } | undefined)?.enabled ? '; registers as a VCAP component' : ''}`,
});
