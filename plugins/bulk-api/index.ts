/**
 * The `bulk-api` source: desired state from the Cloud Controller's bulk API, as HM9000's
 * `fetch_desired` (spec hm9000.md §2.6, §2.7, §7).
 */
import { definePlugin } from '../../src/pipeline/plugin.js';
import { BulkApiSource } from './bulk-api.js';
import { BulkApiOptionsSchema } from './options.js';

export { BulkApiSource, desiredFetchMetrics, type FetchOutcome, type HttpAnswer, type Transport } from './bulk-api.js';
export { BulkApiOptionsSchema, type BulkApiOptions } from './options.js';
export { bulkAppsPath, FIRST_TOKEN, parseBulkPage, parseCredentials, type PageResult } from './page.js';

export default definePlugin({
  name: 'bulk-api',
  kind: 'source',
  description:
    "Desired state from the Cloud Controller's bulk API (/bulk/apps), as HM9000's fetch_desired: paged with a raw JSON bulk_token, apps STARTED with a STAGED or PENDING package kept, the store replaced and desired freshness bumped only after a complete fetch.",
  optionsSchema: BulkApiOptionsSchema,
  create: (options, ctx) => new BulkApiSource(options, ctx),
});
