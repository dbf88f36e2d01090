/**
 * With bus.monitor_url set, asks the NATS server now and then whether anybody subscribes to the
 * sinks' start/stop subjects (never publishing there: the CC would act on it). The answers are
 * facts for the problems (NO_START_STOP_LISTENER, NATS_MONITOR_UNREACHABLE).
 */
import type { Logger } from 'pino';
import { subscribersOf } from '../bus/nats-monitor.js';
import { errorText } from '../log.js';
import type { Clock, Timer } from '../sdk/clock.js';
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import type { ListenerFacts } from './problems.js';

/** How long the monitoring endpoint may take to answer. */
const PROBE_TIMEOUT_MS = 5_000;

export class ListenerProbe {
  private facts: ListenerFacts[] = [];
  private timer: Timer | undefined;
  private run: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly targets: readonly { stage: string; subjects: string[] }[],
    private readonly intervalMs: number,
    private readonly clock: Clock,
    private readonly logger: Logger,
    /** Called after each answer (the problems are evaluated again). */
    private readonly onAnswer: () => Promise<void>,
  ) {}

  /** A probe of the start/stop subjects of the config's sinks (every 3 heartbeats, 1–30 s); none if no sink publishes on NATS. */
  static forStages(url: string, loaded: LoadedConfig, clock: Clock, logger: Logger, onAnswer: () => Promise<void>): ListenerProbe | undefined {
    const targets = loaded.stages.map((s) => ({ stage: s.id, subjects: publishedSubjects(s) })).filter((t) => t.subjects.length > 0);
    if (targets.length === 0) return undefined;
    const interval = Math.min(30_000, Math.max(1_000, 3 * loaded.heartbeatMs));
    return new ListenerProbe(url, targets, interval, clock, logger, onAnswer);
  }

  /** What the last answer said, per sink stage. */
  current(): ListenerFacts[] {
    return this.facts;
  }

  start(): void {
    const subjects = [...new Set(this.targets.flatMap((t) => t.subjects))];
    const probe = async () => {
      const answer = await subscribersOf(this.url, subjects, PROBE_TIMEOUT_MS);
      this.facts = answer.ok
        ? this.targets.map((t) => ({ stage: t.stage, missing: t.subjects.filter((s) => (answer.subscribers.get(s) ?? 0) === 0) }))
        : [{ stage: this.targets[0]!.stage, error: answer.error }];
      await this.onAnswer();
    };
    const loop = () => {
      this.run = probe()
        .catch((err: unknown) => this.logger.debug({ error: errorText(err) }, 'start/stop listener probe failed'))
        .finally(() => {
          this.run = undefined;
          if (!this.stopped) this.timer = this.clock.setTimeout(loop, this.intervalMs);
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.clock.clearTimeout(this.timer);
    await this.run;
  }
}

/** The NATS subjects a stage publishes starts and stops on (its plugin's `publishes`), each once. */
export function publishedSubjects(s: Pick<ResolvedStage, 'plugin' | 'options'>): string[] {
  return typeof s.plugin.publishes === 'function' ? [...new Set(s.plugin.publishes(s.options))] : [];
}
