/**
 * Does anybody act on the start/stop orders? Never by sending one — the Cloud Controller would act
 * on it. Over NATS (protocol hm9000) the NATS server's monitoring endpoint (bus.monitor_url) is
 * asked who subscribes to the subjects. Over HTTP (hm9000-http) the CC's internal API path is asked
 * with a harmless GET: any HTTP answer shows it is reachable and trusted.
 */
import { subjectsFor } from '../../plugins/notifier/options.js';
import { maskUrl } from '../config/mask.js';
import type { ResolvedStage } from '../config/load.js';
import { basicAuth, createHttpAgent, loadCaFile } from '../http/client.js';
import { errorText } from '../log.js';
import { subscribersOf } from '../bus/nats-monitor.js';
import { makeProblem, NOT_CONFIGURED_FOR_HM, type CcWhere } from '../operator/problem-codes.js';
import { get, transportProblem } from './http.js';
import { fail, failPlain, pass, skip, stagePath, type CheckResult, type DoctorContext } from './result.js';

export const INTERNAL_PATH = '/internal/dea/hm9000/';

export async function checkStartStop(ctx: DoctorContext, stage: ResolvedStage): Promise<CheckResult> {
  const o = stage.options;
  const path = stagePath(stage);
  if ((o.protocol ?? 'hm9000') === 'hm9000-http') return checkInternalApi(ctx, stage);

  const resolved = subjectsFor(o as Parameters<typeof subjectsFor>[0]);
  const subjects = [...new Set([resolved.start, resolved.stop])];
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
  if (missing.length > 0) return fail('start_stop', makeProblem('NO_START_STOP_LISTENER', { stage: path, missing, monitorUrl: maskUrl(monitorUrl) }));
  return pass('start_stop', what, subjects.map((s) => `${s}: ${answer.subscribers.get(s)} subscriber(s)`).join(', '));
}

async function checkInternalApi(ctx: DoctorContext, stage: ResolvedStage): Promise<CheckResult> {
  const o = stage.options;
  const path = stagePath(stage);
  const ccUrl = String(o.cc_url ?? '');
  const where: CcWhere = { label: 'CC internal API', url: maskUrl(ccUrl.replace(/\/+$/, '')), stage: path, urlKey: 'cc_url' };
  const what = `${where.label} at ${where.url}`;
  let url: URL;
  try {
    url = new URL(ccUrl);
  } catch {
    return failPlain('start_stop', what, 'not a URL', `set ${'`'}${path}.cc_url${'`'} to the Cloud Controller's internal URL`);
  }
  const timeoutMs = Math.min(Number(o.timeout ?? ctx.timeoutMs), ctx.timeoutMs);
  let agent;
  try {
    const ca = typeof o.ca_file === 'string' ? await loadCaFile(o.ca_file, ctx.configDir, `${path}.ca_file`) : undefined;
    agent = createHttpAgent({ timeoutMs, skipCertVerify: o.skip_cert_verify === true, ...(ca !== undefined ? { ca } : {}) });
  } catch (err) {
    return failPlain('start_stop', what, errorText(err), `check ${'`'}${path}.ca_file${'`'}`);
  }
  try {
    const target = url.pathname.replace(/\/+$/, '') + INTERNAL_PATH;
    const answer = await get(agent, url, target, { authorization: basicAuth(String(o.user ?? ''), String(o.password ?? '')) }, timeoutMs);
    if (answer.status === 401 || answer.status === 403) return fail('start_stop', makeProblem('CC_UNAUTHORIZED', { ...where, status: answer.status }));
    return pass(
      'start_stop',
      what,
      `reachable (HTTP ${answer.status} to GET ${INTERNAL_PATH}); a 404 to a real start or stop would mean the CC is not configured for this health manager: ${NOT_CONFIGURED_FOR_HM}`,
    );
  } catch (err) {
    return fail('start_stop', transportProblem(err, where, url.host, timeoutMs, 'timeout'));
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}
