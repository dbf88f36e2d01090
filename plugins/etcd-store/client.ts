/**
 * The etcd client as the store uses it: every unary call has a deadline (a paused or partitioned
 * etcd otherwise keeps a call waiting forever), no hidden retries (the engine retries a failed
 * cycle, the heartbeat source its next batch), and errors that say which etcd failed and how.
 */
import { readFileSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import {
  Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  GRPCDeadlineExceededError,
  GRPCUnauthenticatedError,
  GRPCUnavailableError,
  type IOptions,
} from 'etcd3';
import { formatDuration, maskUrl } from '../../src/sdk/index.js';

export interface EtcdConnection {
  endpoints: string[];
  /** Deadline of every unary call, and the dial timeout. */
  timeoutMs: number;
  /** PEM contents, already read. */
  tls?: { ca?: Buffer; cert?: Buffer; key?: Buffer };
  auth?: { username: string; password: string };
}

/** Reads the PEM files an options block names, relative to `baseDir`. */
export function readTlsFiles(baseDir: string, files: { ca_file?: string; cert_file?: string; key_file?: string }): EtcdConnection['tls'] {
  const read = (option: string, file: string | undefined): Buffer | undefined => {
    if (file === undefined) return undefined;
    const path = isAbsolute(file) ? file : resolve(baseDir, file);
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`etcd store: cannot read ${option} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  };
  if ((files.cert_file === undefined) !== (files.key_file === undefined)) {
    throw new Error('etcd store: cert_file and key_file go together (client-certificate auth needs both)');
  }
  const ca = read('ca_file', files.ca_file);
  const cert = read('cert_file', files.cert_file);
  const key = read('key_file', files.key_file);
  if (!ca && !cert) return undefined;
  return { ca, cert, key };
}

type FaultPolicy = NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

/**
 * A fault-handling policy that runs the call once. etcd3's defaults retry three times and open a
 * circuit breaker for 5 s after three failures, which would turn one slow etcd into a 20 s stall
 * and delay recovery after a restart; the callers here have their own retry rhythm.
 */
class RunOnce implements FaultPolicy {
  /** Type-only, as in cockatiel's own policies: what a failed call returns besides T (nothing). */
  declare readonly _altReturn: never;
  execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    return Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal }));
  }
  readonly onSuccess = () => ({ dispose() {} });
  readonly onFailure = () => ({ dispose() {} });
}
const runOnce = new RunOnce();

/** Watch streams reconnect after 100 ms, doubling to at most 2 s. */
class WatchBackoff {
  constructor(readonly duration = 100) {}
  next(): WatchBackoff {
    return new WatchBackoff(Math.min(2_000, this.duration * 2));
  }
}

export function createEtcdClient(conn: EtcdConnection): Etcd3 {
  const options: IOptions = {
    hosts: conn.endpoints,
    dialTimeout: conn.timeoutMs,
    defaultCallOptions: (context) => (context.isStream ? {} : { deadline: Date.now() + conn.timeoutMs }),
    faultHandling: {
      global: runOnce,
      host: () => runOnce,
      watchBackoff: new WatchBackoff(),
    },
    grpcOptions: {
      // Notice a peer that stopped answering on an open connection (its streams would hang).
      // Pings go only while a call is open and no more often than every 10 s: etcd closes the
      // connection of a client that pings more often than its --grpc-keepalive-min-time (5 s by
      // default), and of one that pings without an open call at all.
      'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 0,
      // An initial range page of large agent records may exceed gRPC's default 4 MiB.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // gRPC's default reconnect backoff grows to 2 minutes: an etcd back after an outage would
      // wait that long to be used again.
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 5_000,
    },
  };
  if (conn.tls) {
    const credentials: { rootCertificate: Buffer | null; privateKey?: Buffer; certChain?: Buffer } = {
      rootCertificate: conn.tls.ca ?? null,
      ...(conn.tls.key ? { privateKey: conn.tls.key } : {}),
      ...(conn.tls.cert ? { certChain: conn.tls.cert } : {}),
    };
    // etcd3 types rootCertificate as Buffer, but hands it to grpc's createSsl, where null means the default CAs.
    options.credentials = credentials as IOptions['credentials'];
  }
  if (conn.auth) options.auth = { username: conn.auth.username, password: conn.auth.password };
  const client = new Etcd3(options);
  keepConnectionsOnCallErrors(client);
  return client;
}

/** Client keepalive period; kept above etcd's default --grpc-keepalive-min-time (5 s). */
export const KEEPALIVE_TIME_MS = 10_000;

interface EtcdHost {
  resetAllServices(): void;
  close(): void;
  closed: boolean;
}

/**
 * etcd3 closes every gRPC client of an endpoint ("resetAllServices") as soon as ONE call on it
 * fails with a code it deems transient: CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
 * UNAVAILABLE, INTERNAL. All those clients share one HTTP/2 connection, so that drops every other
 * stream on it with "14 UNAVAILABLE: Connection dropped": the store's watch, the election's lease
 * keepalive and observer. Among those failures are a watch stream etcd3 cancels itself (a
 * campaign that stops waiting, on every failover), one call past its deadline, and one request
 * larger than etcd accepts. grpc-js reconnects a connection that really failed by itself (a closed
 * socket, or keepalive finding a silent peer), so the reset is kept for close() only.
 */
function keepConnectionsOnCallErrors(client: Etcd3): void {
  const hosts = poolHosts(client);
  if (!Array.isArray(hosts) || !hosts.every((h: Partial<EtcdHost>) => typeof h?.resetAllServices === 'function' && typeof h.close === 'function')) {
    throw new Error('etcd store: this version of the etcd3 package has no per-endpoint hosts where expected (see keepConnectionsOnCallErrors in client.ts)');
  }
  for (const host of hosts as EtcdHost[]) {
    const reset = host.resetAllServices.bind(host);
    host.resetAllServices = () => undefined;
    host.close = () => {
      reset();
      host.closed = true;
    };
  }
}

/** etcd3's per-endpoint hosts (client.pool.hosts, internal to etcd3), or undefined where it has none. */
function poolHosts(client: unknown): unknown {
  if (typeof client !== 'object' || client === null || !('pool' in client)) return undefined;
  const pool = client.pool;
  return typeof pool === 'object' && pool !== null && 'hosts' in pool ? pool.hosts : undefined;
}

/** The endpoints as they may be shown: credentials in URLs masked. */
export function describeEndpoints(endpoints: readonly string[]): string {
  return endpoints.map(maskUrl).join(', ');
}

export class EtcdStoreError extends Error {
  constructor(
    message: string,
    readonly kind: 'unreachable' | 'auth' | 'rejected',
    override readonly cause?: unknown,
  ) {
    super(message);
    this.name = 'EtcdStoreError';
  }
}

function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  const line = text.split('\n')[0] || (err instanceof Error ? err.name : 'error');
  // grpc-js appends "Last error: Error: connect ECONNREFUSED … Resolution note: " to UNAVAILABLE.
  return line.replace(/\.?\s*Resolution note:.*$/, '').replace(/\. Last error: (?:Error: )?/, ', last error: ');
}

/** `text` with the user info of any endpoint URL masked (gRPC's errors repeat the target as given). */
function withoutSecrets(text: string, endpoints: readonly string[]): string {
  let out = text;
  for (const endpoint of endpoints) {
    const userinfo = /^[a-z][a-z0-9+.-]*:\/\/([^/@]+)@/i.exec(endpoint)?.[1];
    if (!userinfo) continue;
    const password = userinfo.includes(':') ? userinfo.slice(userinfo.indexOf(':') + 1) : '';
    out = out.split(userinfo).join(password ? `${userinfo.slice(0, userinfo.indexOf(':'))}:***` : userinfo);
    if (password) out = out.split(password).join('***');
  }
  return out;
}

/** An etcd3 error as a store error naming etcd, its endpoints and what went wrong. */
export function etcdError(err: unknown, endpoints: readonly string[], timeoutMs: number, doing: string): EtcdStoreError {
  if (err instanceof EtcdStoreError) return err;
  const at = `etcd at ${describeEndpoints(endpoints)}`;
  const detail = withoutSecrets(firstLine(err), endpoints);
  if (err instanceof GRPCDeadlineExceededError) {
    return new EtcdStoreError(`${at} is unreachable: no answer within ${formatDuration(timeoutMs)} while ${doing} (${detail})`, 'unreachable', err);
  }
  if (err instanceof GRPCUnavailableError || /ECONNREFUSED|UNAVAILABLE|No connection established|client was already closed/i.test(detail)) {
    return new EtcdStoreError(`${at} is unreachable while ${doing}: ${detail}`, 'unreachable', err);
  }
  if (
    err instanceof EtcdAuthenticationFailedError ||
    err instanceof EtcdInvalidAuthTokenError ||
    err instanceof EtcdPermissionDeniedError ||
    err instanceof GRPCUnauthenticatedError
  ) {
    return new EtcdStoreError(`${at} refused access while ${doing}: ${detail}`, 'auth', err);
  }
  if (/request is too large/i.test(detail)) {
    return new EtcdStoreError(`${at} rejected the request while ${doing}: ${detail} (raise etcd's --max-request-bytes)`, 'rejected', err);
  }
  return new EtcdStoreError(`${at} failed while ${doing}: ${detail}`, 'rejected', err);
}
