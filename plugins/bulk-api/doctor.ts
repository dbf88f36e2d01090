/**
 * What `hmgate doctor` checks for a bulk-api stage: the Cloud Controller's bulk API, as the source
 * calls it (its URL, credentials, certificate options and network timeout): one real GET of the
 * first page with batch_size 1. When the same-foundation check needs it, the desired app guids are
 * then read page by page (GETs only).
 */
import { Agent } from 'undici';
import {
  basicAuth,
  ccErrorDetail,
  createHttpAgent,
  errorText,
  fail,
  failPlain,
  httpGet,
  loadCaFile,
  makeProblem,
  maskUrl,
  pass,
  transportProblem,
  type CcWhere,
  type CheckResult,
  type DesiredSample,
  type DoctorFindings,
  type DoctorInput,
} from '../../src/sdk/index.js';
import { credentialsSubject, type BulkApiOptions } from './options.js';
import { bulkAppsPath, bulkBaseUrl, FIRST_TOKEN, parseBulkPage, parseCredentials } from './page.js';

interface BulkOptions {
  url: string;
  user?: string;
  password?: string;
  batch_size: number;
  network_timeout: number;
  skip_cert_verify: boolean;
  ca_file?: string;
  credentials: 'static' | 'nats';
  credentials_subject: string;
  credentials_timeout: number;
}

interface CcCheck {
  result: CheckResult;
  desired?: DesiredSample;
}

/** Longest whole walk of the desired state for the foundation check. */
const WALK_LIMIT_MS = 60_000;

export async function bulkApiDoctor(input: DoctorInput<BulkApiOptions>): Promise<DoctorFindings> {
  const c = await checkBulkApi(input, input.crossCheck);
  return { results: [c.result], ...(input.crossCheck ? { desired: c.desired ?? null } : {}) };
}

async function checkBulkApi(ctx: DoctorInput<BulkApiOptions>, walk: boolean): Promise<CcCheck> {
  const nc = ctx.nats;
  const given = ctx.options;
  // As the source resolves them: a bare host gets http://, the subject follows the partition.
  const o: BulkOptions = { ...given, url: bulkBaseUrl(given.url), credentials_subject: credentialsSubject(given) };
  const path = ctx.path;
  const url = new URL(o.url);
  const where: CcWhere = { label: 'CC bulk API', url: maskUrl(o.url), stage: path, urlKey: 'url' };
  const what = `${where.label} at ${where.url}`;
  const timeoutMs = Math.min(o.network_timeout, ctx.timeoutMs);

  let authorization: string;
  if (o.credentials === 'nats') {
    if (!nc)
      return { result: fail('cc', makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: path, subject: o.credentials_subject, error: 'NATS is not reachable' })) };
    try {
      const reply = await nc.request(o.credentials_subject, new Uint8Array(), { timeout: Math.min(o.credentials_timeout, ctx.timeoutMs) });
      const creds = parseCredentials(reply.data);
      if (!creds.ok)
        return { result: fail('cc', makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: path, subject: o.credentials_subject, error: creds.reason })) };
      authorization = basicAuth(creds.user, creds.password);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const why =
        code === '503'
          ? 'nobody answers that subject'
          : code === 'TIMEOUT'
            ? `no reply within ${Math.min(o.credentials_timeout, ctx.timeoutMs)}ms`
            : errorText(err);
      return { result: fail('cc', makeProblem('CC_CREDENTIALS_UNAVAILABLE', { stage: path, subject: o.credentials_subject, error: why })) };
    }
  } else {
    authorization = basicAuth(o.user ?? '', o.password ?? '');
  }

  let agent: Agent;
  try {
    const ca = o.ca_file !== undefined ? await loadCaFile(o.ca_file, ctx.configDir, `${path}.ca_file`) : undefined;
    agent = createHttpAgent({ timeoutMs, skipCertVerify: o.skip_cert_verify, ...(ca !== undefined ? { ca } : {}) });
  } catch (err) {
    return { result: failPlain('cc', what, errorText(err), `check ${'`'}${path}.ca_file${'`'}`) };
  }
  const basePath = url.pathname.replace(/\/+$/, '');
  try {
    let answer;
    try {
      answer = await httpGet(agent, url, bulkAppsPath(basePath, 1, FIRST_TOKEN), { authorization }, timeoutMs);
    } catch (err) {
      return { result: fail('cc', transportProblem(err, where, url.host, timeoutMs, 'network_timeout')) };
    }
    if (answer.status === 401 || answer.status === 403) return { result: fail('cc', makeProblem('CC_UNAUTHORIZED', { ...where, status: answer.status })) };
    if (answer.status !== 200) {
      return {
        result: fail('cc', makeProblem('CC_BAD_ANSWER', { ...where, error: `answered ${answer.status} to GET /bulk/apps${ccErrorDetail(answer.body)}` })),
      };
    }
    const page = parseBulkPage(answer.body);
    if (!page.ok) return { result: fail('cc', makeProblem('CC_BAD_ANSWER', { ...where, error: `sent ${page.reason}` })) };
    const result = pass('cc', what, page.done ? 'answered: no app at all' : 'answered the first page of /bulk/apps');
    if (!walk) return { result };
    const desired = await walkDesired(agent, url, basePath, o.batch_size, authorization, timeoutMs);
    return desired ? { result, desired } : { result };
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}

/** Every desired app's guid, page by page; undefined when the walk does not complete. */
async function walkDesired(
  agent: Agent,
  url: URL,
  basePath: string,
  batchSize: number,
  authorization: string,
  timeoutMs: number,
): Promise<DesiredSample | undefined> {
  const guids = new Set<string>();
  let apps = 0;
  let token = FIRST_TOKEN;
  const deadline = Date.now() + WALK_LIMIT_MS;
  while (Date.now() < deadline) {
    let answer;
    try {
      answer = await httpGet(agent, url, bulkAppsPath(basePath, batchSize, token), { authorization }, timeoutMs);
    } catch {
      return undefined;
    }
    if (answer.status !== 200) return undefined;
    const page = parseBulkPage(answer.body);
    if (!page.ok) return undefined;
    for (const app of page.kept) {
      guids.add(app.guid);
      apps++;
    }
    if (page.done) return { guids, apps };
    if (!page.nextToken || page.nextToken === token) return undefined;
    token = page.nextToken;
  }
  return undefined;
}
