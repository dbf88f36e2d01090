/**
 * Does anybody act on the start/stop orders a sink publishes on NATS (the subjects of its plugin's
 * `publishes`)? Never by sending one — the Cloud Controller would act on it: the NATS server's
 * monitoring endpoint (bus.monitor_url) is asked who subscribes to the subjects. (A sink that
 * sends them otherwise, e.g. the notifier over HTTP, is checked by its plugin's `doctor`.)
 */
import { maskUrl } from '../config/mask.js';
import type { ResolvedStage } from '../config/load.js';
import { subscribersOf } from '../bus/nats-monitor.js';
import { makeProblem } from '../sdk/problems.js';
import { optionKey } from '../config/option-keys.js';
import { counted } from '../sdk/summary.js';
import { fail, pass, skip, stagePath, type CheckResult, type DoctorContext } from './result.js';

/** `subjects`: the stage's published subjects, each once (publishedSubjects). */
export async function checkStartStop(ctx: DoctorContext, stage: ResolvedStage, subjects: readonly string[]): Promise<CheckResult> {
  const path = stagePath(stage);
  const what = `start/stop orders on ${subjects.join(', ')}`;
  const monitorUrl = ctx.loaded.config.bus.monitor_url;
  if (!monitorUrl) {
    return skip(
      'start_stop',
      what,
      `set ${'`'}bus.monitor_url${'`'} (the NATS server's monitoring endpoint) to check that the Cloud Controller subscribes to them; hmgate never publishes a probe there`,
    );
  }
  const answer = await subscribersOf(monitorUrl, subjects, ctx.timeoutMs);
  if (!answer.ok) return fail('start_stop', makeProblem('NATS_MONITOR_UNREACHABLE', { url: maskUrl(monitorUrl), error: answer.error }));
  const missing = subjects.filter((s) => (answer.subscribers.get(s) ?? 0) === 0);
  if (missing.length > 0) {
    const partitionKey = optionKey(stage.options, path, 'cc_partition');
    return fail('start_stop', makeProblem('NO_START_STOP_LISTENER', { stage: path, missing, monitorUrl: maskUrl(monitorUrl), partitionKey }));
  }
  return pass('start_stop', what, subjects.map((s) => `${s}: ${counted(answer.subscribers.get(s) ?? 0, 'subscriber')}`).join(', '));
}
