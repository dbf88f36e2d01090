/**
 * The problems shown live in /v1/status: derived from what the engine already knows — each stage's
 * health, the freshness verdicts, a summary of the stored state, and (with bus.monitor_url) who
 * subscribes to the start/stop subjects — and named with the codes of the one catalogue
 * (src/sdk/problems.ts) that `hmgate doctor` uses too. The bus, the freshness and what spans
 * stages are named here; what a stage's own health implies, its plugin names (its definition's
 * `problems`, and a store's `storeProblem` for failures of the store).
 *
 * deriveProblems is pure. ProblemTracker remembers since when each problem holds, and logs each
 * one once when it appears (warn) and once when it clears (info), however often it is evaluated.
 */
import type { Logger } from 'pino';
import type { PluginDefinition } from '../sdk/plugin.js';
import { maskUrl } from '../config/mask.js';
import { optionKey } from '../config/option-keys.js';
import {
  isStoreWriteError,
  makeProblem,
  PROBLEM_CODES,
  stageUnhealthy,
  withoutAdvice,
  type Problem,
  type ProblemCode,
  type StateFacts,
} from '../sdk/problems.js';
import type { Hold } from '../pipeline/freshness/board.js';

export { makeProblem, type Problem, type ProblemCode, type StateFacts } from '../sdk/problems.js';

/** One stage as the problems see it. */
export interface StageFacts {
  id: string;
  /** The config section: store, bus, sources, policies, sinks, api. */
  section: string;
  /** The plugin's own name (heartbeat, bulk-api, notifier, etcd, …); the bus is "nats". */
  plugin: string;
  /** The plugin, when the stage has one (the bus and the API have none). */
  definition?: PluginDefinition;
  options: Record<string, unknown>;
  healthy: boolean;
  last_error: string | null;
}

export interface FreshnessFacts {
  fresh: boolean;
  reason: string | null;
}

/** The answer of the NATS monitoring endpoint about the start/stop subjects of one sink. */
export type ListenerFacts = { stage: string; missing: string[] } | { stage: string; error: string };

export interface ProblemFacts {
  /** How long the engine has been running. */
  uptimeMs: number;
  heartbeatMs: number;
  actualTtlMs: number;
  servers: string[];
  monitorUrl?: string;
  stages: StageFacts[];
  actual: FreshnessFacts;
  desired: FreshnessFacts;
  state: StateFacts;
  listeners: ListenerFacts[];
  /** The freshness guards that hold (ingest behind, agents lost together). */
  holds?: Hold[];
  /** freshness.gate: whether stale state holds starts and stops back (absent: on). */
  gate?: boolean;
}

const list = (xs: readonly string[]) => xs.map(maskUrl).join(', ');

/** What the daemon's own start-up may take before freshness can begin (not in heartbeats). */
const START_UP_MS = 2_000;

/** Every problem that holds now, in catalogue order. */
export function deriveProblems(f: ProblemFacts): Problem[] {
  const out: Problem[] = [];
  const bus = f.stages.find((s) => s.section === 'bus');
  const busUp = bus ? bus.healthy : true;
  const servers = list(f.servers);
  if (bus && !bus.healthy) {
    const error = bus.last_error ?? 'not connected';
    out.push(
      /authori[sz]ation/i.test(error)
        ? makeProblem('NATS_AUTH_REFUSED', { servers, error: 'authorization violation' })
        : makeProblem('NATS_UNREACHABLE', { servers, error }),
    );
  }

  const store = f.stages.find((s) => s.section === 'store');
  /** A failure of the store as the configured store names it, if it does (the etcd store: ETCD_UNREACHABLE, …). */
  const named = (error: string, writeError?: string): Problem | undefined =>
    store && typeof store.definition?.storeProblem === 'function'
      ? store.definition.storeProblem({ options: store.options, error, ...(writeError !== undefined ? { writeError } : {}) })
      : undefined;
  const storeError = (stage: StageFacts | undefined, error: string): Problem =>
    named(error) ??
    makeProblem('STAGE_UNHEALTHY', { stage: stage?.id ?? 'store', plugin: stage?.plugin ?? store?.plugin ?? 'store', error }, stage?.id ?? 'store');
  if (store && !store.healthy) out.push(storeError(store, store.last_error ?? 'unhealthy'));
  if ('error' in f.state) out.push(storeError(store, `reading the state failed: ${f.state.error}`));
  // A stage's write to the store that failed is the store's problem, not the CC's nor the agents'.
  const storeWriteProblem = (stage: StageFacts, what: string, error: string): Problem => {
    const why = `${what}: ${withoutAdvice(error.replace(/^.*?\bto the store\b[^:]*:\s*/i, ''))}`;
    return named(why, error) ?? stageUnhealthy(stage, why);
  };
  // While the store fails, what it holds says nothing about the agents: no NO_HEARTBEATS then.
  const storeFailing =
    (store !== undefined && !store.healthy) ||
    'error' in f.state ||
    f.stages.some((s) => !s.healthy && s.last_error !== null && isStoreWriteError(s.last_error));

  for (const s of f.stages) {
    if (s.section === 'bus' || s.section === 'store') continue;
    if (typeof s.definition?.problems === 'function') {
      out.push(
        ...s.definition.problems({
          id: s.id,
          section: s.section,
          plugin: s.plugin,
          options: s.options,
          healthy: s.healthy,
          last_error: s.last_error,
          state: f.state,
          uptimeMs: f.uptimeMs,
          heartbeatMs: f.heartbeatMs,
          busUp,
          storeFailing,
          storeFailure: (error) => storeError(s, error),
          storeWriteFailure: (what, error) => storeWriteProblem(s, what, error),
        }),
      );
    } else if (!s.healthy) {
      out.push(stageUnhealthy(s, s.last_error ?? 'unhealthy'));
    }
  }

  for (const l of f.listeners) {
    if ('error' in l) out.push(makeProblem('NATS_MONITOR_UNREACHABLE', { url: f.monitorUrl ?? '', error: l.error }));
    else if (l.missing.length > 0) {
      const sink = f.stages.find((s) => s.section === 'sinks' && s.id === l.stage);
      const partitionKey = optionKey(sink?.options ?? {}, `sinks.${l.stage}`, 'cc_partition');
      out.push(makeProblem('NO_START_STOP_LISTENER', { stage: `sinks.${l.stage}`, missing: l.missing, monitorUrl: f.monitorUrl ?? '', partitionKey }, l.stage));
    }
  }

  // A desired-state source's plugin names this first, with its stage's id (its `problems`, which
  // comes first); without one, the presets' stage id stands for it.
  if (!('error' in f.state) && f.state.desiredApps > 0 && f.state.liveInstances > 0 && !f.state.desiredHeartbeating) {
    out.push(
      makeProblem('WRONG_FOUNDATION', {
        desiredApps: f.state.desiredApps,
        heartbeatingApps: f.state.heartbeatingApps,
        stage: 'sources.desired',
      }),
    );
  }

  for (const h of f.holds ?? []) {
    if (h.code === 'INGEST_BEHIND') out.push(makeProblem('INGEST_BEHIND', { lagMs: h.lag.lagMs, maxLagMs: h.maxLagMs, cause: h.lag.cause }));
    else out.push(makeProblem('ACTUAL_COLLAPSE', { silent: h.collapse.silent, total: h.collapse.total, windowMs: h.collapse.windowMs }));
  }

  // Not fresh right after start is expected: the actual state needs actual_ttl of heartbeats, after
  // the daemon's own start-up (connecting, the first fetch), whose time does not scale with them.
  const warmUp = f.actualTtlMs + 2 * f.heartbeatMs + START_UP_MS;
  if ((!f.actual.fresh || !f.desired.fresh) && f.uptimeMs >= warmUp) {
    out.push(
      makeProblem('NOT_FRESH', {
        actual: f.actual.fresh ? null : (f.actual.reason ?? 'not fresh'),
        desired: f.desired.fresh ? null : (f.desired.reason ?? 'not fresh'),
        gate: f.gate !== false,
      }),
    );
  }
  return sortProblems(dedupe(out));
}

function dedupe(problems: Problem[]): Problem[] {
  const seen = new Map<string, Problem>();
  for (const p of problems) if (!seen.has(`${p.code}\u0000${p.key}`)) seen.set(`${p.code}\u0000${p.key}`, p);
  return [...seen.values()];
}

const ORDER = new Map<ProblemCode, number>(PROBLEM_CODES.map((c, i) => [c, i]));

function sortProblems(problems: Problem[]): Problem[] {
  return problems.sort((a, b) => ORDER.get(a.code)! - ORDER.get(b.code)! || a.key.localeCompare(b.key));
}

/** A problem as /v1/status shows it. */
export interface ProblemEntry {
  code: ProblemCode;
  message: string;
  fix: string;
  since: string;
}

/**
 * Remembers the problems that hold and since when; logs each appearance once (warn) and each
 * clearing once (info). A problem is the same problem while its code and key are the same, even
 * if its words change (a reason counting down, a changed error text).
 */
export class ProblemTracker {
  private readonly current = new Map<string, { problem: Problem; since: number }>();

  constructor(
    private readonly logger: Logger,
    private readonly now: () => number,
  ) {}

  update(problems: readonly Problem[]): void {
    const now = this.now();
    const seen = new Set<string>();
    for (const p of problems) {
      const k = `${p.code}\u0000${p.key}`;
      seen.add(k);
      const held = this.current.get(k);
      if (held) {
        held.problem = p;
        continue;
      }
      this.current.set(k, { problem: p, since: now });
      this.logger.warn({ problem: p.code, ...(p.key ? { key: p.key } : {}), fix: p.fix }, `${p.message}; fix: ${p.fix}`);
    }
    for (const [k, held] of this.current) {
      if (seen.has(k)) continue;
      this.current.delete(k);
      this.logger.info(
        { problem: held.problem.code, ...(held.problem.key ? { key: held.problem.key } : {}), lasted_ms: now - held.since },
        `cleared: ${held.problem.message}`,
      );
    }
  }

  /** The problems that hold, in catalogue order, with the time each began. */
  list(): ProblemEntry[] {
    return sortProblems([...this.current.values()].map((h) => h.problem)).map((p) => {
      const held = this.current.get(`${p.code}\u0000${p.key}`)!;
      return { code: p.code, message: p.message, fix: p.fix, since: new Date(held.since).toISOString() };
    });
  }

  has(code: ProblemCode): boolean {
    for (const h of this.current.values()) if (h.problem.code === code) return true;
    return false;
  }
}
