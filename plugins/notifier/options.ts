/**
 * Options of the `notifier` sink. Each names the HM9000 or Ruby Health Manager config key it
 * replaces where there is one, so an old config maps onto it key by key. Durations arrive in ms.
 * Which options go with which protocol is checked when the stage is created (checkOptions), with a
 * sentence per problem. The subjects have no schema default because it depends on the protocol
 * (subjectsFor).
 */
import { Type, type Static } from '@sinclair/typebox';
import { Duration } from '../../src/sdk/index.js';

export const PROTOCOLS = ['hm9000', 'hm9000-http', 'health', 'cc-partition'] as const;
export type Protocol = (typeof PROTOCOLS)[number];

/** HM9000's per-instance orders (the analyze → dispatch cycle). */
export const INSTANCE_PROTOCOLS: readonly Protocol[] = ['hm9000', 'hm9000-http'];
/** The Ruby Health Manager's requests (event policies). */
export const REQUEST_PROTOCOLS: readonly Protocol[] = ['health', 'cc-partition'];

export const DEFAULT_START_SUBJECT = 'hm9000.start';
export const DEFAULT_STOP_SUBJECT = 'hm9000.stop';
export const HEALTH_START_SUBJECT = 'health.start';
export const HEALTH_STOP_SUBJECT = 'health.stop';
export const CC_REQUESTS_PREFIX = 'cloudcontrollers.hm.requests.';
export const DEFAULT_CC_PARTITION = 'default';
export const DEFAULT_TIMEOUT = '10s';

export const NotifierOptionsSchema = Type.Object(
  {
    protocol: Type.Unsafe<Protocol>({
      type: 'string',
      enum: [...PROTOCOLS],
      default: 'hm9000',
      description:
        "hm9000: publish each order on NATS (start_subject / stop_subject), as classic HM9000 did. hm9000-http: POST it to the Cloud Controller's internal API at cc_url, as HM9000 HEAD did. health: publish the requests of event policies on health.start / health.stop, as the Ruby Health Manager did from 2013-06-24 on. cc-partition: publish them on cloudcontrollers.hm.requests.<cc_partition> with an op field, as the Ruby Health Manager did before.",
    }),
    start_subject: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "NATS subject of start messages; defaults to hm9000.start (protocol: hm9000), health.start (health) or cloudcontrollers.hm.requests.<cc_partition> (cc-partition). Replaces HM9000's sender_nats_start_subject.",
      }),
    ),
    stop_subject: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "NATS subject of stop messages; defaults to hm9000.stop (protocol: hm9000), health.stop (health) or cloudcontrollers.hm.requests.<cc_partition> (cc-partition). Replaces HM9000's sender_nats_stop_subject.",
      }),
    ),
    cc_partition: Type.Optional(
      Type.String({
        minLength: 1,
        pattern: '^[^\\s*>]+$',
        description:
          'The Cloud Controller\'s partition; with protocol: cc-partition it names the subject cloudcontrollers.hm.requests.<cc_partition> of starts and stops (other protocols do not use it); default "default" (CC v2 used ng). The top-level cc_partition sets it for every stage.',
      }),
    ),
    cc_url: Type.Optional(
      Type.String({
        pattern: '^https?://[^\\s]+$',
        description:
          "The Cloud Controller's internal base URL, http:// or https://; /internal/dea/hm9000/{start,stop}/<app guid> is appended. Required with protocol: hm9000-http. Replaces HM9000's cc_internal_url.",
      }),
    ),
    user: Type.Optional(
      Type.String({
        description:
          "Basic-auth user for the CC's internal API; required with protocol: hm9000-http. HM9000 reused api_server_username for this; here it is the stage's own.",
      }),
    ),
    password: Type.Optional(
      Type.String({
        description:
          "Basic-auth password for the CC's internal API; required with protocol: hm9000-http. HM9000 reused api_server_password for this; here it is the stage's own.",
      }),
    ),
    timeout: Duration({
      default: DEFAULT_TIMEOUT,
      description: 'Deadline of one request to the CC, connecting included (protocol: hm9000-http); a request that takes longer is a failed send.',
    }),
    skip_cert_verify: Type.Boolean({
      default: false,
      description: "true accepts any certificate from the CC (protocol: hm9000-http). Replaces HM9000's skip_cert_verify; hmgate defaults to verifying.",
    }),
    ca_file: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM file of CA certificates trusted for the CC in addition to the system CAs (protocol: hm9000-http, https:// only); relative to this config file. HM9000 had no such key.',
      }),
    ),
  },
  { additionalProperties: false },
);

export type NotifierOptions = Static<typeof NotifierOptionsSchema>;

/** The subjects a NATS protocol publishes on: the options, else the protocol's defaults. */
export function subjectsFor(o: Pick<NotifierOptions, 'protocol' | 'start_subject' | 'stop_subject' | 'cc_partition'>): { start: string; stop: string } {
  if (o.protocol === 'health') return { start: o.start_subject ?? HEALTH_START_SUBJECT, stop: o.stop_subject ?? HEALTH_STOP_SUBJECT };
  if (o.protocol === 'cc-partition') {
    const subject = CC_REQUESTS_PREFIX + (o.cc_partition ?? DEFAULT_CC_PARTITION);
    return { start: o.start_subject ?? subject, stop: o.stop_subject ?? subject };
  }
  return { start: o.start_subject ?? DEFAULT_START_SUBJECT, stop: o.stop_subject ?? DEFAULT_STOP_SUBJECT };
}

/**
 * The combinations a schema cannot express, each as a sentence naming `sinks.<id>.<key>` (no
 * sentence holds "; ", which joins them into one error). An empty list means the options are usable.
 */
export function checkOptions(o: NotifierOptions, id: string): string[] {
  const key = (k: string) => `sinks.${id}.${k}`;
  const problems: string[] = [];
  if (o.protocol !== 'hm9000-http') {
    const httpOnly: string[] = (['cc_url', 'user', 'password', 'ca_file'] as const).filter((k) => o[k] !== undefined);
    if (o.skip_cert_verify) httpOnly.push('skip_cert_verify');
    if (httpOnly.length > 0) {
      problems.push(
        `${httpOnly.map(key).join(', ')} ${httpOnly.length === 1 ? 'applies' : 'apply'} only to protocol: hm9000-http, and this stage publishes on NATS (protocol: ${o.protocol}): remove ${httpOnly.length === 1 ? 'it' : 'them'} or set protocol: hm9000-http`,
      );
    }
    return problems;
  }

  if (o.cc_url === undefined) {
    problems.push(
      `${key('cc_url')} is required with protocol: hm9000-http: the Cloud Controller's internal base URL (HM9000's cc_internal_url), e.g. https://cloud-controller-ng.service.cf.internal:9023`,
    );
  } else {
    let url: URL | undefined;
    try {
      url = new URL(o.cc_url);
    } catch {
      problems.push(`${key('cc_url')} is not a URL: write the Cloud Controller's base URL, e.g. https://cloud-controller-ng.service.cf.internal:9023`);
    }
    if (url) {
      if (url.username !== '' || url.password !== '') {
        problems.push(`${key('cc_url')} carries credentials: put them in ${key('user')} and ${key('password')} instead`);
      }
      if (url.search !== '' || url.hash !== '') {
        problems.push(`${key('cc_url')} must be a base URL without ?query or #fragment, as /internal/dea/hm9000/… is appended to it`);
      }
      if (url.protocol === 'http:' && (o.ca_file !== undefined || o.skip_cert_verify)) {
        problems.push(`${o.ca_file !== undefined ? key('ca_file') : key('skip_cert_verify')} applies only to an https:// cc_url`);
      }
    }
  }
  if (o.user === undefined || o.password === undefined) {
    const missing =
      o.user === undefined && o.password === undefined ? `${key('user')} and ${key('password')} are` : `${key(o.user === undefined ? 'user' : 'password')} is`;
    problems.push(
      `${missing} required with protocol: hm9000-http: the Cloud Controller's internal API takes basic auth (HM9000 sent its api_server_username / api_server_password)`,
    );
  }
  if (o.skip_cert_verify && o.ca_file !== undefined) {
    problems.push(
      `${key('ca_file')} and ${key('skip_cert_verify')}: true contradict each other: keep ca_file to verify the CC with it, or drop it to accept any certificate`,
    );
  }
  // A config that extends the hm9000 preset carries its subjects; those are let through.
  const setStart = o.start_subject !== undefined && o.start_subject !== DEFAULT_START_SUBJECT;
  const setStop = o.stop_subject !== undefined && o.stop_subject !== DEFAULT_STOP_SUBJECT;
  if (setStart || setStop) {
    const which = [setStart ? 'start_subject' : undefined, setStop ? 'stop_subject' : undefined].filter((k): k is string => k !== undefined).map(key);
    problems.push(
      `${which.join(', ')} ${which.length === 1 ? 'applies' : 'apply'} only to the NATS protocols (hm9000, health, cc-partition), and this stage POSTs to the Cloud Controller`,
    );
  }
  return problems;
}
