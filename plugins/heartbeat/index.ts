/**
 * The `heartbeat` source: agents' heartbeats from NATS (and optionally HTTPS) into the store,
 * reproducing HM9000's actual-state listener — batching, write-only-on-state-change, agent
 * presence TTL and the actual-freshness bump rules.
 */
import { Type } from '@sinclair/typebox';
import { definePlugin, Duration } from '../../src/sdk/index.js';
import { heartbeatProblems, heartbeatSummary } from './describe.js';
import { heartbeatDoctor } from './doctor.js';
import { HeartbeatSource } from './heartbeat.js';

export { HeartbeatSource, roundStateTimestamp, heartbeatMetrics, HTTPS_SUBJECT_LABEL, DropletUpdatedMessage, type HeartbeatStageOptions } from './heartbeat.js';
export { readEntries, type EntriesResult } from './entries.js';

export const HeartbeatOptionsSchema = Type.Object(
  {
    subject: Type.String({
      minLength: 1,
      default: 'dea.heartbeat',
      description: 'NATS subject the agents heartbeat on, subscribed without a queue group (HM9000: dea.heartbeat).',
    }),
    advertise_subject: Type.String({
      default: 'dea.advertise',
      description:
        'NATS subject of agent advertisements, which keep actual state fresh while no heartbeat arrived for freshness.actual_ttl, as in a foundation with no instances (HM9000 B: dea.advertise); advertise_payload says which do; "" switches it off.',
    }),
    advertise_payload: Type.Optional(
      Type.Union([Type.Literal('checked'), Type.Literal('ignored')], {
        default: 'checked',
        description:
          'checked: an advertise is decoded and validated (bad ones are dropped and counted), and keeps actual state fresh only while it names no instance (app_id_to_count empty) and no advertise named any within freshness.actual_ttl; one naming instances while no heartbeat arrives shows heartbeats being lost and revokes the freshness advertises made. ignored: any message bumps, payload unread, as HM9000 did.',
      }),
    ),
    sync_interval: Duration({
      default: '1000ms',
      description: 'How often the received heartbeats are saved to the store in one batch (HM9000 listener_heartbeat_sync_interval_in_milliseconds).',
    }),
    heartbeat_ttl: Duration({
      default: '3hb',
      description: "An agent's presence TTL: its instances disappear this long after its last saved heartbeat (HM9000 heartbeat_ttl_in_heartbeats).",
    }),
    save_deadline: Type.Optional(
      Duration({
        description:
          'A batch save that takes this long or longer does not bump actual freshness; default sync_interval (HM9000 B used listener_heartbeat_sync_interval_in_milliseconds, H heartbeat_period_in_seconds).',
      }),
    ),
    cc_partition: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          'This daemon\'s cc_partition, kept by cc_partition_filter (default "default"); the top-level cc_partition sets it for every stage (the older Ruby HM\'s top-level cc_partition).',
      }),
    ),
    cc_partition_filter: Type.Boolean({
      default: false,
      description:
        'Keep only instances — and exits and updates — of cc_partition (a message without one never matches) and count the others as dropped (reason other_cc_partition); while such messages arrive, /v1/status names both partitions. Off keeps all, as HM9000 and the Ruby HM after mid-2013 did (the older Ruby HM filtered on its cc_partition).',
    }),
    // Optional in the type, so a stage built in code need not name them; validation fills the default.
    exited_subject: Type.Optional(
      Type.String({
        minLength: 1,
        default: 'droplet.exited',
        description: "NATS subject of instance exits, subscribed only when an event policy handles exits (the Ruby HM's droplet.exited).",
      }),
    ),
    updated_subject: Type.Optional(
      Type.String({
        minLength: 1,
        default: 'droplet.updated',
        description: "NATS subject of app updates, subscribed only when an event policy handles them (the Ruby HM's droplet.updated).",
      }),
    ),
    http_listener: Type.Optional(
      Type.Object(
        {
          listen: Type.String({
            default: '0.0.0.0:5335',
            description: 'host:port of the HTTPS heartbeat endpoint POST /dea/heartbeat (HM9000 H http_heartbeat_server_address and http_heartbeat_port).',
          }),
          cert_file: Type.String({
            minLength: 1,
            description: "The server certificate, PEM; relative to the config file's directory (HM9000 H ssl.cert_file).",
          }),
          key_file: Type.String({ minLength: 1, description: "The server certificate's private key, PEM (HM9000 H ssl.key_file)." }),
          ca_file: Type.String({
            minLength: 1,
            description: 'CA certificates, PEM, that client certificates must be signed by; a client without one is refused (HM9000 H ssl.ca_file).',
          }),
        },
        {
          additionalProperties: false,
          description: 'Also accept heartbeats over HTTPS with required client certificates (HM9000 H); the body is the NATS heartbeat JSON.',
        },
      ),
    ),
  },
  { additionalProperties: false },
);

export default definePlugin({
  name: 'heartbeat',
  kind: 'source',
  family: 'common',
  description:
    "Saves agents' heartbeats (NATS dea.heartbeat, optionally HTTPS) to the store as HM9000's listener did: batched every sync_interval, only state changes written, agent presence with heartbeat_ttl; a timely save bumps actual freshness, a failed one revokes it. For event policies it raises each heartbeat entry, and droplet.exited / droplet.updated, as events.",
  optionsSchema: HeartbeatOptionsSchema,
  create: (options, ctx) => new HeartbeatSource(options, ctx),
  summary: heartbeatSummary,
  problems: heartbeatProblems,
  doctor: heartbeatDoctor,
});
