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
import { maskUrl } from '../../src/config/mask.js';
import { formatDuration } from '../../src/config/duration.js';

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
      throw new Error(`etcd store: cannot read ${option} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
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

/**
 * A fault-handling policy that runs the call once. etcd3's defaults retry three times and open a
 * circuit breaker for 5 s after three failures, which would turn one slow etcd into a 20 s stall
 * and delay recovery after a restart; the callers here have their own retry rhythm.
 */
const runOnce = {
  execute<T>(fn: (context: { signal: AbortSignal }) => PromiseLike<T> | T, signal?: AbortSignal): Promise<T> {
    return Promise.resolve().then(() => fn({ signal: signal ?? new AbortController().signal }));
  },
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
} as unknown as NonNullable<NonNullable<IOptions['faultHandling']>['global']>;

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
      watchBackoff: new WatchBackoff() as unknown as NonNullable<NonNullable<IOptions['faultHandling']>['watchBackoff']>,
    },
    grpcOptions: {
      // Notice a peer that stopped answering on an open connection (its streams would hang).
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // An initial range page of large agent records may exceed gRPC's default 4 MiB.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    },
  };
  if (conn.tls) {
    options.credentials = {
      rootCertificate: conn.tls.ca ?? (null as unknown as Buffer),
      ...(conn.tls.key ? { privateKey: conn.tls.key } : {}),
      ...(conn.tls.cert ? { certChain: conn.tls.cert } : {}),
    };
  }
  if (conn.auth) options.auth = { username: conn.auth.username, password: conn.auth.password };
  return new Etcd3(options);
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
  return text.split('\n')[0] || (err instanceof Error ? err.name : 'error');
}

/** An etcd3 error as a store error naming etcd, its endpoints and what went wrong. */
export function etcdError(err: unknown, endpoints: readonly string[], timeoutMs: number, doing: string): EtcdStoreError {
  if (err instanceof EtcdStoreError) return err;
  const at = `etcd at ${describeEndpoints(endpoints)}`;
  const detail = firstLine(err);
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
