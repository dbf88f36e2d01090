/**
 * The decision audit, kept in etcd beside the state: each record under `<prefix>/audit/`, on a
 * shared lease of a day, so a standby or the next leader can show what was decided. Keys sort by
 * time, then by writer.
 */
import type { AuditEntry, AuditKeeper } from '../../src/sdk/index.js';
import type { EtcdRequests } from './requests.js';
import type { StoreWriter } from './writes.js';

/** How long decision records are kept in etcd. */
const AUDIT_TTL_MS = 24 * 3_600_000;

export class DecisionAudit implements AuditKeeper {
  private readonly prefix: string;

  constructor(
    root: string,
    private readonly writerId: string,
    private readonly writer: Pick<StoreWriter, 'writeInChunks'>,
    private readonly requests: Pick<EtcdRequests, 'rangeAll'>,
  ) {
    this.prefix = `${root}audit/`;
  }

  async appendAudit(records: readonly AuditEntry[]): Promise<void> {
    if (records.length === 0) return;
    const items = records.map((r) => ({
      key: `${this.prefix}${String(r.at).padStart(15, '0')}-${this.writerId}-${String(r.seq).padStart(9, '0')}`,
      value: JSON.stringify(r),
    }));
    await this.writer.writeInChunks(items, 'writing the decision audit', AUDIT_TTL_MS);
  }

  /** The audit records kept in etcd, oldest first (at most `limit`, the newest ones). */
  async readAudit(limit: number): Promise<unknown[]> {
    const { kvs } = await this.requests.rangeAll(this.prefix, 'reading the decision audit');
    const out: unknown[] = [];
    for (const kv of kvs.slice(-limit)) {
      try {
        out.push(JSON.parse(kv.value.toString()));
      } catch {
        // a record that is not JSON was not written by hmgate: skipped
      }
    }
    return out;
  }
}
