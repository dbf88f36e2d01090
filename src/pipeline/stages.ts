/**
 * The running stages: each built by its plugin's factory, started in order, and stopped in reverse
 * (each within a timeout, so a stuck stage cannot hold up shutdown). What a stage can do beyond its
 * kind is found by the capability guards of src/sdk/capabilities.ts, never by casts.
 */
import type { Logger } from 'pino';
import { errorText } from '../log.js';
import { stageSummary } from '../operator/stage-summary.js';
import type { PluginDefinition } from '../sdk/plugin.js';
import type { Stage, StageHealth } from '../sdk/stage.js';

export class StageStartError extends Error {
  constructor(
    readonly stageId: string,
    readonly plugin: string,
    cause: unknown,
  ) {
    super(`stage "${stageId}" (${plugin}) failed to start: ${errorText(cause)}`, { cause });
    this.name = 'StageStartError';
  }
}

/** What a stage is, apart from the stage object. */
export interface StageInfo {
  id: string;
  kind: string;
  /** The config section: store, bus, sources, policies, reporters, sinks, api. */
  section: string;
  /** The plugin as written (`plugin:`). */
  plugin: string;
  /** The plugin's own name (heartbeat, bulk-api, …), for summaries and problems. */
  pluginName: string;
  /** The plugin, which describes its stages (summary, problems); none for the bus and the API. */
  definition?: PluginDefinition;
  options: Record<string, unknown>;
}

export interface RunningStage extends StageInfo {
  stage: Stage;
}

/** The order /v1/status lists stages in: as the config reads, whatever order they started in. */
const SECTION_ORDER = ['store', 'bus', 'sources', 'policies', 'reporters', 'sinks', 'api'];

export class StageSet {
  private readonly running: RunningStage[] = [];

  constructor(private readonly logger: Logger) {}

  /**
   * Builds and starts one stage; only started stages are stopped later (a stage whose start failed
   * cleans up after itself). Logs one readable line per stage: what it does, with its main options.
   */
  async start<T extends Stage>(info: StageInfo, build: () => T | Promise<T>): Promise<T> {
    try {
      const stage = await build();
      await stage.start?.();
      this.running.push({ ...info, stage });
      this.logger.info({ stage: info.id, kind: info.kind, plugin: info.plugin }, stageSummary({ ...info, plugin: info.pluginName }));
      return stage;
    } catch (err) {
      throw new StageStartError(info.id, info.plugin, err);
    }
  }

  /** Every started stage, in start order. */
  all(): readonly RunningStage[] {
    return this.running;
  }

  /** The started stages that offer a capability (by its guard), in start order. */
  offering<C extends Stage>(guard: (stage: Stage) => stage is C): { id: string; section: string; stage: C }[] {
    const out: { id: string; section: string; stage: C }[] = [];
    for (const r of this.running) if (guard(r.stage)) out.push({ id: r.id, section: r.section, stage: r.stage });
    return out;
  }

  /** A stage's health: what it says, or healthy once started. */
  static health(r: RunningStage): StageHealth {
    return r.stage.health?.() ?? { healthy: true, last_error: null };
  }

  /** The stages in config order (store, bus, sources, policies, sinks, api), for the status. */
  inConfigOrder(): RunningStage[] {
    return [...this.running].sort((a, b) => SECTION_ORDER.indexOf(a.section) - SECTION_ORDER.indexOf(b.section));
  }

  /** Stops every started stage in reverse order, each within `timeoutMs`; a failure is logged, not thrown. */
  async stopAll(timeoutMs: number): Promise<void> {
    for (const r of [...this.running].reverse()) {
      if (!r.stage.stop) continue;
      try {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.resolve(r.stage.stop()),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`did not stop within ${timeoutMs}ms`)), timeoutMs))),
        ]).finally(() => clearTimeout(timer));
      } catch (err) {
        this.logger.error({ stage: r.id, error: errorText(err) }, `stage "${r.id}" failed to stop: ${errorText(err)}`);
      }
    }
    this.running.length = 0;
  }
}
