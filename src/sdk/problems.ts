/**
 * The one catalogue of problems hmgate can name: each code with the template of what is wrong and
 * how to fix it. `hmgate doctor` prints them as FAIL lines, `/v1/status` lists them live as
 * `problems`, and the log says when each appears and clears — always in these words.
 *
 * A template returns three parts: `what` (the thing checked, e.g. "CC bulk API at https://…"),
 * `why` (what is wrong with it) and `fix` (what to change, naming the config key).
 *
 * Also what a plugin's `problems` and `storeProblem` hooks are given (ProblemInput, StoreFailure),
 * and the helpers they share: ccProblem, withoutAdvice, humanMs, isStoreWriteError, etcdRefusal.
 */
import { counted } from './summary.js';

export interface ProblemText {
  what: string;
  why: string;
  fix: string;
}

/** Where a CC problem was seen: the bulk API source or the start/stop notifier. */
export interface CcWhere {
  /** "CC bulk API" or "CC internal API". */
  label: string;
  /** The URL, password masked. */
  url: string;
  /** The stage's config path, e.g. "sources.desired". */
  stage: string;
  /** The key holding the URL: "url" (bulk API) or "cc_url" (notifier). */
  urlKey: 'url' | 'cc_url';
}

const code = (s: string) => `\`${s}\``;
const secs = (ms: number) => `${Number((ms / 1000).toFixed(1))}s`;

function checkUrl(w: CcWhere): string {
  return w.urlKey === 'url'
    ? `check ${code(`${w.stage}.url`)} — it must be the Cloud Controller's domain or IP`
    : `check ${code(`${w.stage}.cc_url`)} — it must be the Cloud Controller's internal URL`;
}

/**
 * Why etcd refused a write: no user or a wrong password (etcd's authentication is on), a user
 * whose roles do not cover the prefix, a full database (its quota), or anything else.
 */
export type EtcdRefusal = 'credentials' | 'permission' | 'quota' | 'other';

/** The cause of etcd's refusal, from its error text. */
export function etcdRefusal(error: string): EtcdRefusal {
  if (/permission denied/i.test(error)) return 'permission';
  if (/user name is empty|authentication failed|invalid auth token|user name not found|invalid user ID or password/i.test(error)) return 'credentials';
  if (/database space exceeded|NOSPACE|quota/i.test(error)) return 'quota';
  return 'other';
}

export const NOT_CONFIGURED_FOR_HM = 'is the Cloud Controller configured to use this health manager (e.g. `hm9000_noop: false`)?';

/** The key that sets a heartbeat stage's cc_partition: the top-level `cc_partition` when the stage took it from there. */
const partitionKey = (p: { stage: string; key?: string }) => p.key ?? `${p.stage}.cc_partition`;

/** Agents that send no cc_partition never match the filter, whatever partition it keeps. */
const keepUnpartitioned = (stage: string) => `set ${code(`${stage}.cc_partition_filter: false`)} to keep them, or have the agents send cc_partition`;

const CC_REQUESTS = 'cloudcontrollers.hm.requests.';

/** Who should listen on a sink's start/stop subjects, in the words of the protocol they belong to. */
function startStopListenerFix(p: { stage: string; missing: string[]; partitionKey?: string }): string {
  const subjects = `Check ${code(`${p.stage}.start_subject`)} / ${code(`${p.stage}.stop_subject`)} too`;
  const partitioned = p.missing.find((s) => s.startsWith(CC_REQUESTS));
  if (partitioned !== undefined) {
    // The older Ruby HM's requests: the CC listens on its own partition (a CC v2 on ng).
    const theirs = partitioned.slice(CC_REQUESTS.length);
    const v2 = theirs === 'ng' ? '' : ` A CC v2 listens on ${CC_REQUESTS}ng: set ${code(`${p.partitionKey ?? 'cc_partition'}: ng`)}.`;
    return `is the Cloud Controller connected to this NATS, and on cc_partition ${JSON.stringify(theirs)}?${v2} ${subjects}`;
  }
  if (p.missing.some((s) => s === 'health.start' || s === 'health.stop')) {
    return `is the Cloud Controller connected to this NATS, and one that takes the Ruby Health Manager's requests (health.start, health.stop)? ${subjects}`;
  }
  return `${NOT_CONFIGURED_FOR_HM} Is it connected to this NATS? ${subjects}`;
}

export const PROBLEM_CATALOGUE = {
  NATS_UNREACHABLE: (p: { servers: string; error: string }): ProblemText => ({
    what: `NATS at ${p.servers}`,
    why: `not reachable (${p.error})`,
    fix: `check ${code('bus.servers')}: a nats-server must listen there, reachable from this host`,
  }),
  NATS_AUTH_REFUSED: (p: { servers: string; error?: string }): ProblemText => ({
    what: `NATS at ${p.servers}`,
    why: `the server refused the credentials${p.error ? ` (${p.error})` : ''}`,
    fix: `check ${code('bus.user')} / ${code('bus.password')} (or ${code('bus.token')}, or user:password in the URL)`,
  }),
  NATS_MONITOR_UNREACHABLE: (p: { url: string; error: string }): ProblemText => ({
    what: `NATS monitoring at ${p.url}`,
    why: `not reachable (${p.error})`,
    fix: `set ${code('bus.monitor_url')} to the NATS server's monitoring endpoint (nats-server -m 8222, e.g. http://127.0.0.1:8222), or remove it`,
  }),
  ETCD_UNREACHABLE: (p: { endpoints: string; error: string }): ProblemText => ({
    what: `etcd at ${p.endpoints}`,
    why: `not reachable (${p.error})`,
    fix: `check ${code('store.endpoints')}: etcd must run there, reachable from this host`,
  }),
  ETCD_UNHEALTHY: (p: { endpoint: string; detail: string }): ProblemText => ({
    what: `etcd at ${p.endpoint}`,
    why: `answers but is not healthy (${p.detail})`,
    fix: 'etcd has no leader or an alarm is raised: check the cluster (`etcdctl endpoint health`, `etcdctl alarm list`)',
  }),
  ETCD_WRITE_REFUSED: (p: { endpoint: string; prefix: string; error: string; cause: EtcdRefusal; user?: string }): ProblemText => ({
    what: `etcd at ${p.endpoint}`,
    why: `refused a test write under ${p.prefix} (${p.error})`,
    fix:
      p.cause === 'credentials'
        ? `set ${code('store.username')} / ${code('store.password')} to a user etcd knows, with its password`
        : p.cause === 'permission'
          ? `give etcd user ${p.user ?? `of ${code('store.username')}`} a role that may read and write the keys under ${p.prefix}/ (etcdctl role grant-permission --prefix <role> readwrite ${p.prefix}/), or name another user in ${code('store.username')}`
          : p.cause === 'quota'
            ? "etcd's database has reached its quota (--quota-backend-bytes): compact and defragment it or raise the quota, then disarm the NOSPACE alarm (`etcdctl alarm disarm`)"
            : `check etcd's alarms (\`etcdctl alarm list\`) and the permissions on ${code('store.prefix')}`,
  }),
  ETCD_REQUEST_TOO_LARGE: (p: { endpoints: string; error: string }): ProblemText => ({
    what: `etcd at ${p.endpoints}`,
    why: `a write is larger than etcd accepts in one request (${p.error})`,
    fix: `raise etcd's --max-request-bytes and ${code('store.max_request_bytes')} together, or find out why the agent named reports so many instances`,
  }),
  CC_UNREACHABLE: (p: CcWhere & { error: string }): ProblemText => ({
    what: `${p.label} at ${p.url}`,
    why: p.error,
    fix: checkUrl(p),
  }),
  CC_UNAUTHORIZED: (p: CcWhere & { status: number }): ProblemText => ({
    what: `${p.label} at ${p.url}`,
    why: `answered ${p.status}: the credentials were refused`,
    fix: `check ${code(`${p.stage}.user`)} / ${code(`${p.stage}.password`)}`,
  }),
  CC_TLS_UNTRUSTED: (p: CcWhere & { error: string }): ProblemText => ({
    what: `${p.label} at ${p.url}`,
    why: `the CC certificate is not trusted (${p.error})`,
    fix: `set ${code(`${p.stage}.ca_file`)}, or ${code(`${p.stage}.skip_cert_verify: true`)} to skip`,
  }),
  CC_TLS_NAME_MISMATCH: (p: CcWhere & { error: string }): ProblemText => ({
    what: `${p.label} at ${p.url}`,
    why: `the CC certificate is not valid for this host name (${p.error})`,
    fix: `put a name the certificate carries in ${code(`${p.stage}.${p.urlKey}`)}, or ${code(`${p.stage}.skip_cert_verify: true`)} to skip`,
  }),
  CC_TIMEOUT: (p: CcWhere & { error: string; timeoutKey: string }): ProblemText => ({
    what: `${p.label} at ${p.url}`,
    why: p.error,
    fix: `${checkUrl(p)}; if the CC is only slow, raise ${code(`${p.stage}.${p.timeoutKey}`)}`,
  }),
  CC_BAD_ANSWER: (p: CcWhere & { error: string }): ProblemText => ({
    what: `${p.label} at ${p.url}`,
    why: p.error,
    fix: `${checkUrl(p)}, and that the Cloud Controller is healthy`,
  }),
  CC_CREDENTIALS_UNAVAILABLE: (p: { stage: string; subject: string; error: string }): ProblemText => ({
    what: `CC bulk API credentials on ${p.subject}`,
    why: p.error,
    fix: p.subject.startsWith('cloudcontroller.bulk.credentials.')
      ? // The Ruby HM's pitfall: the CC answers on its own partition (a CC v2 on ng).
        `is the Cloud Controller connected to this NATS, and on cc_partition ${JSON.stringify(p.subject.slice('cloudcontroller.bulk.credentials.'.length))}?${p.subject.endsWith('.ng') ? '' : ` A CC v2 answers on ${p.subject.replace(/[^.]*$/, 'ng')}: set ${code('cc_partition: ng')};`} or set ${code(`${p.stage}.credentials: static`)} with ${code('user')} / ${code('password')}`
      : `is the Cloud Controller connected to this NATS? Otherwise set ${code(`${p.stage}.credentials: static`)} with ${code('user')} / ${code('password')}`,
  }),
  NO_HEARTBEATS: (p: { stage: string; subject: string; window: string }): ProblemText => ({
    what: `heartbeats on ${p.subject}`,
    why: `none within ${p.window}`,
    fix: `no agents, wrong NATS or wrong subject: the agents (DEAs) must publish on ${code(`${p.stage}.subject`)} (${p.subject}) to the NATS in ${code('bus.servers')}`,
  }),
  CC_PARTITION_MISMATCH: (p: { stage: string; subject: string; theirs: string | null; mine: string; key?: string }): ProblemText => ({
    what: `heartbeats on ${p.subject}`,
    why:
      p.theirs === null
        ? `the agents heartbeat instances without a cc_partition, and ${code(partitionKey(p))} keeps only ${JSON.stringify(p.mine)}: no instance is kept`
        : `the agents heartbeat cc_partition ${JSON.stringify(p.theirs)}, and ${code(partitionKey(p))} keeps only ${JSON.stringify(p.mine)}: no instance is kept`,
    fix: p.theirs === null ? keepUnpartitioned(p.stage) : `set ${code(`${partitionKey(p)}: ${p.theirs}`)}`,
  }),
  CC_PARTITION_IGNORED: (p: { stage: string; theirs: string | null; mine: string; key?: string }): ProblemText => ({
    what: 'cc_partition of the agents',
    why:
      p.theirs === null
        ? `agents report instances without a cc_partition but this daemon is on ${JSON.stringify(p.mine)} (${code(partitionKey(p))}): their heartbeats, exits and updates are ignored`
        : `agents report cc_partition ${JSON.stringify(p.theirs)} but this daemon is on ${JSON.stringify(p.mine)} (${code(partitionKey(p))}): their heartbeats, exits and updates are ignored`,
    fix: p.theirs === null ? keepUnpartitioned(p.stage) : `set ${code(`${partitionKey(p)}: ${p.theirs}`)}`,
  }),
  NO_START_STOP_LISTENER: (p: { stage: string; missing: string[]; monitorUrl: string; partitionKey?: string }): ProblemText => ({
    what: `start/stop orders on ${p.missing.join(', ')}`,
    why: `nobody subscribes to ${p.missing.join(' or ')} on NATS (asked ${p.monitorUrl})`,
    fix: startStopListenerFix(p),
  }),
  CC_NOT_CONFIGURED_FOR_HM: (p: { stage: string; url: string; detail: string }): ProblemText => ({
    what: `start/stop orders to ${p.url}`,
    why: p.detail,
    fix: NOT_CONFIGURED_FOR_HM,
  }),
  WRONG_FOUNDATION: (p: { desiredApps: number; heartbeatingApps: number; stage: string }): ProblemText => ({
    what: 'desired and actual state',
    why: `the CC desires ${counted(p.desiredApps, 'app')} and the agents heartbeat ${counted(p.heartbeatingApps, 'app')}, but none of the desired apps is heartbeating`,
    fix: `hmgate is looking at two different foundations: ${code(`${p.stage}.url`)} and ${code('bus.servers')} must belong to the same one`,
  }),
  INGEST_BEHIND: (p: { lagMs: number; maxLagMs: number; cause: string }): ProblemText => ({
    what: 'actual state',
    why: `${secs(p.lagMs)} behind the heartbeats (more than ${secs(p.maxLagMs)}): ${p.cause}`,
    fix: `this daemon cannot keep up with the heartbeats, and nothing is started or stopped until it has caught up: give it more CPU, look at its store's save times (${code('hmgate_heartbeat_save_duration_seconds')}), or, if this lag is acceptable, raise ${code('freshness.max_ingest_lag')}`,
  }),
  ACTUAL_COLLAPSE: (p: { silent: number; total: number; windowMs: number }): ProblemText => ({
    what: 'agents',
    why: `${p.silent} of ${counted(p.total, 'agent')} went silent within ${secs(p.windowMs)}; their instances are not restarted elsewhere until they return`,
    fix: `find what cut them off (network, NATS, a zone); if they are really gone, confirm it with ${code('hmgate confirm-loss')} (or POST /v1/actual/confirm-loss) on the leader and their instances are started elsewhere`,
  }),
  NOT_FRESH: (p: { actual: string | null; desired: string | null; gate?: boolean }): ProblemText => ({
    what: p.actual !== null && p.desired !== null ? 'actual and desired state' : p.actual !== null ? 'actual state' : 'desired state',
    why: `not fresh (${[p.actual !== null ? `actual: ${p.actual}` : '', p.desired !== null ? `desired: ${p.desired}` : ''].filter(Boolean).join('; ')})`,
    // With the gate off (the Ruby presets) staleness holds nothing back; the guards still do.
    fix:
      p.gate === false
        ? `${code('freshness.gate')} is off, so starts and stops go on all the same (only ${code('INGEST_BEHIND')} or ${code('ACTUAL_COLLAPSE')} holds them back): see the other problems`
        : 'nothing is started or stopped until both are fresh: see the other problems',
  }),
  STAGE_UNHEALTHY: (p: { stage: string; plugin: string; error: string }): ProblemText => ({
    what: `stage "${p.stage}" (${p.plugin})`,
    why: p.error,
    fix: `see the log lines of component ${JSON.stringify(p.stage)}`,
  }),
} as const;

export type ProblemCode = keyof typeof PROBLEM_CATALOGUE;
export type ProblemParams<C extends ProblemCode> = Parameters<(typeof PROBLEM_CATALOGUE)[C]>[0];

/** Every code, in catalogue order (the order problems are listed in). */
export const PROBLEM_CODES = Object.keys(PROBLEM_CATALOGUE) as ProblemCode[];

/** One named problem: its code, a key telling apart two of the same code, and its words. */
export interface Problem extends ProblemText {
  code: ProblemCode;
  /** Distinguishes problems of one code (e.g. the stage id); '' when there is one at most. */
  key: string;
  /** `what: why`, the sentence shown in /v1/status and the log. */
  message: string;
}

export function makeProblem<C extends ProblemCode>(code: C, params: ProblemParams<C>, key = ''): Problem {
  const text = (PROBLEM_CATALOGUE[code] as (p: ProblemParams<C>) => ProblemText)(params);
  return { code, key, ...text, message: `${text.what}: ${text.why}` };
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

/** What a plugin's `problems` hook is given about one of its stages: what the engine knows. */
export interface ProblemInput<O = Record<string, unknown>> {
  id: string;
  /** The config section: sources, policies, sinks, … (the store is asked through `storeProblem`). */
  section: string;
  /** The plugin's own name. */
  plugin: string;
  options: O;
  healthy: boolean;
  last_error: string | null;
  /** A summary of the stored state. */
  state: StateFacts;
  /** How long the engine has been running. */
  uptimeMs: number;
  heartbeatMs: number;
  /** Whether the bus (NATS) is connected. */
  busUp: boolean;
  /** Whether the store fails (unhealthy, unreadable, or a stage's write to it failed): what it holds then says nothing. */
  storeFailing: boolean;
  /** A failure of the store seen by this stage, named as the configured store names it; else this stage's STAGE_UNHEALTHY. */
  storeFailure(error: string): Problem;
  /**
   * A write of this stage to the store that failed (`error` is the stage's reason, worded "… to the
   * store …: <cause>"), named as the configured store names it, with `what` was not saved; else this
   * stage's STAGE_UNHEALTHY.
   */
  storeWriteFailure(what: string, error: string): Problem;
}

/** What a store plugin's `storeProblem` hook is given: a failure to name in its own words. */
export interface StoreFailure<O = Record<string, unknown>> {
  /** The store's options. */
  options: O;
  /** The failure as the problem shows it. */
  error: string;
  /**
   * When a stage's write to the store failed: that stage's reason, which tells the kind of failure
   * (unreachable, a request too large). Absent when the store itself fails.
   */
  writeError?: string;
}

/** How the sources word a failed write to the store ("saving heartbeats to the store failed", "Failed to sync desired state to the store"). */
const STORE_WRITE = /\bto the store\b/i;

/** Whether a stage's reason is a failed write to the store. */
export function isStoreWriteError(text: string): boolean {
  return STORE_WRITE.test(text);
}

/** A stage that is not healthy, when nothing more specific is known. */
export function stageUnhealthy(stage: { id: string; plugin: string }, error: string): Problem {
  return makeProblem('STAGE_UNHEALTHY', { stage: stage.id, plugin: stage.plugin, error }, stage.id);
}

/** A duration for people: 600ms, 30s, 1.5s, 2m. */
export function humanMs(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`;
  return `${Number((ms / 60_000).toFixed(1))}m`;
}

/** Cuts a trailing ": check …" / ": set …" advice (which may name `key: true`) from a stage's reason: the catalogue gives the fix. */
export function withoutAdvice(text: string): string {
  return text.replace(/:\s+(check|set|put|use|is|remove)\b(?:[^:]|:\s*(?:true|false)\b)*$/i, '').trim();
}

/**
 * A stage's reason without the "CC bulk API at <url>" that the problem's `what` already says:
 * "CC bulk API at X sent …" → "sent …", "timed out: the CC bulk API at X did not answer within …"
 * → "no answer within …", "HTTP request to the CC bulk API at X failed …" → "HTTP request failed …".
 */
function withoutWhere(text: string, w: CcWhere): string {
  const at = `${w.label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} at \\S+`;
  return text
    .replace(new RegExp(`^${at} `), '')
    .replace(new RegExp(`^timed out: the ${at} did not answer within\\b`), 'no answer within')
    .replace(new RegExp(` (?:to|from) the ${at}(?= failed\\b|:)`), '');
}

/**
 * A CC failure reason (from the bulk-api source or the notifier) as a coded problem. The stages'
 * reasons are sentences; these patterns are the words those stages use.
 */
export function ccProblem(reason: string, where: CcWhere, timeoutKey: string, key: string): Problem {
  const why = withoutWhere(withoutAdvice(reason), where);
  const status = /answered (40[13])\b/.exec(reason);
  if (status) return makeProblem('CC_UNAUTHORIZED', { ...where, status: Number(status[1]) }, key);
  if (/answered 404\b/.test(reason) && where.urlKey === 'cc_url') {
    return makeProblem('CC_NOT_CONFIGURED_FOR_HM', { stage: where.stage, url: where.url, detail: 'the CC answered 404 to a start or stop' }, key);
  }
  // The TLS templates say what is wrong with the certificate: the detail is the reason's code (and host), as the doctor gives it.
  const mismatch = /not valid for (\S+) \(([A-Z_]+)\)/.exec(reason);
  if (mismatch) return makeProblem('CC_TLS_NAME_MISMATCH', { ...where, error: `${mismatch[2]}: ${mismatch[1]}` }, key);
  if (/not valid for/.test(reason)) return makeProblem('CC_TLS_NAME_MISMATCH', { ...where, error: why }, key);
  if (/not trusted/.test(reason)) return makeProblem('CC_TLS_UNTRUSTED', { ...where, error: /\(([A-Z_]+)\)/.exec(reason)?.[1] ?? why }, key);
  if (/timed out|no answer within|did not answer within/.test(reason)) return makeProblem('CC_TIMEOUT', { ...where, error: why, timeoutKey }, key);
  if (/connection refused|cannot resolve|cannot reach|ECONNREFUSED|ENOTFOUND|TLS handshake/.test(reason))
    return makeProblem('CC_UNREACHABLE', { ...where, error: why }, key);
  if (/Failed to request auth info/.test(reason)) return makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: where.stage, subject: '', error: why }, key);
  return makeProblem('CC_BAD_ANSWER', { ...where, error: why }, key);
}
