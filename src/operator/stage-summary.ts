/**
 * One readable line per stage for the start-up log: what the stage does, with its main options —
 * `heartbeats: heartbeat on dea.heartbeat, sync 1s, presence TTL 30s`. A plugin describes its
 * stages itself (its definition's `summary`); any other plugin is described by its kind and its
 * plain options (secrets left out), the bus and the API by what they connect to.
 */
import { isSecretKey, maskUrl } from '../config/mask.js';
import type { PluginDefinition } from '../sdk/plugin.js';

export { shortDuration } from '../sdk/summary.js';

export interface SummaryInput {
  id: string;
  kind: string;
  /** The plugin's own name. */
  plugin: string;
  /** The plugin, when the stage has one (the bus and the API have none). */
  definition?: PluginDefinition;
  options: Record<string, unknown>;
}

function generic(s: SummaryInput): string {
  const opts = Object.entries(s.options)
    .filter(([k, v]) => !isSecretKey(k) && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'))
    .slice(0, 4)
    .map(([k, v]) => `${k} ${typeof v === 'string' ? maskUrl(v) : String(v)}`);
  return `${s.plugin} (${s.kind})${opts.length ? `, ${opts.join(', ')}` : ''}`;
}

function describe(s: SummaryInput): string {
  const o = s.options;
  if (typeof s.definition?.summary === 'function') return s.definition.summary(o);
  // The engine's own stages, which have no plugin: the bus and the API.
  if (!s.definition) {
    switch (s.plugin) {
      case 'nats': {
        const servers = Array.isArray(o.servers) ? o.servers.map((e) => maskUrl(String(e))).join(', ') : 'its servers';
        return `NATS at ${servers}`;
      }
      case 'in-process':
        return 'in-process bus (no NATS)';
      case 'hono':
        return `HTTP API on ${String(o.listen)}`;
    }
  }
  return generic(s);
}

export function stageSummary(s: SummaryInput): string {
  const text = describe(s);
  // A plugin's summary that starts with its name ("missing: starts …") names a stage of that id already.
  return text.startsWith(`${s.id}: `) ? text : `${s.id}: ${text}`;
}
