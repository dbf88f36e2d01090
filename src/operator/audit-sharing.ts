/**
 * The decision audit shared through a store that keeps it (the `AuditKeeper` capability: the etcd
 * store): the leader writes its new records beside the state, and a new leader takes in what its
 * predecessor wrote, so /v1/decisions goes on across a failover.
 */
import type { Logger } from 'pino';
import { errorText } from '../log.js';
import { isAuditKeeper } from '../sdk/capabilities.js';
import type { Stage } from '../sdk/stage.js';
import { counted } from '../sdk/summary.js';
import type { DecisionAudit, DecisionInput } from './audit.js';

export class AuditSharing {
  /** The last record written to the store. */
  private persisted = 0;

  constructor(
    private readonly audit: DecisionAudit,
    private readonly logger: Logger,
  ) {}

  /** Writes the records made since the last write; kept in memory and tried again next time if it fails. */
  async persist(store: Stage | undefined, leading: boolean): Promise<void> {
    if (!store || !isAuditKeeper(store) || !leading) return;
    const records = this.audit.after(this.persisted);
    if (records.length === 0) return;
    try {
      await store.appendAudit(records);
      this.persisted = records[records.length - 1]!.seq;
    } catch (err) {
      // The store's own health says what is wrong.
      this.logger.debug({ error: errorText(err) }, 'decision audit not written to the store');
    }
  }

  /** Takes in the decisions a predecessor persisted (a daemon that has just taken the lead). */
  async adopt(store: Stage): Promise<void> {
    if (!isAuditKeeper(store)) return;
    try {
      const n = this.audit.adopt((await store.readAudit(this.audit.capacity)) as DecisionInput[]);
      this.persisted = this.audit.lastSeq;
      if (n > 0) this.logger.info({ records: n }, `took in ${counted(n, 'decision record')} from the store`);
    } catch (err) {
      this.logger.warn({ error: errorText(err) }, `could not read the decision audit from the store: ${errorText(err)}`);
    }
  }
}
