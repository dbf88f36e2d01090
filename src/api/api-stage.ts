/**
 * The HTTP API as the engine's last stage: the Hono app put on `api.listen` when the stage starts,
 * closed when it stops.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Config } from '../config/schema.js';
import type { DumpDoc } from '../dump/build.js';
import type { LoggerFactory } from '../log.js';
import type { DecisionAudit } from '../operator/audit.js';
import type { ShadowComparer } from '../operator/shadow.js';
import type { Droplet } from '../sdk/droplets.js';
import type { Stage } from '../sdk/stage.js';
import type { StoreSnapshot } from '../sdk/state.js';
import { buildApi, type ApiDeps } from './app.js';
import type { ConfirmLoss } from './routes/confirm-loss.js';
import type { StatusBody } from './routes/status.js';
import { listen, type RunningServer } from './server.js';

/** What the API shows of a running engine, and the one thing it changes (a confirmed loss). */
export interface EngineView {
  status(): Promise<StatusBody>;
  dump(): Promise<DumpDoc>;
  confirmLoss: ConfirmLoss;
  snapshot(): Promise<StoreSnapshot>;
  bothFresh(): Promise<boolean>;
  /** Computes the metrics that are cheaper to compute when scraped. */
  refreshMetrics(): Promise<void>;
  now(): number;
  metrics: Registry;
  audit: DecisionAudit;
  /** An app's record on the event path (Ruby HM presets). */
  record(guid: string): Droplet | undefined;
  shadow(): ShadowComparer | undefined;
  /** The Ruby HM's statistics, when a stage keeps them. */
  varz?: () => Record<string, unknown>;
}

/** The API of an engine, as `api:` in the config sets it. */
export function engineApi(api: Config['api'], engine: EngineView, loggers: LoggerFactory): ApiStage {
  const logger = loggers.component('api');
  const deps: ApiDeps = {
    user: api.user,
    password: api.password,
    status: () => engine.status(),
    metrics: engine.metrics,
    beforeMetrics: () => engine.refreshMetrics(),
    appState: { snapshot: () => engine.snapshot(), fresh: () => engine.bothFresh(), logger },
    confirmLoss: () => engine.confirmLoss(),
    inspect: {
      dump: () => engine.dump(),
      snapshot: () => engine.snapshot(),
      now: () => engine.now(),
      audit: engine.audit,
      records: { peek: (guid) => engine.record(guid) },
    },
    shadow: () => engine.shadow(),
    ...(engine.varz ? { varz: engine.varz } : {}),
    logger,
  };
  return new ApiStage(deps, api.listen, loggers.component('engine'));
}

export class ApiStage implements Stage {
  private server: RunningServer | undefined;

  constructor(
    private readonly deps: ApiDeps,
    private readonly listenOn: string,
    private readonly logger: Logger,
  ) {}

  /** The listening address, once started. */
  get address(): RunningServer | undefined {
    return this.server;
  }

  async start(): Promise<void> {
    this.server = await listen(buildApi(this.deps), this.listenOn);
    this.logger.info({ listen: `${this.server.host}:${this.server.port}` }, `API listening on ${this.server.host}:${this.server.port}`);
  }

  async stop(): Promise<void> {
    await this.server?.close();
  }
}
