/**
 * What `hmgate doctor` checks for a notifier stage that POSTs to the CC (hm9000-http): never by
 * sending a start or stop — the Cloud Controller would act on it — but by a harmless GET of the CC's
 * internal API path: any HTTP answer shows it is reachable and trusted. (Over NATS the doctor asks
 * the NATS server who subscribes to the subjects the stage publishes on.)
 */
import {
  basicAuth,
  createHttpAgent,
  errorText,
  fail,
  failPlain,
  httpGet,
  loadCaFile,
  makeProblem,
  maskUrl,
  NOT_CONFIGURED_FOR_HM,
  pass,
  transportProblem,
  type CcWhere,
  type CheckResult,
  type DoctorFindings,
  type DoctorInput,
} from '../../src/sdk/index.js';
import type { NotifierOptions } from './options.js';

export const INTERNAL_PATH = '/internal/dea/hm9000/';

export async function notifierDoctor(input: DoctorInput<NotifierOptions>): Promise<DoctorFindings> {
  if ((input.options.protocol ?? 'hm9000') !== 'hm9000-http') return { results: [] };
  return { results: [await checkInternalApi(input)] };
}

async function checkInternalApi(ctx: DoctorInput<NotifierOptions>): Promise<CheckResult> {
  const o = ctx.options;
  const path = ctx.path;
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
    const answer = await httpGet(agent, url, target, { authorization: basicAuth(String(o.user ?? ''), String(o.password ?? '')) }, timeoutMs);
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
