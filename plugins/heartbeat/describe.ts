/**
 * How a heartbeat stage describes itself: its start-up line, and the problems its health and the
 * stored state imply — heartbeats not saved, no heartbeats at all, agents of another cc_partition.
 */
import { humanMs, isStoreWriteError, makeProblem, optionKey, shortDuration, stageUnhealthy, type Problem, type ProblemInput } from '../../src/sdk/index.js';
import type { HeartbeatStageOptions } from './heartbeat.js';

const d = (v: unknown) => shortDuration(Number(v));

export function heartbeatSummary(o: HeartbeatStageOptions): string {
  const parts = [`heartbeat on ${String(o.subject)}`];
  if (o.advertise_subject) parts[0] += ` (and ${String(o.advertise_subject)})`;
  parts.push(`sync ${d(o.sync_interval)}`, `presence TTL ${d(o.heartbeat_ttl)}`);
  if (o.cc_partition !== undefined) parts.push(`cc_partition ${String(o.cc_partition)} only`);
  const http = o.http_listener as { listen?: string } | undefined;
  if (http) parts.push(`HTTPS heartbeats on ${String(http.listen)}`);
  return parts.join(', ');
}

/** The per-agent wording the heartbeat stage logs (and reported as its last error before). */
const PARTITION_NOTICE = /heartbeats instances of cc_partition ("(?:[^"\\]|\\.)*"), this stage keeps only/;
const NO_PARTITION_NOTICE = /heartbeats instances without a cc_partition, this stage keeps only/;
/** The heartbeat stage's notice while messages of another cc_partition arrive (partition.ts). */
const REPORT_NOTICE = /agents report cc_partition ("(?:[^"\\]|\\.)*") but this daemon is on/;
const NO_REPORT_NOTICE = /agents report instances without a cc_partition but this daemon is on/;

/** The partition another stage's notice names: a value, null for none, undefined if no notice. */
function noticedPartition(text: string, patterns: [RegExp, RegExp]): string | null | undefined {
  const m = patterns[0].exec(text);
  if (m) return JSON.parse(m[1]!) as string;
  return patterns[1].test(text) ? null : undefined;
}

export function heartbeatProblems(s: ProblemInput<HeartbeatStageOptions>): Problem[] {
  const out: Problem[] = [];
  if (!s.healthy && s.last_error) {
    out.push(
      isStoreWriteError(s.last_error)
        ? s.storeWriteFailure('heartbeats not saved', s.last_error)
        : /store/.test(s.last_error)
          ? s.storeFailure(s.last_error)
          : stageUnhealthy(s, s.last_error),
    );
  }
  const subject = String(s.options.subject ?? 'dea.heartbeat');
  const stage = `sources.${s.id}`;
  // The partition kept: filtering without one keeps "default" (heartbeat.ts).
  const mine = typeof s.options.cc_partition === 'string' ? s.options.cc_partition : s.options.cc_partition_filter === true ? 'default' : undefined;
  // The key that changes it: the top-level cc_partition when the stage took it from there.
  const key = optionKey(s.options, stage, 'cc_partition');
  const noneKept = !('error' in s.state) && s.state.liveInstances === 0;
  if (typeof mine === 'string' && s.last_error) {
    const reported = noticedPartition(s.last_error, [REPORT_NOTICE, NO_REPORT_NOTICE]);
    const theirs = reported !== undefined ? reported : noticedPartition(s.last_error, [PARTITION_NOTICE, NO_PARTITION_NOTICE]);
    // Nothing kept at all: every desired instance looks missing. Otherwise some agents' messages are lost.
    if (theirs !== undefined && noneKept) out.push(makeProblem('CC_PARTITION_MISMATCH', { stage, subject, theirs, mine, key }, s.id));
    else if (reported !== undefined) out.push(makeProblem('CC_PARTITION_IGNORED', { stage, theirs: reported, mine, key }, s.id));
  }
  const window = 3 * s.heartbeatMs + Number(s.options.sync_interval ?? 1000);
  if (s.busUp && !s.storeFailing && !('error' in s.state) && s.state.liveInstances === 0 && s.state.agents === 0 && s.uptimeMs >= window) {
    out.push(makeProblem('NO_HEARTBEATS', { stage, subject, window: humanMs(window) }, s.id));
  }
  return out;
}
