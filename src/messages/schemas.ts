/**
 * Inbound message schemas (TypeBox: one definition for the TypeScript type and the JSON Schema that
 * `npm run build` writes to schemas/messages/). Fields a sender adds that hmgate does not read are
 * allowed and ignored, as the originals ignored them; what hmgate reads must have the right type.
 */
import { Type, type Static } from '@sinclair/typebox';

export const InstanceHeartbeatMessage = Type.Object(
  {
    droplet: Type.String({ minLength: 1, description: 'App guid.' }),
    version: Type.String({ description: 'App version guid.' }),
    instance: Type.String({ minLength: 1, description: 'Instance guid.' }),
    index: Type.Integer({ minimum: 0 }),
    state: Type.String({ description: 'STARTING, RUNNING, CRASHED or EVACUATING; any other is kept but matches no rule.' }),
    state_timestamp: Type.Number(),
    cc_partition: Type.Optional(Type.String()),
  },
  { additionalProperties: true },
);

export const HeartbeatMessage = Type.Object(
  {
    dea: Type.String({ minLength: 1, description: 'The agent (DEA) guid.' }),
    droplets: Type.Array(InstanceHeartbeatMessage),
  },
  { additionalProperties: true, description: 'dea.heartbeat (NATS) and POST /dea/heartbeat (HTTPS).' },
);
export type HeartbeatMessage = Static<typeof HeartbeatMessage>;

export const DropletExitedMessage = Type.Object(
  {
    droplet: Type.String({ minLength: 1 }),
    version: Type.String(),
    instance: Type.Optional(Type.String()),
    index: Type.Integer({ minimum: 0 }),
    reason: Type.String({ description: 'STOPPED, CRASHED, DEA_SHUTDOWN or DEA_EVACUATION.' }),
    exit_status: Type.Optional(Type.Integer()),
    exit_description: Type.Optional(Type.String()),
    crash_timestamp: Type.Optional(Type.Integer()),
    cc_partition: Type.Optional(Type.String()),
  },
  { additionalProperties: true, description: 'droplet.exited (NATS).' },
);
export type DropletExitedMessage = Static<typeof DropletExitedMessage>;

/** Every inbound message schema, by the file name it is written under in schemas/messages/. */
export const MESSAGE_SCHEMAS = {
  heartbeat: HeartbeatMessage,
  'droplet-exited': DropletExitedMessage,
} as const;
