/**
 * The `etcd` store: state shared by several daemons in etcd v3, read from a local cache kept
 * current by a watch. The layout and the lease design are described in README.md beside it.
 */
import { Counter, type Registry } from 'prom-client';
import { definePlugin } from '../../src/sdk/index.js';
import { readTlsFiles } from './client.js';
import { etcdStoreProblem, etcdSummary } from './describe.js';
import { etcdDoctor } from './doctor.js';
import { EtcdStore } from './etcd-store.js';
import { EtcdStoreOptionsSchema } from './options.js';

export { EtcdStore, dumpRaw, type EtcdStoreConfig, type EtcdWriteStats } from './etcd-store.js';
export { EtcdStoreError, createEtcdClient, describeEndpoints } from './client.js';
export { EtcdStoreOptionsSchema, type EtcdStoreOptions } from './options.js';

export default definePlugin({
  name: 'etcd',
  kind: 'store',
  family: 'common',
  description:
    'Keeps the state store in etcd v3, shared by several daemons: one record per agent on shared leases with a small delta key for what changed since, the desired state in a few chunks replaced in one transaction, reads from a local cache kept by a watch.',
  optionsSchema: EtcdStoreOptionsSchema,
  create: (opts, ctx) => {
    if ((opts.username === undefined) !== (opts.password === undefined)) {
      throw new Error('etcd store: username and password go together');
    }
    const store = new EtcdStore(
      {
        endpoints: opts.endpoints,
        prefix: opts.prefix,
        maxRequestBytes: opts.max_request_bytes,
        timeoutMs: opts.dial_timeout,
        tls: readTlsFiles(ctx.configDir, opts),
        auth: opts.username !== undefined ? { username: opts.username, password: opts.password ?? '' } : undefined,
      },
      ctx.clock,
      {
        logger: ctx.logger,
        onListenerError: (err, change) => ctx.logger.error({ err, change }, 'store change listener failed'),
      },
    );
    countFrom(ctx.metrics, 'hmgate_etcd_watch_breaks_total', 'Times the etcd watch broke and the state was read again', () => store.watchBreaks);
    countFrom(
      ctx.metrics,
      'hmgate_etcd_refused_records_total',
      'Agent records not sent because they are larger than etcd accepts in one request (max_request_bytes)',
      () => store.stats.refusedRecords,
    );
    return store;
  },
  summary: etcdSummary,
  storeProblem: etcdStoreProblem,
  doctor: etcdDoctor,
});

/** A counter whose value is read from the store when scraped (one per registry). */
function countFrom(registry: Registry | undefined, name: string, help: string, read: () => number): void {
  if (!registry) return;
  registry.removeSingleMetric(name);
  new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}
