/**
 * The problems shown live in /v1/status: derived from what the engine already knows — each stage's
 * health, the freshness verdicts, a summary of the stored state, and (with bus.monitor_url) who
 * subscribes to the start/stop subjects — and named with the codes of the one catalogue
 * (problem-codes.ts) that `hmgate doctor` uses too.
 *
 * deriveProblems is pure. ProblemTracker remembers since when each problem holds, and logs each
 * one once when it appears (warn) and once when it clears (info), however often it is evaluated.
 */
import { subjectsFor } from '../../plugins/notifier/options.js';
import type { Logger } from 'pino';
import type { PluginDefinition } from '../sdk/plugin.js';
import { maskUrl } from '../config/mask.js';
import { makeProblem, PROBLEM_CODES, type CcWhere, type Problem, type ProblemCode } from './problem-codes.js';
import type { Hold } from '../pipeline/freshness/board.js';

export { makeProblem, type Problem, type ProblemCode } from './problem-codes.js';

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

/** A summary of the stored state; `error` when it could not be read. */
export type StateFacts =
  | {
      desiredApps: number;
      /** Live instances of every app. */
      liveInstances: number;
      /** Apps (guids) with a live instance. */
      heartbeatingApps: number;
      /** Whether any desired app (by guid) has a live instance. */
      desiredHeartbeating: boolean;
      /** Present agents; only counted when there is no live instance (undefined otherwise). */
      agents?: number;
    }
  | { error: string };

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
}

/** The stages of one plugin, by its name (as the doctor finds them too). */
export function stagesOf<T extends { plugin: string }>(stages: readonly T[], plugin: string): T[] {
  return stages.filter((s) => s.plugin === plugin);
}

/** The NATS start/stop subjects of every notifier stage that publishes on NATS (per its protocol). */
export function startStopSubjects(
  stages: readonly { id: string; plugin: string; definition?: PluginDefinition; options: Record<string, unknown> }[],
): { stage: string; subjects: string[] }[] {
  return stagesOf(stages, 'notifier')
    .filter((s) => (s.options.protocol ?? 'hm9000') !== 'hm9000-http')
    .map((s) => {
      const subjects = subjectsFor(s.options as Parameters<typeof subjectsFor>[0]);
      return { stage: s.id, subjects: [...new Set([subjects.start, subjects.stop])] };
    });
}

/** A duration for people: 600ms, 30s, 1.5s, 2m. */
export function humanMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`;
  return `${Number((ms / 60_000).toFixed(1))}m`;
}

const list = (xs: readonly string[]) => xs.map(maskUrl).join(', ');

/** Cuts a trailing ": check …" / ": set …" advice from a stage's reason: the catalogue gives the fix. */
export function withoutAdvice(text: string): string {
  return text.replace(/:\s+(check|set|put|use|is|remove)\b[^:]*$/i, '').trim();
}

/** The etcd endpoints of a store stage's options, as shown. */
export function etcdEndpoints(options: Record<string, unknown>): string[] {
  const e = options.endpoints;
  if (Array.isArray(e) && e.length > 0) return e.map(String);
  if (typeof e === 'string' && e !== '') return [e];
  return ['http://127.0.0.1:2379'];
}

/**
 * A CC failure reason (from the bulk-api source or the notifier) as a coded problem. The stages'
 * reasons are sentences; these patterns are the words those stages use.
 */
export function ccProblem(reason: string, where: CcWhere, timeoutKey: string, key: string): Problem {
  const why = withoutAdvice(reason);
  const status = /answered (40[13])\b/.exec(reason);
  if (status) return makeProblem('CC_UNAUTHORIZED', { ...where, status: Number(status[1]) }, key);
  if (/answered 404\b/.test(reason) && where.urlKey === 'cc_url') {
    return makeProblem('CC_NOT_CONFIGURED_FOR_HM', { stage: where.stage, url: where.url, detail: 'the CC answered 404 to a start or stop' }, key);
  }
  if (/not valid for/.test(reason)) return makeProblem('CC_TLS_NAME_MISMATCH', { ...where, error: why }, key);
  if (/not trusted/.test(reason)) {
    const codeMatch = /\(([A-Z_]+)\)/.exec(reason);
    return makeProblem('CC_TLS_UNTRUSTED', { ...where, error: codeMatch?.[1] ?? why }, key);
  }
  if (/timed out|no answer within|did not answer within/.test(reason)) return makeProblem('CC_TIMEOUT', { ...where, error: why, timeoutKey }, key);
  if (/connection refused|cannot resolve|cannot reach|ECONNREFUSED|ENOTFOUND|TLS handshake/.test(reason))
    return makeProblem('CC_UNREACHABLE', { ...where, error: why }, key);
  if (/Failed to request auth info/.test(reason)) return makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: where.stage, subject: '', error: why }, key);
  return makeProblem('CC_BAD_ANSWER', { ...where, error: why }, key);
}

/** How the sources word a failed write to the store ("saving heartbeats to the store failed", "Failed to sync desired state to the store"). */
const STORE_WRITE = /\bto the store\b/i;

/** The per-agent wording the heartbeat stage logs (and reported as its last error before). */
const PARTITION_NOTICE = /heartbeats instances of cc_partition ("(?:[^"\\]|\\.)*"), this stage keeps only/;
const NO_PARTITION_NOTICE = /heartbeats instances without a cc_partition, this stage keeps only/;
/** The heartbeat stage's notice while messages of another cc_partition arrive (heartbeat.ts). */
const REPORT_NOTICE = /agents report cc_partition ("(?:[^"\\]|\\.)*") but this daemon is on/;
const NO_REPORT_NOTICE = /agents report instances without a cc_partition but this daemon is on/;

/** The partition another stage's notice names: a value, null for none, undefined if no notice. */
function noticedPartition(text: string, patterns: [RegExp, RegExp]): string | null | undefined {
  const m = patterns[0].exec(text);
  if (m) return JSON.parse(m[1]!) as string;
  return patterns[1].test(text) ? null : undefined;
}

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
  const etcd = store?.plugin === 'etcd';
  const storeError = (stage: StageFacts | undefined, error: string): Problem =>
    etcd
      ? makeProblem('ETCD_UNREACHABLE', { endpoints: list(etcdEndpoints(store!.options)), error })
      : makeProblem('STAGE_UNHEALTHY', { stage: stage?.id ?? 'store', plugin: stage?.plugin ?? store?.plugin ?? 'store', error }, stage?.id ?? 'store');
  if (store && !store.healthy) out.push(storeError(store, store.last_error ?? 'unhealthy'));
  if ('error' in f.state) out.push(storeError(store, `reading the state failed: ${f.state.error}`));
  // A stage's write to the store that failed is the store's problem, not the CC's nor the agents'.
  const storeWriteProblem = (stage: StageFacts, what: string, error: string): Problem => {
    const why = `${what}: ${withoutAdvice(error.replace(/^.*?\bto the store\b[^:]*:\s*/i, ''))}`;
    if (etcd && /too large|max-request-bytes|max_request_bytes/i.test(error))
      return makeProblem('ETCD_REQUEST_TOO_LARGE', { endpoints: list(etcdEndpoints(store!.options)), error: why });
    if (etcd && /unreachable|not started|not been read/i.test(error)) return storeError(stage, why);
    return makeProblem('STAGE_UNHEALTHY', { stage: stage.id, plugin: stage.plugin, error: why }, stage.id);
  };
  // While the store fails, what it holds says nothing about the agents: no NO_HEARTBEATS then.
  const storeFailing =
    (store !== undefined && !store.healthy) ||
    'error' in f.state ||
    f.stages.some((s) => !s.healthy && s.last_error !== null && STORE_WRITE.test(s.last_error));

  for (const s of f.stages) {
    if (s.section === 'bus' || s.section === 'store') continue;
    if (s.plugin === 'bulk-api') {
      if (!s.healthy && s.last_error && STORE_WRITE.test(s.last_error)) {
        out.push(storeWriteProblem(s, 'desired state not saved', s.last_error));
      } else if (!s.healthy && s.last_error) {
        const where: CcWhere = { label: 'CC bulk API', url: maskUrl(String(s.options.url ?? '')), stage: `sources.${s.id}`, urlKey: 'url' };
        const p = ccProblem(s.last_error, where, 'network_timeout', s.id);
        out.push(
          p.code === 'CC_CREDENTIALS_UNAVAILABLE'
            ? makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: where.stage, subject: String(s.options.credentials_subject ?? ''), error: p.why }, s.id)
            : p,
        );
      }
    } else if (s.plugin === 'heartbeat') {
      if (!s.healthy && s.last_error) {
        out.push(
          STORE_WRITE.test(s.last_error)
            ? storeWriteProblem(s, 'heartbeats not saved', s.last_error)
            : /store/.test(s.last_error) && etcd
              ? storeError(s, s.last_error)
              : makeProblem('STAGE_UNHEALTHY', { stage: s.id, plugin: s.plugin, error: s.last_error }, s.id),
        );
      }
      const subject = String(s.options.subject ?? 'dea.heartbeat');
      const stage = `sources.${s.id}`;
      const mine = s.options.cc_partition;
      const noneKept = !('error' in f.state) && f.state.liveInstances === 0;
      if (typeof mine === 'string' && s.last_error) {
        const reported = noticedPartition(s.last_error, [REPORT_NOTICE, NO_REPORT_NOTICE]);
        const theirs = reported !== undefined ? reported : noticedPartition(s.last_error, [PARTITION_NOTICE, NO_PARTITION_NOTICE]);
        // Nothing kept at all: every desired instance looks missing. Otherwise some agents' messages are lost.
        if (theirs !== undefined && noneKept) out.push(makeProblem('CC_PARTITION_MISMATCH', { stage, subject, theirs, mine }, s.id));
        else if (reported !== undefined) out.push(makeProblem('CC_PARTITION_IGNORED', { stage, theirs: reported, mine }, s.id));
      }
      const window = 3 * f.heartbeatMs + Number(s.options.sync_interval ?? 1000);
      if (busUp && !storeFailing && !('error' in f.state) && f.state.liveInstances === 0 && f.state.agents === 0 && f.uptimeMs >= window) {
        out.push(makeProblem('NO_HEARTBEATS', { stage, subject, window: humanMs(window) }, s.id));
      }
    } else if (s.plugin === 'notifier') {
      if (!s.healthy && s.last_error) {
        if (/NATS is not connected/.test(s.last_error) && !busUp) continue;
        if ((s.options.protocol ?? 'hm9000') === 'hm9000-http') {
          const where: CcWhere = { label: 'CC internal API', url: maskUrl(String(s.options.cc_url ?? '')), stage: `sinks.${s.id}`, urlKey: 'cc_url' };
          out.push(ccProblem(s.last_error, where, 'timeout', s.id));
        } else {
          out.push(makeProblem('STAGE_UNHEALTHY', { stage: s.id, plugin: s.plugin, error: s.last_error }, s.id));
        }
      }
    } else if (!s.healthy) {
      out.push(makeProblem('STAGE_UNHEALTHY', { stage: s.id, plugin: s.plugin, error: s.last_error ?? 'unhealthy' }, s.id));
    }
  }

  for (const l of f.listeners) {
    if ('error' in l) out.push(makeProblem('NATS_MONITOR_UNREACHABLE', { url: f.monitorUrl ?? '', error: l.error }));
    else if (l.missing.length > 0)
      out.push(makeProblem('NO_START_STOP_LISTENER', { stage: `sinks.${l.stage}`, missing: l.missing, monitorUrl: f.monitorUrl ?? '' }, l.stage));
  }

  if (!('error' in f.state) && f.state.desiredApps > 0 && f.state.liveInstances > 0 && !f.state.desiredHeartbeating) {
    const desired = stagesOf(f.stages, 'bulk-api')[0];
    out.push(
      makeProblem('WRONG_FOUNDATION', {
        desiredApps: f.state.desiredApps,
        heartbeatingApps: f.state.heartbeatingApps,
        stage: `sources.${desired?.id ?? 'desired'}`,
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
