/**
 * The Ruby Health Manager's statistics (`/varz`, docs/ruby-hm.md#statistics, #statistics-in-the-older-design;
 * Ruby `lib/health_manager/varz.rb`). It kept a private hash of
 * counters and sums and copied it into the published varz at two moments only:
 *
 * - at the end of a complete bulk walk, everything but the realtime figures ("desired" publish,
 *   with bulk_update_loop_duration = seconds since the walk began);
 * - at the end of a complete analysis pass, everything but the desired sums ("realtime" publish,
 *   with analysis_loop_duration).
 *
 * So message counters show in the published varz as of the last publish, not live. This class keeps
 * both hashes, with the keys in the original order, and sets gauges of the main figures at the same
 * moments (counters of received messages are live Prometheus counters).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { type DesiredApp, type Droplet, dropletJson, type DropletRegistry, getInstance } from '../../src/sdk/index.js';

/** The desired-state sums, reset when a bulk walk begins. */
function defaultDesired() {
  return {
    users: [] as unknown[],
    apps: [] as unknown[],
    total: { apps: 0, started_apps: 0, instances: 0, started_instances: 0, memory: 0, started_memory: 0 },
  };
}

/** The realtime figures, reset when an analysis pass begins. */
function defaultRealtime() {
  return {
    total_apps: 0,
    total_instances: 0,
    running_instances: 0,
    missing_instances: 0,
    crashed_instances: 0,
    flapping_instances: 0,
    running: { apps: 0, crashes: 0, running_instances: 0, missing_instances: 0, flapping_instances: 0 },
  };
}

const DESIRED_KEYS: ReadonlySet<string> = new Set(Object.keys(defaultDesired()));
const REALTIME_KEYS: ReadonlySet<string> = new Set(Object.keys(defaultRealtime()));

type Stats = Record<string, unknown> &
  ReturnType<typeof defaultDesired> &
  ReturnType<typeof defaultRealtime> & { analysis_loop_duration: number; bulk_update_loop_duration: number; droplets: Record<string, unknown> };

/** Messages counted in varz, and the label of each in hmgate_ruby_messages_received_total. */
export type ReceivedMessage =
  | 'heartbeat_msgs_received'
  | 'droplet_exited_msgs_received'
  | 'droplet_updated_msgs_received'
  | 'healthmanager_status_msgs_received'
  | 'healthmanager_health_request_msgs_received'
  | 'healthmanager_droplet_request_msgs_received';

export interface VarzOptions {
  /** health_start_messages_sent / health_stop_messages_sent exist (1063399; the older design had none). */
  startStopCounters: boolean;
  /** At the end of a pass, `droplets` holds every record if there are at most this many; else {}. */
  maxDropletsInVarz: number;
  /** The requests sent so far (read at each publish). */
  sent(): { start: number; stop: number };
}

interface Figures {
  running: Gauge;
  missing: Gauge;
  flapping: Gauge;
  crashed: Gauge;
  apps: Gauge;
  instances: Gauge;
  desiredApps: Gauge<'state'>;
  desiredInstances: Gauge<'state'>;
  desiredMemory: Gauge<'state'>;
  analysisSeconds: Gauge;
  bulkSeconds: Gauge;
  received: Counter<'message'>;
}

function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

function figures(registry: Registry): Figures {
  const gauge = (name: string, help: string) => metric(registry, name, () => new Gauge({ name, help, registers: [registry] }));
  const byState = (name: string, help: string) =>
    metric(registry, name, () => new Gauge({ name, help, labelNames: ['state'] as const, registers: [registry] }));
  return {
    running: gauge(
      'hmgate_ruby_running_instances',
      'Desired indices of STARTED apps whose record is STARTING or RUNNING, at the end of the last analysis pass (varz running_instances)',
    ),
    missing: gauge(
      'hmgate_ruby_missing_instances',
      'Desired indices of STARTED apps whose record is DOWN, at the end of the last analysis pass (varz missing_instances)',
    ),
    flapping: gauge(
      'hmgate_ruby_flapping_instances',
      'Desired indices of STARTED apps whose record is FLAPPING, at the end of the last analysis pass (varz flapping_instances)',
    ),
    crashed: gauge(
      'hmgate_ruby_crashed_instances',
      'Crash records of all apps plus crash exits received during the last analysis pass (varz crashed_instances)',
    ),
    apps: gauge('hmgate_ruby_analysed_apps', 'App records looked at by the last analysis pass (varz total_apps)'),
    instances: gauge('hmgate_ruby_analysed_instances', 'Desired instances of the app records of the last analysis pass (varz total_instances)'),
    desiredApps: byState('hmgate_ruby_desired_apps', 'Apps in the last complete bulk walk, all or STARTED only (varz total.apps / total.started_apps)'),
    desiredInstances: byState(
      'hmgate_ruby_desired_instances',
      'Desired instances in the last complete bulk walk, all or of STARTED apps (varz total.instances / total.started_instances)',
    ),
    desiredMemory: byState(
      'hmgate_ruby_desired_memory_mb',
      'Memory × instances in the last complete bulk walk, all or of STARTED apps, in MB (varz total.memory / total.started_memory)',
    ),
    analysisSeconds: gauge('hmgate_ruby_analysis_loop_duration_seconds', 'How long the last complete analysis pass took (varz analysis_loop_duration)'),
    bulkSeconds: gauge('hmgate_ruby_bulk_update_loop_duration_seconds', 'How long the last complete bulk walk took (varz bulk_update_loop_duration)'),
    received: metric(
      registry,
      'hmgate_ruby_messages_received_total',
      () =>
        new Counter({
          name: 'hmgate_ruby_messages_received_total',
          help: 'Messages counted in varz, by varz counter (heartbeat_msgs_received, droplet_exited_msgs_received, healthmanager_status_msgs_received, …)',
          labelNames: ['message'] as const,
          registers: [registry],
        }),
    ),
  };
}

const deepCopy = <T>(v: T): T => structuredClone(v);

export class Varz {
  private readonly stats: Stats;
  private readonly published: Record<string, unknown> = {};
  private desiredResetAt: number;
  private readonly figures: Figures;

  constructor(
    private readonly o: VarzOptions,
    registry: Registry,
    nowMs: number,
  ) {
    this.desiredResetAt = nowMs;
    this.figures = figures(registry);
    this.stats = {
      total_users: 0,
      queue_length: 0,
      heartbeat_msgs_received: 0,
      droplet_exited_msgs_received: 0,
      droplet_updated_msgs_received: 0,
      healthmanager_status_msgs_received: 0,
      healthmanager_health_request_msgs_received: 0,
      healthmanager_droplet_request_msgs_received: 0,
      ...(o.startStopCounters ? { health_start_messages_sent: 0, health_stop_messages_sent: 0 } : {}),
      analysis_loop_duration: 0,
      bulk_update_loop_duration: 0,
      varz_publishes: 0,
      varz_holds: 0,
      droplets: {},
      state: 'RUNNING',
      last_up_known: null,
      ...defaultDesired(),
      ...defaultRealtime(),
    };
  }

  /** The private hash as it stands (for tests and dumps); what /varz shows is published(). */
  current(): Readonly<Record<string, unknown>> {
    return this.stats;
  }

  /** The hash as of the last publishes. */
  publishedStats(): Record<string, unknown> {
    return deepCopy(this.published);
  }

  received(what: ReceivedMessage): void {
    (this.stats[what] as number)++;
    this.figures.received.inc({ message: what });
  }

  /** A CRASHED exit counts as a crashed instance until the next pass begins. */
  crashExit(): void {
    this.stats.crashed_instances++;
  }

  /** The size of the start queue at its last insert. */
  queueLength(n: number): void {
    this.stats.queue_length = n;
  }

  totalUsers(n: number): void {
    this.stats.total_users = n;
  }

  walkStarted(nowMs: number): void {
    this.desiredResetAt = nowMs;
    Object.assign(this.stats, defaultDesired());
  }

  /** One app of a bulk walk: memory counts memory × instances (an app without memory counts 0). */
  desiredApp(app: DesiredApp): void {
    const t = this.stats.total;
    const memory = typeof app.memory === 'number' && Number.isFinite(app.memory) ? app.memory * app.instances : 0;
    t.apps++;
    t.instances += app.instances;
    t.memory += memory;
    if (app.state === 'STARTED') {
      t.started_apps++;
      t.started_instances += app.instances;
      t.started_memory += memory;
    }
  }

  walkDone(nowMs: number): void {
    this.stats.bulk_update_loop_duration = (nowMs - this.desiredResetAt) / 1000;
    this.publish(REALTIME_KEYS);
    const t = this.stats.total;
    const f = this.figures;
    f.desiredApps.set({ state: 'all' }, t.apps);
    f.desiredApps.set({ state: 'started' }, t.started_apps);
    f.desiredInstances.set({ state: 'all' }, t.instances);
    f.desiredInstances.set({ state: 'started' }, t.started_instances);
    f.desiredMemory.set({ state: 'all' }, t.memory);
    f.desiredMemory.set({ state: 'started' }, t.started_memory);
    f.bulkSeconds.set(this.stats.bulk_update_loop_duration);
  }

  passStarted(): void {
    Object.assign(this.stats, defaultRealtime());
  }

  /**
   * One app record after its analysis. The desired indices of the live version are read as the Ruby
   * HM read them, creating absent records (DOWN), which count as missing.
   */
  analysed(d: Droplet): void {
    const s = this.stats;
    s.total_apps++;
    s.total_instances += d.numInstances;
    s.crashed_instances += d.crashes.size;
    if (d.state !== 'STARTED') return;
    s.running.apps++;
    for (let i = 0; i < d.numInstances; i++) {
      switch (getInstance(d, i).state) {
        case 'STARTING':
        case 'RUNNING':
          s.running_instances++;
          s.running.running_instances++;
          break;
        case 'DOWN':
          s.missing_instances++;
          s.running.missing_instances++;
          break;
        case 'FLAPPING':
          s.flapping_instances++;
          s.running.flapping_instances++;
          break;
        default: // CRASHED counts in none
      }
    }
    s.running.crashes += d.crashes.size;
  }

  passDone(durationMs: number, registry: DropletRegistry): void {
    const s = this.stats;
    s.droplets =
      registry.size <= this.o.maxDropletsInVarz ? Object.fromEntries([...registry.values()].map((d) => [d.id, JSON.parse(dropletJson(d)) as unknown])) : {};
    s.analysis_loop_duration = durationMs / 1000;
    this.publish(DESIRED_KEYS);
    const f = this.figures;
    f.running.set(s.running_instances);
    f.missing.set(s.missing_instances);
    f.flapping.set(s.flapping_instances);
    f.crashed.set(s.crashed_instances);
    f.apps.set(s.total_apps);
    f.instances.set(s.total_instances);
    f.analysisSeconds.set(s.analysis_loop_duration);
  }

  /** Copies every key but the excluded group into the published hash (new keys go last, as in a Ruby hash). */
  private publish(exclude: ReadonlySet<string>): void {
    if (this.o.startStopCounters) {
      const sent = this.o.sent();
      this.stats.health_start_messages_sent = sent.start;
      this.stats.health_stop_messages_sent = sent.stop;
    }
    for (const [k, v] of Object.entries(this.stats)) if (!exclude.has(k)) this.published[k] = deepCopy(v);
  }
}
