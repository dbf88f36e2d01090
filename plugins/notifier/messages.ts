/**
 * The messages the notifier sends to the Cloud Controller, byte for byte; this file is the only
 * place that formats them.
 *
 * - HM9000 (docs/hm9000.md#start-and-stop-messages): one instance per message; the same body goes on NATS (hm9000.start /
 *   hm9000.stop) and in the HTTP POST of HM9000 HEAD. Keys in Go struct order, strings escaped as
 *   Go's encoding/json escapes them.
 * - The Ruby Health Manager (docs/ruby-hm.md#start-and-stop-requests, #partitioned-requests): the
 *   requests of event policies, in the two
 *   protocols it spoke — `health` (health.start / health.stop) and `cc-partition`
 *   (cloudcontrollers.hm.requests.<partition>, with an `op`). Keys in the order its hashes had.
 */
import type { DropletRequest, InstanceOrder, StartOrder, StopOrder } from '../../src/sdk/index.js';

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

/** A JSON object from ordered pairs of key and JSON text; a JS object would move integer-like keys first. */
function jsonObject(pairs: Iterable<readonly [string, string]>): string {
  const parts: string[] = [];
  for (const [k, json] of pairs) parts.push(`${JSON.stringify(k)}:${json}`);
  return `{${parts.join(',')}}`;
}

const j = (v: unknown): string => JSON.stringify(v);

/**
 * `health.start`: `{"droplet","last_updated","version","indices","running","flapping"}`; flapping is
 * always there, true only for the delayed restart of a flapping instance.
 */
export function formatHealthStart(r: DropletRequest): string {
  return jsonObject([
    ['droplet', j(r.droplet)],
    ['last_updated', j(r.lastUpdated)],
    ['version', j(r.version)],
    ['indices', j(r.indices ?? [])],
    ['running', j(r.running)],
    ['flapping', j(r.flapping === true)],
  ]);
}

/**
 * `health.stop`: `{"droplet","last_updated","instances":{guid: version, …},"running","version"}`.
 * A guid listed twice keeps its first place and its last version, as in a Ruby hash; a null guid
 * becomes the key "", as the Ruby encoder writes a nil key.
 */
export function formatHealthStop(r: DropletRequest): string {
  const instances = new Map<string, string>();
  for (const i of r.instances ?? []) instances.set(i.instance ?? '', j(i.version));
  return jsonObject([
    ['droplet', j(r.droplet)],
    ['last_updated', j(r.lastUpdated)],
    ['instances', jsonObject(instances)],
    ['running', j(r.running)],
    ['version', j(r.version)],
  ]);
}

/**
 * cc-partition START: `{"droplet","op":"START","last_updated","version","indices"}`, plus
 * `"flapping":true` only for the delayed restart of a flapping instance (never `false`).
 */
export function formatPartitionStart(r: DropletRequest): string {
  const pairs: [string, string][] = [
    ['droplet', j(r.droplet)],
    ['op', j('START')],
    ['last_updated', j(r.lastUpdated)],
    ['version', j(r.version)],
    ['indices', j(r.indices ?? [])],
  ];
  if (r.flapping === true) pairs.push(['flapping', 'true']);
  return jsonObject(pairs);
}

/** cc-partition STOP: `{"droplet","op":"STOP","last_updated","instances":[guid, …]}`, duplicates and nulls kept. */
export function formatPartitionStop(r: DropletRequest): string {
  return jsonObject([
    ['droplet', j(r.droplet)],
    ['op', j('STOP')],
    ['last_updated', j(r.lastUpdated)],
    ['instances', j((r.instances ?? []).map((i) => i.instance))],
  ]);
}

/** The wire body of a request in a Ruby protocol. */
export function formatRequestMessage(protocol: 'health' | 'cc-partition', r: DropletRequest): string {
  if (protocol === 'health') return r.op === 'START' ? formatHealthStart(r) : formatHealthStop(r);
  return r.op === 'START' ? formatPartitionStart(r) : formatPartitionStop(r);
}
