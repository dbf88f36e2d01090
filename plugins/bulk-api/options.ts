/**
 * Options of the `bulk-api` source. Each names the HM9000 config key it replaces, so an operator
 * moving a foundation over can map an HM9000 config file key by key. Durations arrive in ms.
 *
 * The walk itself (token form, end condition, what is kept, replace-whole) is HM9000's. The Ruby
 * HM walks the same API differently (percent-encoded token, missing `results` ends the walk,
 * desired apps merged rather than replaced, transport errors retried, /bulk/counts first); those
 * would be further options here, each defaulting to HM9000's behaviour.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Duration } from '../../src/config/schema.js';

export const CREDENTIAL_MODES = ['static', 'nats'] as const;
export type CredentialMode = (typeof CREDENTIAL_MODES)[number];

export const BulkApiOptionsSchema = Type.Object(
  {
    url: Type.String({
      pattern: '^https?://[^\\s]+$',
      description:
        "The Cloud Controller's base URL (its domain or IP), http:// or https://; /bulk/apps is appended. Replaces HM9000's cc_base_url.",
    }),
    user: Type.Optional(
      Type.String({ description: "Basic-auth user of the CC bulk API (credentials: static). Replaces HM9000's cc_auth_user." }),
    ),
    password: Type.Optional(
      Type.String({ description: "Basic-auth password of the CC bulk API (credentials: static). Replaces HM9000's cc_auth_password." }),
    ),
    batch_size: Type.Integer({
      minimum: 1,
      default: 500,
      description: "Apps per page, sent as batch_size. Replaces HM9000's desired_state_batch_size (default_config.json: 500).",
    }),
    poll_interval: Duration({
      default: '6hb',
      description: "Time between the starts of two fetches; fetches never overlap. Replaces HM9000's fetcher_polling_interval_in_heartbeats.",
    }),
    timeout: Duration({
      default: '60hb',
      description:
        "A whole fetch (every page) that takes longer is abandoned and counts as failed. Replaces HM9000's fetcher_timeout_in_heartbeats.",
    }),
    network_timeout: Duration({
      default: '10s',
      description:
        "Connect timeout, and the deadline of each request (answer and body). Replaces HM9000's fetcher_network_timeout_in_seconds.",
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
          "PEM file of CA certificates trusted for the CC in addition to the system CAs; relative to this config file. HM9000 had no such key (it only had skip_cert_verify).",
      }),
    ),
    credentials: Type.Unsafe<CredentialMode>({
      type: 'string',
      enum: [...CREDENTIAL_MODES],
      default: 'static',
      description:
        "static: user / password above (HM9000 since 2013-10). nats: ask the CC for them on credentials_subject before each fetch (HM9000 until 2013-10).",
    }),
    credentials_subject: Type.String({
      minLength: 1,
      default: 'cloudcontroller.bulk.credentials.default',
      description: "NATS subject the CC answers with {\"user\",\"password\"} (credentials: nats). Replaces HM9000's cc_auth_message_bus_subject (2013).",
    }),
    credentials_timeout: Duration({
      default: '5s',
      description:
        "How long to wait for the credentials reply (credentials: nats); no reply skips that fetch. Not an HM9000 key; the Ruby HM's intervals.bulk_credentials_timeout (5 s).",
    }),
  },
  { additionalProperties: false },
);

export type BulkApiOptions = Static<typeof BulkApiOptionsSchema>;
