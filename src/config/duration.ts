/**
 * The one duration parser. Accepted forms: `250ms`, `10s`, `5m`, `1h`, a bare number of seconds
 * (`30`, `0.5`), and `3hb`, a multiple of `heartbeat_interval` — presets write every HM9000 timing
 * in `hb` so that changing the heartbeat interval scales the whole preset.
 */
const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|hb)?\s*$/;

export class DurationError extends Error {}

/** Parse a duration into milliseconds. `heartbeatMs` is needed only for the `hb` unit. */
export function parseDuration(value: unknown, heartbeatMs?: number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new DurationError(`bad duration ${value}: must be a number of seconds >= 0`);
    return Math.round(value * 1000);
  }
  if (typeof value !== 'string') throw new DurationError(`bad duration: expected a string like "10s" or a number of seconds`);
  const m = DURATION.exec(value);
  if (!m) {
    throw new DurationError(`bad duration "${value}": use a number with ms, s, m, h or hb (heartbeats), e.g. "250ms", "10s", "3hb"`);
  }
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  if (unit === 'hb') {
    if (heartbeatMs === undefined) throw new DurationError(`bad duration "${value}": hb is not allowed here (this is what hb is measured in)`);
    return Math.round(n * heartbeatMs);
  }
  return Math.round(n * UNITS_MS[unit]!);
}

/** Render milliseconds the way a person would write them. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
