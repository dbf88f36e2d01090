/**
 * The `bulk-api` source: desired state from the Cloud Controller's bulk API, as HM9000's
 * `fetch_desired` (docs/hm9000.md#desired-state), or, with `walk: ruby`, as the Ruby Health
 * Manager's desired state (docs/ruby-hm.md#desired-state, #desired-state-in-the-older-design).
 */
import { definePlugin } from '../../src/sdk/index.js';
import { BulkApiSource } from './bulk-api.js';
import { bulkApiProblems, bulkApiSummary } from './describe.js';
import { bulkApiDoctor } from './doctor.js';
import { BulkApiOptionsSchema, credentialsSubject } from './options.js';

export {
  BulkApiSource,
  BULK_APPS_LABEL,
  desiredFetchMetrics,
  MAX_CONSECUTIVE_ERRORS,
  type DesiredStats,
  type DesiredTotals,
  type FetchOutcome,
  type HttpAnswer,
  type Transport,
} from './bulk-api.js';
export { BulkApiOptionsSchema, credentialsSubject, type BulkApiOptions, type WalkMode } from './options.js';
export {
  bulkAppsPath,
  bulkBaseUrl,
  FIRST_TOKEN,
  parseBulkPage,
  parseCredentials,
  parseRubyPage,
  parseUserCount,
  percentEncode,
  rubyAppsPath,
  userCountsPath,
  type PageResult,
  type RubyPageResult,
} from './page.js';

export default definePlugin({
  name: 'bulk-api',
  kind: 'source',
  family: 'common',
  description:
    "Desired state from the Cloud Controller's bulk API (/bulk/apps), as HM9000's fetch_desired: paged with a raw JSON bulk_token, apps STARTED with a STAGED or PENDING package kept, the store replaced and desired freshness bumped only after a complete fetch. walk: ruby walks it as the Ruby HM did, handing every app to the event policies as its page arrives.",
  optionsSchema: BulkApiOptionsSchema,
  create: (options, ctx) => new BulkApiSource({ ...options, credentials_subject: credentialsSubject(options) }, ctx),
  summary: bulkApiSummary,
  problems: bulkApiProblems,
  doctor: bulkApiDoctor,
});
