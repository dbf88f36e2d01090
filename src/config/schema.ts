/**
 * The whole-config schema (README.md#configuration), defined once with TypeBox: it gives the TypeScript type of
 * a loaded config and the JSON Schema that ajv validates and `npm run build` writes to
 * schemas/config.schema.json. Stage entries carry `plugin:` plus the plugin's own options flat
 * beside it; those options are validated against each plugin's schema in a second step.
 */
import { Type, type Static, type TSchema, type TUnsafe } from '@sinclair/typebox';

/**
 * A duration option. Written as "250ms", "10s", "5m", "1h", bare seconds, or "3hb"; validated and
 * converted to milliseconds by the `x-duration` keyword, so the loaded type is a number.
 */
export function Duration(opts: { description?: string; default?: string | number; hb?: boolean } = {}): TUnsafe<number> {
  return Type.Unsafe<number>({
    type: ['string', 'number'],
    'x-duration': opts.hb === false ? 'no-hb' : true,
    description: opts.description ?? 'A duration: 250ms, 10s, 5m, 1h, bare seconds, or Nhb (heartbeat intervals).',
    ...(opts.default !== undefined ? { default: opts.default } : {}),
  });
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
const LogLevel = Type.Unsafe<LogLevel>({ type: 'string', enum: [...LOG_LEVELS] });

/** A stage: `plugin:` names a built-in plugin, a path relative to the config file, or a package. */
export const StageEntry = Type.Object(
  {
    plugin: Type.String({ minLength: 1, description: 'Built-in plugin name, path relative to this file, or installed package name.' }),
    enabled: Type.Optional(Type.Boolean({ description: 'false leaves the stage out (e.g. to switch off a preset stage).' })),
  },
  { additionalProperties: true },
);

const StageMap = (what: string): TSchema =>
  Type.Record(Type.String({ pattern: '^[A-Za-z][A-Za-z0-9_-]*$' }), StageEntry, {
    default: {},
    description: `${what}, keyed by stage id. Run in the order written.`,
  });

export const ConfigSchema = Type.Object(
  {
    extends: Type.Optional(
      Type.String({ description: 'A built-in preset name (a file in presets/, e.g. hm9000) or a path; this file is deep-merged over it.' }),
    ),
    foundation: Type.String({ minLength: 1, default: 'default', description: 'Name carried in every log line and metric.' }),
    heartbeat_interval: Duration({ default: '10s', hb: false, description: "The agents' heartbeat period; the unit of every `hb` duration." }),
    analyze_interval: Duration({ default: '1hb', description: 'How often the analyze → dispatch cycle runs.' }),
    time_resolution: Duration({
      default: '1ms',
      hb: false,
      description:
        'The step of time for every timestamp and comparison (send_on, sent_on, freshness). HM9000 kept whole seconds (the hm9000 preset sets 1s); a step coarser than heartbeat_interval is reduced to it.',
    }),
    freshness: Type.Object(
      {
        gate: Type.Boolean({ default: true, description: 'Send nothing unless actual and desired state are fresh.' }),
        actual_ttl: Duration({ default: '3hb', description: 'TTL of the actual freshness marker and the minimum age before actual state counts as fresh.' }),
        desired_ttl: Duration({
          default: '12hb',
          description:
            "TTL of the desired freshness marker. Not set: twice the longest poll_interval of the sources, so it lasts from one fetch past the next (HM9000's 12hb is twice its 6hb poll); 12hb without one.",
        }),
        max_ingest_lag: Duration({
          default: '1hb',
          description:
            "Actual state is not fresh (INGEST_BEHIND) while heartbeats wait longer than this to be read or saved, or arrive so much slower than the agents send them that they fall this far behind within actual_ttl; a wait counts only past 1s too (shorter ones may be the daemon's own pauses). 0 switches the check off (as the originals had none).",
        }),
        collapse: Type.Object(
          {
            share: Type.Number({
              minimum: 0,
              maximum: 1,
              default: 0.55,
              description:
                'Actual state is not fresh (ACTUAL_COLLAPSE) when more than this share of the agents go silent within window; 1 switches the guard off.',
            }),
            min_agents: Type.Integer({
              minimum: 0,
              default: 50,
              description: 'Only foundations with more agents than this are guarded; smaller ones act on every lost agent as the originals did.',
            }),
            silent_after: Duration({ default: '2hb', description: 'An agent not heard for longer than this counts as silent.' }),
            window: Duration({ default: '3hb', description: 'Silences that begin within this span of each other count together.' }),
          },
          {
            additionalProperties: false,
            default: {},
            description:
              'The mass-disappearance guard: holds actions until the silent agents return or an operator confirms the loss (POST /v1/actual/confirm-loss, hmgate confirm-loss).',
          },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    log: Type.Object(
      {
        level: Type.Optional({ ...LogLevel, description: 'Log level of every component (default info).' }),
        levels: Type.Record(Type.String(), LogLevel, { default: {}, description: 'Per-component level, e.g. { desired: debug }.' }),
        format: Type.Unsafe<'auto' | 'json' | 'pretty'>({
          type: 'string',
          enum: ['auto', 'json', 'pretty'],
          default: 'auto',
          description:
            'json: one JSON object a line; pretty: readable lines (pino-pretty) with the same fields, secrets masked alike; auto: pretty when stdout is a terminal, json otherwise.',
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    bus: Type.Object(
      {
        servers: Type.Array(Type.String({ pattern: '^(nats|tls)://' }), {
          minItems: 1,
          default: ['nats://127.0.0.1:4222'],
          description:
            'NATS server URLs. Credentials may be written in them (nats://user:password@host:4222, or nats://token@host:4222; percent-encode @ : / ? # %): the same in every URL, agreeing with bus.user / bus.password / bus.token, and masked wherever a URL is shown.',
        }),
        user: Type.Optional(Type.String({ description: 'NATS user.' })),
        password: Type.Optional(Type.String({ description: 'NATS password.' })),
        token: Type.Optional(Type.String({ description: 'NATS token, instead of user and password.' })),
        name: Type.String({ default: 'hmgate', description: 'Connection name shown by the NATS server.' }),
        connect_timeout: Duration({
          default: '2s',
          hb: false,
          description: 'How long start-up waits for the first connection before going on and retrying in the background.',
        }),
        monitor_url: Type.Optional(Type.String({ description: "The NATS server's monitoring endpoint (http://127.0.0.1:8222), for diagnostics." })),
      },
      { additionalProperties: false, default: {} },
    ),
    leader: Type.Object(
      {
        ttl: Duration({
          default: '10s',
          hb: false,
          description:
            "With a shared store (etcd): the leader's lease; a leader that vanishes without resigning is replaced within it (HM9000's locks lived 10 s).",
        }),
        resign_after: Duration({
          default: '2hb',
          description:
            "With a shared store (etcd): a leader that cannot do the leader's work itself (NATS not connected, heartbeat saves failing) for longer than this resigns, so a standby that can takes over; a daemon in that state does not campaign.",
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    dispatch: Type.Object(
      {
        mode: Type.Unsafe<'live' | 'shadow'>({
          type: 'string',
          enum: ['live', 'shadow'],
          default: 'live',
          description: 'shadow runs everything but sends nothing, logging and counting what it would have sent.',
        }),
        message_limit: Type.Integer({
          minimum: 0,
          default: 60,
          description: 'Most starts sent per cycle; stops are not limited (HM9000 sender_message_limit).',
        }),
        queue: Type.Object(
          {
            interval: Duration({ default: '1s', hb: false, description: "How often queued starts of event policies are sent (the Ruby HM's request_queue)." }),
            batch_size: Type.Integer({
              minimum: 1,
              default: 40,
              description: 'Most queued starts sent per interval, highest priority first (queue_batch_size).',
            }),
            dedupe: Type.Unsafe<'payload' | 'op-version-indices'>({
              type: 'string',
              enum: ['payload', 'op-version-indices'],
              default: 'payload',
              description:
                'A start is not queued while an equal one is: payload = the whole request but last_updated (running and flapping included); op-version-indices = app, op, version and indices only (the older Ruby HM).',
            }),
          },
          {
            additionalProperties: false,
            default: {},
            description: 'The priority queue of starts decided by event policies (Ruby HM); stops and delayed restarts are sent at once.',
          },
        ),
        shadow: Type.Object(
          {
            window: Duration({
              default: '10s',
              hb: false,
              description:
                "In shadow mode: how long a request waits for its equal from the other health manager before it counts as one-sided (the older Ruby HM's max_shadowing_delay).",
            }),
            subjects: Type.Optional(
              Type.Array(Type.String({ minLength: 1 }), {
                description: "The other health manager's request subjects to listen to; by default the subjects the sinks publish to.",
              }),
            ),
          },
          {
            additionalProperties: false,
            default: {},
            description: 'Shadow mode compares what hmgate would send with what the running health manager sends (GET /v1/shadow).',
          },
        ),
      },
      { additionalProperties: false, default: {} },
    ),
    clock: Type.Unsafe<'real' | 'manual'>({
      type: 'string',
      enum: ['real', 'manual'],
      default: 'real',
      description: 'manual: time stands still and moves only when asked over NATS (healthmanager.advance_time {"seconds":N}), for black-box scenario tests.',
    }),
    cc_partition: Type.Optional(
      Type.String({
        minLength: 1,
        description:
          "The Cloud Controller's partition (Ruby HM presets): the default of every stage's cc_partition option — the credentials subject, the older request subject and heartbeat filter. A CC v2 is on ng.",
      }),
    ),
    intervals: Type.Optional(
      Type.Object(
        {
          droplet_lost: Type.Optional(
            Duration({
              hb: false,
              description:
                "The Ruby HM's intervals.droplet_lost: the value of every stage option droplet_lost (missing and extra instances, exit restarts) and heartbeat_ttl (the heartbeat source).",
            }),
          ),
          flapping_timeout: Type.Optional(
            Duration({
              hb: false,
              description: "The Ruby HM's intervals.flapping_timeout: the value of every stage option flapping_timeout (crash-count reset, crash record age).",
            }),
          ),
        },
        {
          additionalProperties: false,
          description:
            "The Ruby HM's settings that several stages use, each set once here (Ruby HM presets): a stage option of that name takes this value, and a stage that writes another is an error.",
        },
      ),
    ),
    events: Type.Object(
      {
        analysis_slice: Type.Integer({
          minimum: 0,
          default: 0,
          description:
            "Event policies: app records analysed per analyze_interval tick, in insertion order (0 = all). The Ruby HM's slicing (200; 20 in its older design) — its behaviour, not a limit of hmgate.",
        }),
        run_loop: Duration({
          default: 0,
          hb: false,
          description: "Policy timers (delayed restarts) are armed at the next run-loop tick, as the Ruby HM's scheduler did (2s); 0 arms them at once.",
        }),
      },
      { additionalProperties: false, default: {} },
    ),
    store: Type.Object(
      {
        plugin: Type.String({ minLength: 1, default: 'memory', description: 'memory (one daemon) or etcd (shared state, several daemons).' }),
      },
      { additionalProperties: true, default: {} },
    ),
    sources: StageMap('Sources (heartbeats, desired state, …)'),
    policies: StageMap('Policies applied per app'),
    reporters: StageMap('Reporters: answer requests and keep statistics from the events; they decide nothing'),
    sinks: StageMap('Sinks (notifiers)'),
    api: Type.Object(
      {
        listen: Type.String({ default: '127.0.0.1:5155', description: 'host:port; [::1]:5155 for IPv6.' }),
        user: Type.String({ default: 'magnet', description: 'Basic-auth user.' }),
        password: Type.String({ minLength: 1, description: 'Basic-auth password for every route but /healthz and /metrics.' }),
        enabled: Type.Boolean({ default: true, description: 'false runs without the HTTP API.' }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

export type Config = Static<typeof ConfigSchema>;
export type StageSection = 'store' | 'sources' | 'policies' | 'reporters' | 'sinks';
