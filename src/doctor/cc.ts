/**
 * The Cloud Controller's bulk API, as the desired-state source calls it (its URL, credentials,
 * certificate options and network timeout): one real GET of the first page with batch_size 1. When
 * the foundation check needs it, the desired app guids are then read page by page (GETs only).
 */
import type { NatsConnection } from 'nats';
import { Agent } from 'undici';
import { maskUrl } from '../config/mask.js';
import type { ResolvedStage } from '../config/load.js';
import { basicAuth, createHttpAgent, loadCaFile } from '../http/client.js';
import { errorText } from '../log.js';
import { makeProblem, type CcWhere } from '../operator/problem-codes.js';
import { bulkAppsPath, bulkBaseUrl, credentialsSubject, FIRST_TOKEN, parseBulkPage, parseCredentials } from '../../plugins/bulk-api/index.js';
import { ccErrorDetail, get, transportProblem } from './http.js';
import { fail, failPlain, pass, stagePath, type CheckResult, type DoctorContext } from './result.js';

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

/** The desired apps (guids of apps that should run), from a complete walk. */
export interface DesiredSample {
  guids: Set<string>;
  apps: number;
}

export interface CcCheck {
  result: CheckResult;
  desired?: DesiredSample;
}

/** Longest whole walk of the desired state for the foundation check. */
const WALK_LIMIT_MS = 60_000;

export async function checkBulkApi(ctx: DoctorContext, stage: ResolvedStage, nc: NatsConnection | undefined, walk: boolean): Promise<CcCheck> {
  const given = stage.options as unknown as BulkOptions & { cc_partition?: string; credentials_subject?: string };
  // As the source resolves them: a bare host gets http://, the subject follows the partition.
  const o: BulkOptions = { ...given, url: bulkBaseUrl(given.url), credentials_subject: credentialsSubject(given) };
  const path = stagePath(stage);
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
      answer = await get(agent, url, bulkAppsPath(basePath, 1, FIRST_TOKEN), { authorization }, timeoutMs);
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
      answer = await get(agent, url, bulkAppsPath(basePath, batchSize, token), { authorization }, timeoutMs);
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
