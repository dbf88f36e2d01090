/**
 * How the etcd store describes itself: its start-up line, and a failure of the store in its own
 * words — etcd unreachable, or a write larger than etcd takes in one request.
 */
import { makeProblem, maskUrl, type Problem, type StoreFailure } from '../../src/sdk/index.js';
import type { EtcdStoreOptions } from './options.js';

/** The etcd endpoints of the store's options, as shown. */
export function etcdEndpoints(options: { endpoints?: unknown }): string[] {
  const e = options.endpoints;
  if (Array.isArray(e) && e.length > 0) return e.map(String);
  if (typeof e === 'string' && e !== '') return [e];
  return ['http://127.0.0.1:2379'];
}

export function etcdSummary(o: EtcdStoreOptions): string {
  const endpoints = Array.isArray(o.endpoints) ? o.endpoints.map((e) => maskUrl(String(e))).join(', ') : 'its default endpoints';
  return `etcd store at ${endpoints}${o.prefix !== undefined ? `, prefix ${String(o.prefix)}` : ''}`;
}

export function etcdStoreProblem(f: StoreFailure<EtcdStoreOptions>): Problem | undefined {
  const endpoints = etcdEndpoints(f.options).map(maskUrl).join(', ');
  if (f.writeError === undefined) return makeProblem('ETCD_UNREACHABLE', { endpoints, error: f.error });
  if (/too large|max-request-bytes|max_request_bytes/i.test(f.writeError)) return makeProblem('ETCD_REQUEST_TOO_LARGE', { endpoints, error: f.error });
  if (/unreachable|not started|not been read/i.test(f.writeError)) return makeProblem('ETCD_UNREACHABLE', { endpoints, error: f.error });
  return undefined;
}
