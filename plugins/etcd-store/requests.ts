/**
 * Every request the store sends to etcd: on its one client, counted in EtcdWriteStats, failures
 * turned into errors naming etcd, and no write sent before the state was read once (the compares
 * and the skipped writes rely on what was read).
 */
import type { Etcd3, ICompare, IKeyValue, IRequestOp, ITxnResponse } from 'etcd3';
import type { Logger } from 'pino';
import { describeEndpoints, etcdError, EtcdStoreError, type EtcdConnection } from './client.js';
import type { AgentDelta, AgentValue } from './codec.js';
import { prefixEnd } from './keys.js';

export type StoreLogger = Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;

/** Counts of what this store sent to etcd (for write-volume measurements and metrics). */
export interface EtcdWriteStats {
  txns: number;
  puts: number;
  /** Bytes of the keys and values put. */
  putBytes: number;
  /** Of the puts: agent records, and agent deltas. */
  recordPuts: number;
  deltaPuts: number;
  /** Compare-and-deletes of expired records sent. */
  expiredDeletes: number;
  deletes: number;
  ranges: number;
  leaseGrants: number;
  /** Agent writes not sent because one put would be larger than etcd accepts in a request. */
  refusedRecords: number;
}

/** One operation of a transaction. */
export interface WriteOp {
  key: string;
  /** Undefined deletes the key. */
  value?: string;
  lease?: string;
  /** What `value` decodes to, for this store's own agent writes: applied without parsing it again. */
  decoded?: AgentValue | AgentDelta;
}

/** Keys per page of a range. */
const RANGE_PAGE = 500;

export class EtcdRequests {
  readonly stats: EtcdWriteStats = {
    txns: 0,
    puts: 0,
    putBytes: 0,
    recordPuts: 0,
    deltaPuts: 0,
    expiredDeletes: 0,
    deletes: 0,
    ranges: 0,
    leaseGrants: 0,
    refusedRecords: 0,
  };
  /** `etcd at <endpoints>`, credentials masked: how messages name it. */
  readonly where: string;
  /** The client, from start to stop. */
  etcd: Etcd3 | undefined;
  /** Set by stop, cleared by start: nothing more is begun in the background meanwhile. */
  stopped = false;
  /** Whether the state was ever read: until then there is nothing to write against. */
  everSynced = false;
  /** Why the last transaction failed; null once one succeeds. */
  lastError: string | null = null;

  constructor(
    private readonly conn: EtcdConnection,
    private readonly logger: StoreLogger | undefined,
  ) {
    this.where = `etcd at ${describeEndpoints(conn.endpoints)}`;
  }

  /** The client (after start). */
  get client(): Etcd3 {
    if (!this.etcd) throw new Error('etcd store: not started');
    return this.etcd;
  }

  /** Runs an etcd call with this store's client, turning failures into errors naming etcd. */
  async call<T>(doing: string, fn: (client: Etcd3) => Promise<T>, write = true): Promise<T> {
    const client = this.etcd;
    // Nothing is written against a state never read (the compares and skipped writes rely on it).
    if (write && !this.everSynced) {
      throw new EtcdStoreError(`${this.where} is unreachable: the state has not been read from it yet (${doing})`, 'unreachable');
    }
    if (!client) throw new EtcdStoreError(`${this.where}: the store is not started (${doing})`, 'unreachable');
    try {
      return await fn(client);
    } catch (err) {
      throw etcdError(err, this.conn.endpoints, this.conn.timeoutMs, doing);
    }
  }

  /** One transaction; a failure is recorded for health() and rethrown. */
  async commit(ops: readonly WriteOp[], doing: string, compare: ICompare[] = []): Promise<ITxnResponse> {
    const success: IRequestOp[] = ops.map((op) =>
      op.value === undefined
        ? { request_delete_range: { key: Buffer.from(op.key) } }
        : { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value), ...(op.lease ? { lease: op.lease } : {}) } },
    );
    this.stats.txns++;
    for (const op of ops) {
      if (op.value === undefined) this.stats.deletes++;
      else {
        this.stats.puts++;
        this.stats.putBytes += Buffer.byteLength(op.key) + Buffer.byteLength(op.value);
      }
    }
    try {
      const res = await this.call(doing, (c) => c.kv.txn({ compare, success, failure: [] }));
      this.lastError = null;
      return res;
    } catch (err) {
      this.lastError = (err as Error).message;
      this.logger?.warn({ error: this.lastError }, this.lastError);
      throw err;
    }
  }

  /** Every key under `prefix`, read in pages at one revision, and that revision. */
  async rangeAll(prefix: string, doing: string): Promise<{ kvs: IKeyValue[]; revision: number }> {
    const start = Buffer.from(prefix);
    const end = prefixEnd(start);
    const kvs: IKeyValue[] = [];
    let key = start;
    let revision: number | undefined;
    for (;;) {
      this.stats.ranges++;
      const res = await this.call(doing, (c) => c.kv.range({ key, range_end: end, limit: RANGE_PAGE, ...(revision === undefined ? {} : { revision }) }), false);
      revision ??= Number(res.header.revision);
      kvs.push(...res.kvs);
      if (!res.more || res.kvs.length === 0) break;
      key = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
    }
    return { kvs, revision };
  }
}
