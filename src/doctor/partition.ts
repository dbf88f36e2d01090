/**
 * cc_partition (when the heartbeat stage keeps only one: cc_partition_filter): do the agents heartbeat instances of it?
 * If none of the instances heard is of the configured partition, every desired instance would look
 * missing — both values are named, and the key to set.
 */
import type { ResolvedStage } from '../config/load.js';
import { makeProblem } from '../operator/problem-codes.js';
import type { HeartbeatSample } from './heartbeats.js';
import { fail, pass, skip, stagePath, type CheckResult } from './result.js';

const name = (p: string | null) => (p === null ? '(none)' : JSON.stringify(p));

export function checkPartition(stage: ResolvedStage, sample: HeartbeatSample | undefined): CheckResult | undefined {
  if (stage.options.cc_partition_filter !== true) return undefined; // nothing is left out
  const mine = typeof stage.options.cc_partition === 'string' ? stage.options.cc_partition : 'default';
  const subject = String(stage.options.subject ?? 'dea.heartbeat');
  const what = `cc_partition of the heartbeats on ${subject}`;
  if (!sample || sample.instances === 0) return skip('cc_partition', what, 'no instance heartbeating to compare');
  const ours = sample.partitions.get(mine) ?? 0;
  const others = [...sample.partitions.entries()].filter(([p]) => p !== mine).sort((a, b) => b[1] - a[1]);
  if (ours === 0) {
    const theirs = others[0]![0];
    return fail('cc_partition', makeProblem('CC_PARTITION_MISMATCH', { stage: stagePath(stage), subject, theirs, mine }));
  }
  const also = others.length ? `; also heard, and left out: ${others.map(([p, n]) => `${name(p)} (${n})`).join(', ')}` : '';
  return pass('cc_partition', what, `${ours} instance(s) of cc_partition ${name(mine)}${also}`);
}
