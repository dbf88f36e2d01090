/**
 * Inbound message schemas (TypeBox: one definition for the TypeScript type and the JSON Schema that
 * `npm run build` writes to schemas/messages/). Fields a sender adds that hmgate does not read are
 * allowed and ignored, as the originals ignored them; what hmgate reads must have the right type.
 *
 * Every string and list hmgate reads has a bound (MESSAGE_LIMITS): what passes is logged, kept in
 * memory and written to the store as keys, so one agent must not be able to make any of that as
 * large as a whole message. A value over its bound is dropped with reason `too_long` (a string) or
 * `too_many` (a list or map), never cut short: a shortened guid would name another instance.
 * Fields hmgate does not read are bounded only by the message size: they are never kept.
 */
import { Type, type Static } from '@sinclair/typebox';

/**
 * The bounds, generous for real foundations: Cloud Controller guids are 36 characters, DEA instance
 * ids 32 hex digits, a DEA's id is "<index>-<32 hex digits>", and a DEA ran at most a few hundred
 * instances. Counted in characters (Unicode code points), as JSON Schema's maxLength counts.
 */
export const MESSAGE_LIMITS = {
  /** `dea` of a heartbeat, `id` of an advertise. */
  agentId: 128,
  /** App guid (`droplet`), app version, instance guid; also the app guids of app_id_to_count. */
  guid: 128,
  cc_partition: 64,
  /** Instance state (the longest known, EVACUATING, has 10) and exit reason (DEA_EVACUATION, 14). */
  state: 32,
  /** Instance entries in one heartbeat, and apps in one advertise. */
  instancesPerAgent: 2_000,
  /** An exit's free-text description. */
  exitDescription: 1_024,
  /** Stack names of an advertise, and how many. */
  stack: 64,
  stacks: 32,
  /** An advertise's placement_properties.zone. */
  zone: 128,
} as const;

const L = MESSAGE_LIMITS;

export const InstanceHeartbeatMessage = Type.Object(
  {
    droplet: Type.String({ minLength: 1, maxLength: L.guid, description: 'App guid.' }),
    version: Type.String({ maxLength: L.guid, description: 'App version guid.' }),
    instance: Type.String({ minLength: 1, maxLength: L.guid, description: 'Instance guid.' }),
    index: Type.Integer({ minimum: 0 }),
    state: Type.String({ maxLength: L.state, description: 'STARTING, RUNNING, CRASHED or EVACUATING; any other is kept but matches no rule.' }),
    state_timestamp: Type.Number(),
    cc_partition: Type.Optional(Type.String({ maxLength: L.cc_partition })),
  },
  { additionalProperties: true },
);

export const HeartbeatMessage = Type.Object(
  {
    dea: Type.String({ minLength: 1, maxLength: L.agentId, description: 'The agent (DEA) guid.' }),
    droplets: Type.Array(InstanceHeartbeatMessage, { maxItems: L.instancesPerAgent }),
  },
  { additionalProperties: true, description: 'dea.heartbeat (NATS) and POST /dea/heartbeat (HTTPS).' },
);
export type HeartbeatMessage = Static<typeof HeartbeatMessage>;

export const DropletExitedMessage = Type.Object(
  {
    droplet: Type.String({ minLength: 1, maxLength: L.guid }),
    version: Type.String({ maxLength: L.guid }),
    instance: Type.Optional(Type.String({ maxLength: L.guid })),
    index: Type.Integer({ minimum: 0 }),
    reason: Type.String({ maxLength: L.state, description: 'STOPPED, CRASHED, DEA_SHUTDOWN or DEA_EVACUATION.' }),
    exit_status: Type.Optional(Type.Integer()),
    exit_description: Type.Optional(Type.String({ maxLength: L.exitDescription })),
    crash_timestamp: Type.Optional(Type.Integer()),
    cc_partition: Type.Optional(Type.String({ maxLength: L.cc_partition })),
  },
  { additionalProperties: true, description: 'droplet.exited (NATS).' },
);
export type DropletExitedMessage = Static<typeof DropletExitedMessage>;

/** droplet.updated: only the app guid is read (and cc_partition, when filtering). */
export const DropletUpdatedMessage = Type.Object(
  {
    droplet: Type.String({ minLength: 1, maxLength: L.guid }),
    cc_partition: Type.Optional(Type.String({ maxLength: L.cc_partition })),
  },
  { additionalProperties: true, description: 'droplet.updated (NATS).' },
);
export type DropletUpdatedMessage = Static<typeof DropletUpdatedMessage>;

/**
 * dea.advertise, as DEAs sent it. Only `id` and `app_id_to_count` are required: whether the agent
 * runs anything decides whether its advertise may keep actual state fresh, and an advertise that
 * does not say cannot show it.
 */
export const DeaAdvertiseMessage = Type.Object(
  {
    id: Type.String({ minLength: 1, maxLength: L.agentId, description: "The agent's id: its heartbeats' dea." }),
    app_id_to_count: Type.Record(Type.String(), Type.Integer({ minimum: 0 }), {
      maxProperties: L.instancesPerAgent,
      propertyNames: { maxLength: L.guid },
      description: 'Instances the agent runs, by app guid; {} for an agent that runs none.',
    }),
    stacks: Type.Optional(Type.Array(Type.String({ maxLength: L.stack }), { maxItems: L.stacks })),
    available_memory: Type.Optional(Type.Number()),
    available_disk: Type.Optional(Type.Number()),
    placement_properties: Type.Optional(Type.Object({ zone: Type.Optional(Type.String({ maxLength: L.zone })) }, { additionalProperties: true })),
  },
  { additionalProperties: true, description: 'dea.advertise (NATS).' },
);
export type DeaAdvertiseMessage = Static<typeof DeaAdvertiseMessage>;

/** Every inbound message schema, by the file name it is written under in schemas/messages/. */
export const MESSAGE_SCHEMAS = {
  heartbeat: HeartbeatMessage,
  'droplet-exited': DropletExitedMessage,
  'droplet-updated': DropletUpdatedMessage,
  'dea-advertise': DeaAdvertiseMessage,
} as const;
