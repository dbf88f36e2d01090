/**
 * The same foundation on both sides? If the CC desires apps and the agents heartbeat instances, but
 * not one desired app is heartbeating, the CC URL and the NATS servers belong to two foundations —
 * and every desired instance would look missing.
 */
import type { DesiredSample, HeartbeatSample } from '../sdk/doctor.js';
import { makeProblem } from '../sdk/problems.js';
import { counted } from '../sdk/summary.js';
import { fail, pass, skip, type CheckResult } from './result.js';

export function checkFoundation(desired: DesiredSample | undefined, heartbeats: HeartbeatSample | undefined, desiredStage: string): CheckResult {
  const what = 'desired and actual state';
  if (!desired) return skip('foundation', what, 'the desired state could not be read in full');
  if (!heartbeats) return skip('foundation', what, 'no heartbeats to compare with');
  if (desired.apps === 0) return pass('foundation', what, 'the CC desires no app');
  if (heartbeats.instances === 0) return skip('foundation', what, 'no instance heartbeating to compare with');
  let common = 0;
  for (const guid of desired.guids) if (heartbeats.apps.has(guid)) common++;
  if (common === 0) {
    return fail(
      'foundation',
      makeProblem('WRONG_FOUNDATION', { desiredApps: desired.guids.size, heartbeatingApps: heartbeats.apps.size, stage: desiredStage }),
    );
  }
  return pass('foundation', what, `${common} of the ${counted(desired.guids.size, 'desired app')} heartbeating`);
}
