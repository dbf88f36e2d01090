/**
 * An app record as JSON text for `healthmanager.droplet`, GET /v1/apps/:guid (and the older design's varz `droplets`):
 * every field, Maps written as objects in their insertion order (instance indices included, which a
 * JS object would sort). A debug format, like the Ruby HM's dump of its droplet's fields.
 */
import type { Droplet } from '../sdk/droplets.js';

function text(value: unknown): string {
  if (value instanceof Map) {
    const parts: string[] = [];
    for (const [k, v] of value) parts.push(`${JSON.stringify(String(k))}:${text(v)}`);
    return `{${parts.join(',')}}`;
  }
  if (value instanceof Set) return text([...value]);
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : text(v))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const parts: string[] = [];
    for (const [k, v] of Object.entries(value)) if (v !== undefined && typeof v !== 'function') parts.push(`${JSON.stringify(k)}:${text(v)}`);
    return `{${parts.join(',')}}`;
  }
  // Numbers that JSON cannot hold (NaN, Infinity) become null, as JSON.stringify writes them.
  return JSON.stringify(value) ?? 'null';
}

export function dropletJson(d: Droplet): string {
  return text(d);
}
