/** Options of the `etcd` store. Durations arrive in milliseconds; file paths are relative to the config file. */
import { Type, type Static } from '@sinclair/typebox';
import { Duration } from '../../src/sdk/index.js';

export const EtcdStoreOptionsSchema = Type.Object(
  {
    endpoints: Type.Array(Type.String({ pattern: '^https?://[^\\s]+$' }), {
      minItems: 1,
      default: ['http://127.0.0.1:2379'],
      description: 'etcd client URLs (http:// or https://); every daemon sharing state lists the same cluster.',
    }),
    prefix: Type.String({
      minLength: 1,
      pattern: '^[^\\s]*[^\\s/]$',
      default: '/hmgate',
      description: 'Key prefix of all state (agents/, desired/, crashes/, starts/, stops/, fresh/ below it); daemons that share state use the same prefix.',
    }),
    ca_file: Type.Optional(
      Type.String({ minLength: 1, description: "PEM file of the CA certificates that sign etcd's server certificate; relative to this config file." }),
    ),
    cert_file: Type.Optional(
      Type.String({ minLength: 1, description: 'PEM client certificate for etcd client-cert auth (with key_file); relative to this config file.' }),
    ),
    key_file: Type.Optional(Type.String({ minLength: 1, description: 'PEM private key of cert_file; relative to this config file.' })),
    username: Type.Optional(Type.String({ minLength: 1, description: 'etcd user (etcd password auth, with password).' })),
    password: Type.Optional(Type.String({ description: 'Password of the etcd user.' })),
    dial_timeout: Duration({
      default: '5s',
      hb: false,
      description: 'How long to wait to connect to etcd, and the deadline of every etcd request; a store call that takes longer fails naming etcd.',
    }),
    max_request_bytes: Type.Integer({
      minimum: 65_536,
      default: 1_572_864,
      description:
        "The largest request etcd accepts: etcd's --max-request-bytes (default 1.5 MiB). An agent whose record is larger is not sent (etcd would refuse it); it is logged, counted in hmgate_etcd_refused_records_total and its heartbeats are not saved. Raise both together.",
    }),
  },
  { additionalProperties: false },
);

export type EtcdStoreOptions = Static<typeof EtcdStoreOptionsSchema>;
