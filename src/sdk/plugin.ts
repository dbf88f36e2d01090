/**
 * The plugin model. A plugin module's default export is a PluginDefinition: its name, kind, the
 * TypeBox schema of its options (one definition gives both the TypeScript type and the JSON Schema
 * that ajv validates and `npm run build` writes to schemas/), and a factory. Built-in plugins and
 * users' plugins are loaded the same way; the engine knows none by name.
 */
import type { Static, TSchema } from '@sinclair/typebox';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { Clock } from './clock.js';
import type { Store } from './store.js';
import type { Bus } from './bus.js';
import type { FreshnessBoard } from '../pipeline/freshness/board.js';
import type { EventHub } from './events.js';

export type PluginKind = 'source' | 'store' | 'policy' | 'sink';
export const PLUGIN_KINDS: readonly PluginKind[] = ['store', 'source', 'policy', 'sink'];

export interface StageHealth {
  healthy: boolean;
  last_error: string | null;
}

/** What every stage may implement; each lifecycle method is optional. */
export interface Stage {
  start?(): Promise<void> | void;
  stop?(): Promise<void> | void;
  /** Health shown in /v1/status; a stage without it is healthy once started. */
  health?(): StageHealth;
}

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
  freshness: FreshnessBoard;
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
  description?: string;
  optionsSchema: S;
  create(options: Static<S>, ctx: StageContext): T | Promise<T>;
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
    typeof v.optionsSchema === 'object' &&
    v.optionsSchema !== null &&
    typeof v.create === 'function'
  );
}
