/**
 * The one module a plugin imports: the plugin contract (definition, stage lifecycle, context,
 * capabilities), the state and store contracts, orders and sinks, the two policy contracts
 * (HM9000-style rules and Ruby-style event policies), and the helpers plugins share (decoding
 * inbound messages, counting dropped input, HTTP clients, durations, masking secrets).
 *
 *   import { definePlugin, Duration, type SinkStage } from 'hmgate/sdk';   // an installed plugin
 *   import { definePlugin } from './index.js';                 // a built-in one
 */

// The plugin and its stage.
export * from './plugin.js';
export * from './stage.js';
export * from './capabilities.js';
export * from './leadership.js';
export * from './clock.js';
export * from './bus.js';

// State, the store, freshness.
export * from './app-key.js';
export * from './state.js';
export * from './store.js';
export * from './freshness.js';

// HM9000-style policies: per-app rules over views of the state, proposing pending messages.
export * from './app-view.js';
export * from './policy.js';
export * from './pending-messages.js';

// Ruby-style event policies: per-app records changed by events.
export * from './events.js';
export * from './droplets.js';

// What sinks receive.
export * from './orders.js';

// How a plugin describes itself: its start-up line, its problems, its doctor checks.
export * from './summary.js';
export * from './problems.js';
export * from './doctor.js';
export { ccErrorDetail, httpGet, transportProblem } from './doctor-http.js';

// Shared helpers.
export * from './dropped-input.js';
export * from './log-limiter.js';
export * from './order-metrics.js';
export { errorText } from '../log.js';
export { Duration } from '../config/schema.js';
export { formatDuration } from '../config/duration.js';
export { maskUrl } from '../config/mask.js';
export { optionKey } from '../config/option-keys.js';
export { basicAuth, createHttpAgent, DNS_CODES, errorCode, loadCaFile, TLS_TRUST_CODES, UNREACHABLE_CODES } from '../http/client.js';
export { MAX_MESSAGE_BYTES, makeDecoder as makeSchemaDecoder, type Decoded, type Decoder } from '../messages/decode.js';
export { makeMessageDecoder } from '../messages/heartbeat-decode.js';
export * from '../messages/schemas.js';
export {
  appViewLookup,
  bulkAppStateBody,
  decodeRequestBody,
  EMPTY_APP_STATE,
  parseAppStateRequest,
  parseBulkAppStateRequest,
  singleAppStateBody,
} from '../messages/app-json.js';
export { dropletJson } from '../messages/droplet-json.js';

// Building a store.
export { CowMap } from '../state/cow-map.js';
export { CrashCountIndex } from '../state/crash-counts.js';
export { DeadlineHeap, DeadlineTimer, type Deadline } from '../state/deadlines.js';
export { checkArray, checkFreshnessKind, checkString, checkTtl } from '../state/store-arguments.js';
export { groupByApp, HeardInstance, keptInstances, sameInstance, sameInstanceSet } from '../state/instance-sets.js';
