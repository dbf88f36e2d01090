/**
 * How a bulk-api stage describes itself: its start-up line, and the problems its health and the
 * stored state imply — the CC's failures in the catalogue's words, a desired state the store did
 * not take, and desired apps none of which heartbeats (two foundations).
 */
import {
  ccProblem,
  counted,
  isStoreWriteError,
  makeProblem,
  maskUrl,
  shortDuration,
  type CcWhere,
  type Problem,
  type ProblemInput,
} from '../../src/sdk/index.js';
import { credentialsSubject, type BulkApiOptions } from './options.js';

const d = (v: unknown) => shortDuration(Number(v));

export function bulkApiSummary(o: BulkApiOptions): string {
  const parts = [
    `bulk-api from ${maskUrl(/^https?:\/\//i.test(String(o.url)) ? String(o.url) : `http://${String(o.url)}`)}/bulk/apps`,
    `${counted(Number(o.batch_size), 'app')} a page`,
    `every ${d(o.poll_interval)}`,
    `timeout ${d(o.timeout)}`,
  ];
  if (o.credentials === 'nats')
    parts.push(`credentials from ${String(o.credentials_subject ?? `cloudcontroller.bulk.credentials.${String(o.cc_partition ?? 'default')}`)}`);
  if (o.skip_cert_verify === true) parts.push('certificate NOT verified');
  else if (o.ca_file !== undefined) parts.push(`CA ${String(o.ca_file)}`);
  return parts.join(', ');
}

export function bulkApiProblems(s: ProblemInput<BulkApiOptions>): Problem[] {
  const out: Problem[] = [];
  if (!s.healthy && s.last_error && isStoreWriteError(s.last_error)) {
    out.push(s.storeWriteFailure('desired state not saved', s.last_error));
  } else if (!s.healthy && s.last_error) {
    const where: CcWhere = { label: 'CC bulk API', url: maskUrl(String(s.options.url ?? '')), stage: `sources.${s.id}`, urlKey: 'url' };
    const p = ccProblem(s.last_error, where, 'network_timeout', s.id);
    out.push(
      p.code === 'CC_CREDENTIALS_UNAVAILABLE'
        ? makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: where.stage, subject: credentialsSubject(s.options), error: p.why }, s.id)
        : p,
    );
  }
  // The CC desires apps and the agents heartbeat instances, but not of one desired app.
  if (!('error' in s.state) && s.state.desiredApps > 0 && s.state.liveInstances > 0 && !s.state.desiredHeartbeating) {
    out.push(makeProblem('WRONG_FOUNDATION', { desiredApps: s.state.desiredApps, heartbeatingApps: s.state.heartbeatingApps, stage: `sources.${s.id}` }));
  }
  return out;
}
