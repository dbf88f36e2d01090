/**
 * The start and stop messages HM9000 sends to the Cloud Controller (spec §2.4), byte for byte. The
 * same body goes on NATS (hm9000.start / hm9000.stop) and in the HTTP POST of HM9000 HEAD. These
 * two functions are the only place that formats them: keys in Go struct order, and strings escaped
 * as Go's encoding/json escapes them, so a consumer comparing bytes sees what HM9000 sent.
 */
import type { InstanceOrder, StartOrder, StopOrder } from '../../src/pipeline/decisions.js';

/** What a start message carries. */
export type StartMessageFields = Pick<StartOrder, 'messageId' | 'app' | 'version' | 'index'>;
/** What a stop message carries. */
export type StopMessageFields = Pick<StopOrder, 'messageId' | 'app' | 'version' | 'instance' | 'index' | 'isDuplicate'>;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
const GO_ESCAPED = /[<>&\u2028\u2029]/g;

/** A string as Go marshals it: invalid UTF-16 (Go: invalid UTF-8) becomes U+FFFD. */
const goString = (s: string): string => s.replace(LONE_SURROGATE, '\uFFFD');

/**
 * JSON.stringify with Go's default HTML-safe escaping (<, >, & and U+2028/U+2029 as \u00XX).
 * Those characters only ever occur inside string values here, so replacing them in the output is
 * the same as escaping them in each string.
 */
function goJson(value: Record<string, string | number | boolean>): string {
  return JSON.stringify(value).replace(GO_ESCAPED, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** `{"message_id":"…","droplet":"…","version":"…","instance_index":1}` */
export function formatStartMessage(m: StartMessageFields): string {
  return goJson({
    message_id: goString(m.messageId),
    droplet: goString(m.app),
    version: goString(m.version),
    instance_index: m.index,
  });
}

/** `{"message_id":"…","droplet":"…","version":"…","instance_guid":"…","instance_index":1,"is_duplicate":true}` */
export function formatStopMessage(m: StopMessageFields): string {
  return goJson({
    message_id: goString(m.messageId),
    droplet: goString(m.app),
    version: goString(m.version),
    instance_guid: goString(m.instance),
    instance_index: m.index,
    is_duplicate: m.isDuplicate,
  });
}

/** The wire body of an order: formatStartMessage or formatStopMessage by its action. */
export function formatOrderMessage(order: InstanceOrder): string {
  return order.action === 'start' ? formatStartMessage(order) : formatStopMessage(order);
}
