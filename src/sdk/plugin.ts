/**
 * The plugin model. A plugin module's default export is a PluginDefinition: its name, kind and
 * family, the TypeBox schema of its options (one definition gives both the TypeScript type and the
 * JSON Schema that ajv validates and `npm run build` writes to schemas/), and a factory. Built-in
 * plugins and users' plugins are loaded the same way; the engine knows none by name.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Bus } from './bus.js';
import type { Clock } from './clock.js';
import type { DoctorFindings, DoctorInput } from './doctor.js';
import type { EventHub } from './events.js';
import type { FreshnessReports } from './freshness.js';
import type { Problem, ProblemInput, StoreFailure } from './problems.js';
import type { Stage } from './stage.js';
import type { Store } from './store.js';

/**
 * store: keeps the state; source: feeds it (heartbeats, desired state); policy: decides starts and
 * stops; sink: sends them; reporter: answers requests and keeps statistics from the events, deciding nothing.
 */
export type PluginKind = 'source' | 'store' | 'policy' | 'sink' | 'reporter';
export const PLUGIN_KINDS: readonly PluginKind[] = ['store', 'source', 'policy', 'sink', 'reporter'];

/**
 * Which health manager's behaviour a plugin reproduces: HM9000's analyze → dispatch cycle, the Ruby
 * Health Manager's event path, or `common` (both presets use it, e.g. the stores).
 */
export type PluginFamily = 'hm9000' | 'ruby-hm' | 'common';
export const PLUGIN_FAMILIES: readonly PluginFamily[] = ['hm9000', 'ruby-hm', 'common'];

export interface StageContext {
  /** The stage id (the key under sources/policies/sinks, or "store"). */
  id: string;
  kind: PluginKind;
  foundation: string;
  /** Child logger with component = stage id and foundation on every line. */
  logger: Logger;
  clock: Clock;
  /** The heartbeat interval in ms: the "hb" unit durations were converted with. */
  heartbeatMs: number;
  /** The directory of the config file, for options that name files. */
  configDir: string;
  metrics: Registry;
  /** The NATS connection, shared by all stages. */
  bus: Bus;
  /** The state store; for the store stage itself this is not available. */
  store: Store;
  /** Where sources report freshness reasons and what they last saw. */
  freshness: FreshnessReports;
  /**
   * Whether this daemon leads (always, with one daemon). Only the leader writes what sources
   * receive and runs the cycle; standbys keep the store's cache warm and serve the API.
   */
  isLeader(): boolean;
  /** Events for event-triggered policies, and the per-app records they keep (events.ts). */
  events: EventHub;
}

export interface PluginDefinition<S extends TSchema = TSchema, T extends Stage = Stage> {
  name: string;
  kind: PluginKind;
  /** Which family it belongs to (plugins/README.md lists them so); a user's plugin may leave it out (common). */
  family?: PluginFamily;
  description?: string;
  optionsSchema: S;
  create(options: Static<S>, ctx: StageContext): T | Promise<T>;

  // How the plugin describes itself to the operator tools; the core knows no plugin by name.

  /** The start-up log line's text after "<id>: ": what a stage does, with its main options (secrets left out). */
  summary?(options: Static<S>): string;
  /** The problems a stage of this plugin implies, from what the engine knows (shown in /v1/status and logged). */
  problems?(input: ProblemInput<Static<S>>): Problem[];
  /** A store plugin: a failure of the store in its own words (e.g. etcd's ETCD_UNREACHABLE); undefined to leave it generic. */
  storeProblem?(input: StoreFailure<Static<S>>): Problem | undefined;
  /** What `hmgate doctor` checks for a stage of this plugin against its real dependency. */
  doctor?(input: DoctorInput<Static<S>>): Promise<DoctorFindings>;
  /** A sink: the NATS subjects it publishes starts and stops on (the doctor and /v1/status ask who subscribes to them). */
  publishes?(options: Static<S>): string[];
}

/** Identity helper that gives a plugin's factory the typed options of its schema. */
export function definePlugin<S extends TSchema, T extends Stage>(def: PluginDefinition<S, T>): PluginDefinition<S, T> {
  return def;
}

export function isPluginDefinition(value: unknown): value is PluginDefinition {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.name === 'string' &&
    typeof v.kind === 'string' &&
    (PLUGIN_KINDS as readonly string[]).includes(v.kind) &&
    (v.family === undefined || (PLUGIN_FAMILIES as readonly unknown[]).includes(v.family)) &&
    typeof v.optionsSchema === 'object' &&
    v.optionsSchema !== null &&
    typeof v.create === 'function'
  );
}
