/**
 * Options of the `bulk-api` source. Each names the HM9000 config key it replaces, so an operator
 * moving a foundation over can map an HM9000 config file key by key. Durations arrive in ms.
 *
 * By default the walk (token form, end condition, what is kept, replace-whole) is HM9000's.
 * `walk: ruby` walks the same API as the Ruby Health Manager did (percent-encoded opaque token,
 * every app reported as it arrives, transport errors retried, cached NATS credentials, updates
 * that may overlap); `user_counts` and `forget_unseen` complete its two designs.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Duration } from '../../src/sdk/index.js';

export const CREDENTIAL_MODES = ['static', 'nats'] as const;
export type CredentialMode = (typeof CREDENTIAL_MODES)[number];

export const WALK_MODES = ['hm9000', 'ruby'] as const;
export type WalkMode = (typeof WALK_MODES)[number];

/** A URL with a scheme other than http(s) is refused; a bare host gets http:// (the Ruby HM's rule). */
export const URL_PATTERN = '^(https?://[^\\s]+|(?![A-Za-z][A-Za-z0-9+.-]*://)[^\\s/?#][^\\s]*)$';

export const BulkApiOptionsSchema = Type.Object(
  {
    url: Type.String({
      pattern: URL_PATTERN,
      description:
        "The Cloud Controller's base URL (its domain or IP), http:// or https://; /bulk/apps is appended. A bare host[:port] gets http:// in front, as the Ruby HM did with bulk_api.host. Replaces HM9000's cc_base_url and the Ruby HM's bulk_api.host.",
    }),
    user: Type.Optional(Type.String({ description: "Basic-auth user of the CC bulk API (credentials: static). Replaces HM9000's cc_auth_user." })),
    password: Type.Optional(Type.String({ description: "Basic-auth password of the CC bulk API (credentials: static). Replaces HM9000's cc_auth_password." })),
    walk: Type.Unsafe<WalkMode>({
      type: 'string',
      enum: [...WALK_MODES],
      default: 'hm9000',
      description:
        "hm9000: raw JSON bulk_token, only STARTED apps with a STAGED or PENDING package kept, any failure abandons the fetch, the desired state replaced after the final page, fetches never overlap. ruby: the Ruby HM's walk — bulk_token percent-encoded, every app handed to the event policies as its page arrives (apps missing from a walk stay known), a transport error retried at once up to 10 in a row, any answer setting whether desired state is available, NATS credentials cached, a walk at start and then every poll_interval even if the last one still pages, and no overall timeout.",
    }),
    user_counts: Type.Boolean({
      default: false,
      description:
        'true asks GET /bulk/counts?model=user before each walk, beside it (the Ruby HM): its answer sets whether desired state is available, and a failure drops NATS credentials. The user count is kept for the statistics.',
    }),
    forget_unseen: Type.Boolean({
      default: false,
      description:
        "walk: ruby only. true reports, with each complete walk, which apps it saw, so that the app records of all others are forgotten (the Ruby HM's older design, which deleted apps missing from the bulk API).",
    }),
    batch_size: Type.Integer({
      minimum: 1,
      default: 500,
      description:
        "Apps per page, sent as batch_size. Replaces HM9000's desired_state_batch_size (default_config.json: 500) and the Ruby HM's bulk_api.batch_size (500).",
    }),
    poll_interval: Duration({
      default: '6hb',
      description:
        "Time between the starts of two fetches; fetches never overlap (walk: ruby: a fixed period, and an update starts even while the last still pages). Replaces HM9000's fetcher_polling_interval_in_heartbeats and the Ruby HM's intervals.desired_state_update.",
    }),
    timeout: Duration({
      default: '60hb',
      description:
        "A whole fetch (every page) that takes longer is abandoned and counts as failed; walk: ruby has none. Replaces HM9000's fetcher_timeout_in_heartbeats.",
    }),
    network_timeout: Duration({
      default: '10s',
      description: "Connect timeout, and the deadline of each request (answer and body). Replaces HM9000's fetcher_network_timeout_in_seconds.",
    }),
    skip_cert_verify: Type.Boolean({
      default: false,
      description:
        "true accepts any certificate from the CC. Replaces HM9000's skip_cert_verify; HM9000's default_config.json had true, hmgate defaults to verifying.",
    }),
    ca_file: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'PEM file of CA certificates trusted for the CC in addition to the system CAs; relative to this config file. HM9000 had no such key (it only had skip_cert_verify).',
      }),
    ),
    credentials: Type.Unsafe<CredentialMode>({
      type: 'string',
      enum: [...CREDENTIAL_MODES],
      default: 'static',
      description:
        'static: user / password above (HM9000 since 2013-10). nats: ask the CC for them on credentials_subject before each fetch (HM9000 until 2013-10); walk: ruby keeps them until /bulk/counts fails or 10 transport errors in a row (the Ruby HM).',
    }),
    cc_partition: Type.String({
      minLength: 1,
      default: 'default',
      description:
        "The Cloud Controller's partition: the CC answers credentials on cloudcontroller.bulk.credentials.<cc_partition> (a CC v2 on ng). The top-level cc_partition sets it for every stage.",
    }),
    credentials_subject: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'NATS subject the CC answers with {"user","password"} (credentials: nats); default cloudcontroller.bulk.credentials.<cc_partition>. Replaces HM9000\'s cc_auth_message_bus_subject (2013) and the Ruby HM\'s credentials subject.',
      }),
    ),
    credentials_timeout: Duration({
      default: '5s',
      description:
        "How long to wait for the credentials reply (credentials: nats); no reply skips that fetch. Not an HM9000 key; the Ruby HM's intervals.bulk_credentials_timeout (5 s; nats_request_timeout in its older design).",
    }),
  },
  { additionalProperties: false },
);

export type BulkApiOptions = Static<typeof BulkApiOptionsSchema>;

/** Where credentials are asked for: the explicit subject, else the one the partition names. */
export function credentialsSubject(o: { credentials_subject?: string | undefined; cc_partition?: string | undefined }): string {
  return o.credentials_subject ?? `cloudcontroller.bulk.credentials.${o.cc_partition ?? 'default'}`;
}
