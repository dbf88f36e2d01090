/**
 * One readable line per stage for the start-up log: what the stage does, with its main options —
 * `heartbeats: heartbeat on dea.heartbeat, sync 1s, presence TTL 30s`. Built-in plugins are
 * described by name; any other plugin by its kind and its plain options (secrets left out).
 */
import { isSecretKey, maskUrl } from '../config/mask.js';
import type { PluginDefinition } from '../sdk/plugin.js';

/** 250ms, 1s, 1.5s, 30s, 10m, 1h36m. */
export function shortDuration(ms: number): string {
  if (!Number.isFinite(ms)) return String(ms);
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(2))}s`;
  if (ms < 3_600_000) {
    const m = Math.floor(ms / 60_000);
    const s = Math.round((ms % 60_000) / 1000);
    return s ? `${m}m${s}s` : `${m}m`;
  }
  const h = Math.floor(ms / 3_600_000);
  const m = Math.round((ms % 3_600_000) / 60_000);
  return m ? `${h}h${m}m` : `${h}h`;
}

export interface SummaryInput {
  id: string;
  kind: string;
  /** The plugin's own name. */
  plugin: string;
  /** The plugin, when the stage has one (the bus and the API have none). */
  definition?: PluginDefinition;
  options: Record<string, unknown>;
}

const d = (v: unknown) => shortDuration(Number(v));

function generic(s: SummaryInput): string {
  const opts = Object.entries(s.options)
    .filter(([k, v]) => !isSecretKey(k) && (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'))
    .slice(0, 4)
    .map(([k, v]) => `${k} ${typeof v === 'string' ? maskUrl(v) : String(v)}`);
  return `${s.plugin} (${s.kind})${opts.length ? `, ${opts.join(', ')}` : ''}`;
}

function describe(s: SummaryInput): string {
  const o = s.options;
  switch (s.plugin) {
    case 'heartbeat': {
      const parts = [`heartbeat on ${String(o.subject)}`];
      if (o.advertise_subject) parts[0] += ` (and ${String(o.advertise_subject)})`;
      parts.push(`sync ${d(o.sync_interval)}`, `presence TTL ${d(o.heartbeat_ttl)}`);
      if (o.cc_partition !== undefined) parts.push(`cc_partition ${String(o.cc_partition)} only`);
      const http = o.http_listener as { listen?: string } | undefined;
      if (http) parts.push(`HTTPS heartbeats on ${String(http.listen)}`);
      return parts.join(', ');
    }
    case 'bulk-api': {
      const parts = [
        `bulk-api from ${maskUrl(/^https?:\/\//i.test(String(o.url)) ? String(o.url) : `http://${String(o.url)}`)}/bulk/apps`,
        `${String(o.batch_size)} apps a page`,
        `every ${d(o.poll_interval)}`,
        `timeout ${d(o.timeout)}`,
      ];
      if (o.credentials === 'nats')
        parts.push(`credentials from ${String(o.credentials_subject ?? `cloudcontroller.bulk.credentials.${String(o.cc_partition ?? 'default')}`)}`);
      if (o.skip_cert_verify === true) parts.push('certificate NOT verified');
      else if (o.ca_file !== undefined) parts.push(`CA ${String(o.ca_file)}`);
      return parts.join(', ');
    }
    case 'evacuator':
      return `evacuator on ${String(o.subject)}, keep-alive ${d(o.grace_period)}${o.verify === false ? ', starts UNVERIFIED' : ''}`;
    case 'app-state':
      return `app-state answers ${String(o.subject)} and ${String(o.bulk_subject)}${o.queue ? ` (queue ${String(o.queue)})` : ''}`;
    case 'missing':
      return `missing: starts missing instances after ${d(o.grace_period)}`;
    case 'crashes':
      return `crashes: restarts crashed instances, back-off after ${String(o.crashes_before_backoff)} crashes from ${d(o.starting_backoff)} up to ${d(o.maximum_backoff)}`;
    case 'evacuation':
      return `evacuation: moves instances off evacuating agents, keep-alive ${d(o.grace_period)}`;
    case 'extras':
      return `extras: stops undesired instances, keep-alive ${d(o.grace_period)}`;
    case 'duplicates':
      return `duplicates: stops duplicates one at a time from ${String(o.first_stop_after)} + k × ${d(o.grace_period)}`;
    case 'droplet-records':
      return `droplet-records: instance records from heartbeats and exits; duplicates by ${String(o.duplicates)}, stop list ${String(o.heartbeat_stop_list)}, exit mark-down ${String(o.exit_markdown)}`;
    case 'flapping': {
      const giveup = Number(o.giveup_crash_number);
      return `flapping: FLAPPING above ${String(o.flapping_death)} crashes, count reset after ${d(o.flapping_timeout)} (${String(o.crash_count_reset)}), restarts after ${d(o.min_restart_delay)} doubling up to ${d(o.max_restart_delay)} ±${d(o.delay_time_noise)}, ${giveup > 0 ? `gives up above ${giveup} crashes` : 'never gives up'}`;
    }
    case 'exit-restarts':
      return `exit-restarts: restarts instances of agents that shut down or evacuate, queue priority ${String(o.priority)}${o.verify === false ? ', UNVERIFIED' : ''}`;
    case 'missing-instances':
      return `missing-instances: queues starts of missing instances (${String(o.rule)}), grace and silence ${d(o.droplet_lost)}`;
    case 'extra-instances':
      return `extra-instances: stops instances beyond the desired ${o.slots === 'index' ? 'indices' : 'count'}, of other versions or of stopped apps`;
    case 'extra-app':
      return `extra-app: stops apps absent from the desired state for ${d(o.desired_state_lost)}`;
    case 'droplet-gc':
      return `droplet-gc: drops crash records after ${d(o.flapping_timeout)}, forgets apps absent for ${d(o.droplet_gc_grace_period)} every ${d(o.droplet_gc)}`;
    case 'notifier': {
      const protocol = String(o.protocol ?? 'hm9000');
      if (protocol === 'hm9000-http') return `notifier POSTs starts and stops to ${maskUrl(String(o.cc_url))}/internal/dea/hm9000/…, timeout ${d(o.timeout)}`;
      // Subject defaults depend on the protocol (plugins/notifier subjectsFor).
      const fallback =
        protocol === 'health'
          ? ['health.start', 'health.stop']
          : protocol === 'cc-partition'
            ? Array(2).fill(`cloudcontrollers.hm.requests.${String(o.cc_partition ?? 'default')}`)
            : ['hm9000.start', 'hm9000.stop'];
      const what = protocol === 'hm9000' ? 'starts' : `${protocol} requests: starts`;
      return `notifier publishes ${what} on ${String(o.start_subject ?? fallback[0])} and stops on ${String(o.stop_subject ?? fallback[1])} (NATS)`;
    }
    case 'reporter':
      return `reporter answers ${String(o.status_subject)}, ${String(o.health_subject)} and ${String(o.droplet_subject)}; keeps /varz${(o.component as { enabled?: boolean } | undefined)?.enabled ? '; registers as a VCAP component' : ''}`;
    case 'nats': {
      const servers = Array.isArray(o.servers) ? o.servers.map((e) => maskUrl(String(e))).join(', ') : 'its servers';
      return `NATS at ${servers}`;
    }
    case 'in-process':
      return 'in-process bus (no NATS)';
    case 'hono':
      return `HTTP API on ${String(o.listen)}`;
    case 'memory':
      return 'memory store (state lives in this process)';
    case 'etcd': {
      const endpoints = Array.isArray(o.endpoints) ? o.endpoints.map((e) => maskUrl(String(e))).join(', ') : 'its default endpoints';
      return `etcd store at ${endpoints}${o.prefix !== undefined ? `, prefix ${String(o.prefix)}` : ''}`;
    }
    default:
      return generic(s);
  }
}

export function stageSummary(s: SummaryInput): string {
  return `${s.id}: ${describe(s)}`;
}
