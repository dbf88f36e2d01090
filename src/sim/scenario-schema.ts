/**
 * The policy-test scenario format (`hmgate test`), defined once with TypeBox: a foundation (desired
 * apps, agents and their instances), events over virtual time, and the expected starts and stops.
 */
import { Type, type Static } from '@sinclair/typebox';
import { Duration } from '../config/schema.js';

const SimInstance = Type.Object(
  {
    app: Type.String({ minLength: 1 }),
    version: Type.String({ minLength: 1, default: 'v1' }),
    index: Type.Integer({ minimum: 0 }),
    state: Type.String({ default: 'RUNNING', description: 'STARTING, RUNNING, CRASHED or EVACUATING.' }),
    instance: Type.Optional(Type.String({ minLength: 1, description: 'Instance guid; generated from agent, app and index when absent.' })),
    cc_partition: Type.Optional(Type.String()),
  },
  { additionalProperties: false },
);

const SimApp = Type.Object(
  {
    app: Type.String({ minLength: 1 }),
    version: Type.String({ minLength: 1, default: 'v1' }),
    instances: Type.Integer({ minimum: 0 }),
    state: Type.String({ default: 'STARTED' }),
    package_state: Type.String({ default: 'STAGED' }),
    updated_at: Type.Optional(Type.String({ description: 'CC\'s updated_at, e.g. "2013-07-31 22:00:00 +0000" (the Ruby HM\'s last_updated).' })),
  },
  { additionalProperties: false },
);

const Event = Type.Object(
  {
    at: Duration({ description: 'Virtual time since the start of the scenario.' }),
    agent: Type.Optional(Type.String({ description: 'The agent the run/set/remove/silence/resume items act on.' })),
    run: Type.Optional(SimInstance),
    set: Type.Optional(
      Type.Object(
        { app: Type.String(), version: Type.String({ default: 'v1' }), index: Type.Integer(), state: Type.String() },
        { additionalProperties: false },
      ),
    ),
    remove: Type.Optional(Type.Object({ app: Type.String(), version: Type.String({ default: 'v1' }), index: Type.Integer() }, { additionalProperties: false })),
    silence: Type.Optional(Type.Boolean({ description: 'true: the agent stops heartbeating; false: it resumes.' })),
    exited: Type.Optional(
      Type.Object(
        {
          app: Type.String(),
          version: Type.String({ default: 'v1' }),
          index: Type.Integer(),
          reason: Type.String(),
          instance: Type.Optional(Type.String({ description: 'The exiting instance guid; by default the one running at that index, if any.' })),
        },
        { additionalProperties: false },
      ),
    ),
    updated: Type.Optional(Type.String({ description: 'Publish droplet.updated for this app.' })),
    desired: Type.Optional(Type.Array(SimApp, { description: 'Replace the apps the Cloud Controller reports.' })),
    cc: Type.Optional(Type.Unsafe<'up' | 'down'>({ type: 'string', enum: ['up', 'down'], description: 'down: desired-state fetches fail.' })),
  },
  { additionalProperties: false },
);

const OrderMatch = {
  app: Type.String(),
  version: Type.Optional(Type.String()),
  index: Type.Optional(Type.Integer()),
  reason: Type.Optional(Type.String()),
  at: Type.Optional(Duration({ description: 'Sent exactly at this virtual time.' })),
  after: Type.Optional(Duration({ description: 'Sent at or after this time.' })),
  before: Type.Optional(Duration({ description: 'Sent at or before this time.' })),
  flapping: Type.Optional(Type.Boolean({ description: 'Requests of event policies: a delayed restart of a flapping instance.' })),
};

const Expectation = Type.Object(
  {
    start: Type.Optional(Type.Object(OrderMatch, { additionalProperties: false })),
    stop: Type.Optional(
      Type.Object({ ...OrderMatch, instance: Type.Optional(Type.String()), is_duplicate: Type.Optional(Type.Boolean()) }, { additionalProperties: false }),
    ),
    no_message_until: Type.Optional(Duration()),
    starts: Type.Optional(Type.Integer({ minimum: 0, description: 'The number of starts sent in all.' })),
    stops: Type.Optional(Type.Integer({ minimum: 0, description: 'The number of stops sent in all.' })),
  },
  { additionalProperties: false },
);

export const ScenarioSchema = Type.Object(
  {
    name: Type.String({ minLength: 1 }),
    config: Type.String({ minLength: 1, description: 'The config under test: a path relative to this file, or a preset name.' }),
    overrides: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'Merged over the config (maps merge, lists replace).' })),
    obey: Type.Optional(
      Type.String({
        description:
          'Agents obey the orders: a stop removes the instance, a start replaces a crashed instance at the index and runs it RUNNING on this agent (`*`: round-robin over the live agents).',
      }),
    ),
    desired: Type.Array(SimApp, { default: [] }),
    agents: Type.Record(Type.String(), Type.Array(SimInstance), { default: {} }),
    events: Type.Array(Event, { default: [] }),
    run_for: Duration({ default: '5m' }),
    random: Type.Number({
      minimum: 0,
      exclusiveMaximum: 1,
      default: 0.5,
      description: 'What the random source returns (jitter such as delay_time_noise): 0.5 = no jitter.',
    }),
    expect: Type.Array(Expectation, { minItems: 1 }),
  },
  { additionalProperties: false },
);

export type Scenario = Static<typeof ScenarioSchema>;
export type ScenarioExpectation = Static<typeof Expectation>;
export type ScenarioEvent = Static<typeof Event>;
export type ScenarioInstance = Static<typeof SimInstance>;
export type ScenarioApp = Static<typeof SimApp>;
