/**
 * What `hmgate doctor` checks for the etcd store: is etcd reachable, healthy (GET /health), and does
 * it take a write — a test key put and deleted under the configured prefix through etcd's JSON
 * gateway (/v3/kv/…), with the store's TLS and user options. Only reads the store's options; the
 * store itself is not started.
 */
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { Agent } from 'undici';
import {
  errorCode,
  errorText,
  etcdRefusal,
  fail,
  failPlain,
  makeProblem,
  maskUrl,
  pass,
  type CheckResult,
  type DoctorFindings,
  type DoctorInput,
} from '../../src/sdk/index.js';
import { etcdEndpoints } from './describe.js';
import type { EtcdStoreOptions } from './options.js';

interface EtcdOptions {
  endpoints: string[];
  prefix: string;
  ca_file?: string;
  cert_file?: string;
  key_file?: string;
  username?: string;
  password?: string;
}

function why(err: unknown, timeoutMs: number): string {
  if ((err as Error)?.name === 'TimeoutError' || (err as Error)?.name === 'AbortError') return `no answer within ${timeoutMs}ms`;
  const code = errorCode(err);
  if (code === 'ECONNREFUSED') return 'connection refused';
  return code ? `${code}: ${errorText(err)}` : errorText(err);
}

async function call(
  agent: Agent,
  endpoint: string,
  path: string,
  timeoutMs: number,
  body?: unknown,
  token?: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const url = new URL(path, endpoint.replace(/\/*$/, '/'));
  const res = await agent.request({
    origin: url.origin,
    path: url.pathname,
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: token } : {}) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.body.text();
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { message: text.slice(0, 200) };
  }
  return { status: res.statusCode, json };
}

const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
const gatewayError = (j: Record<string, unknown>) => String(j.message ?? j.error ?? JSON.stringify(j)).slice(0, 200);

export async function etcdDoctor(input: DoctorInput<EtcdStoreOptions>): Promise<DoctorFindings> {
  return { results: [await checkEtcd(input)] };
}

async function checkEtcd(ctx: DoctorInput<EtcdStoreOptions>): Promise<CheckResult> {
  const o: Partial<EtcdOptions> = ctx.options;
  const endpoints = etcdEndpoints(o);
  const shown = endpoints.map(maskUrl).join(', ');
  const prefix = o.prefix ?? '/hmgate';
  const t = ctx.timeoutMs;
  const file = (f: string) => readFile(isAbsolute(f) ? f : resolve(ctx.configDir, f), 'utf8');
  let agent: Agent;
  try {
    agent = new Agent({
      connect: {
        timeout: t,
        ...(o.ca_file ? { ca: await file(o.ca_file) } : {}),
        ...(o.cert_file ? { cert: await file(o.cert_file) } : {}),
        ...(o.key_file ? { key: await file(o.key_file) } : {}),
      },
      headersTimeout: t,
      bodyTimeout: t,
    });
  } catch (err) {
    return failPlain(
      'etcd',
      `etcd at ${shown}`,
      `cannot read a TLS file of the store: ${errorText(err)}`,
      'check `store.ca_file`, `store.cert_file` and `store.key_file`',
    );
  }
  try {
    let endpoint: string | undefined;
    let health: { status: number; json: Record<string, unknown> } | undefined;
    let firstError = '';
    for (const e of endpoints) {
      try {
        health = await call(agent, e, 'health', t);
        endpoint = e;
        break;
      } catch (err) {
        firstError ||= `${maskUrl(e)}: ${why(err, t)}`;
      }
    }
    if (!endpoint || !health) return fail('etcd', makeProblem('ETCD_UNREACHABLE', { endpoints: shown, error: firstError }));
    if (health.json.health !== 'true' && health.json.health !== true) {
      const detail =
        typeof health.json.reason === 'string' && health.json.reason
          ? health.json.reason
          : `GET /health answered ${health.status} ${JSON.stringify(health.json).slice(0, 120)}`;
      return fail('etcd', makeProblem('ETCD_UNHEALTHY', { endpoint: maskUrl(endpoint), detail }));
    }
    let token: string | undefined;
    if (o.username) {
      const auth = await call(agent, endpoint, 'v3/auth/authenticate', t, { name: o.username, password: o.password ?? '' });
      if (auth.status !== 200 || typeof auth.json.token !== 'string') {
        return fail(
          'etcd',
          makeProblem('ETCD_WRITE_REFUSED', {
            endpoint: maskUrl(endpoint),
            prefix,
            error: `user ${o.username} could not log in: ${gatewayError(auth.json)}`,
            cause: 'credentials',
          }),
        );
      }
      token = auth.json.token;
    }
    const key = b64(`${prefix}/doctor/${randomUUID()}`);
    const put = await call(agent, endpoint, 'v3/kv/put', t, { key, value: b64('hmgate doctor test write') }, token);
    const refused = (error: string) =>
      fail(
        'etcd',
        makeProblem('ETCD_WRITE_REFUSED', {
          endpoint: maskUrl(endpoint),
          prefix,
          error,
          cause: etcdRefusal(error),
          ...(o.username ? { user: o.username } : {}),
        }),
      );
    if (put.status !== 200) return refused(gatewayError(put.json));
    const del = await call(agent, endpoint, 'v3/kv/deleterange', t, { key }, token);
    if (del.status !== 200) return refused(`the test key could not be deleted: ${gatewayError(del.json)}`);
    return pass('etcd', `etcd at ${shown}`, `healthy; a test key was written and deleted under ${prefix}`);
  } catch (err) {
    return fail('etcd', makeProblem('ETCD_UNREACHABLE', { endpoints: shown, error: why(err, t) }));
  } finally {
    await agent.destroy().catch(() => undefined);
  }
}
