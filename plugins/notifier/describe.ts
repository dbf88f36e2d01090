/**
 * How a notifier stage describes itself: its start-up line, the NATS subjects it publishes starts
 * and stops on (whose listeners the doctor and /v1/status look for), and the problems its health
 * implies — the CC's failures in the catalogue's words over HTTP.
 */
import { ccProblem, maskUrl, shortDuration, stageUnhealthy, type CcWhere, type Problem, type ProblemInput } from '../../src/sdk/index.js';
import { subjectsFor, type NotifierOptions } from './options.js';

const d = (v: unknown) => shortDuration(Number(v));

export function notifierSummary(o: NotifierOptions): string {
  const protocol = String(o.protocol ?? 'hm9000');
  if (protocol === 'hm9000-http') return `notifier POSTs starts and stops to ${maskUrl(String(o.cc_url))}/internal/dea/hm9000/…, timeout ${d(o.timeout)}`;
  // Subject defaults depend on the protocol.
  const subjects = subjectsFor(o);
  const what = protocol === 'hm9000' ? 'starts' : `${protocol} requests: starts`;
  return `notifier publishes ${what} on ${String(subjects.start)} and stops on ${String(subjects.stop)} (NATS)`;
}

/** The subjects a stage publishes starts and stops on; none over HTTP (hm9000-http). */
export function notifierPublishes(o: NotifierOptions): string[] {
  if ((o.protocol ?? 'hm9000') === 'hm9000-http') return [];
  const subjects = subjectsFor(o);
  return [subjects.start, subjects.stop];
}

export function notifierProblems(s: ProblemInput<NotifierOptions>): Problem[] {
  if (s.healthy || !s.last_error) return [];
  // NATS down is the bus's problem.
  if (/NATS is not connected/.test(s.last_error) && !s.busUp) return [];
  if ((s.options.protocol ?? 'hm9000') === 'hm9000-http') {
    const where: CcWhere = { label: 'CC internal API', url: maskUrl(String(s.options.cc_url ?? '')), stage: `sinks.${s.id}`, urlKey: 'cc_url' };
    return [ccProblem(s.last_error, where, 'timeout', s.id)];
  }
  return [stageUnhealthy(s, s.last_error)];
}
