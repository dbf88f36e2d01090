/**
 * For a plugin's `summary` hook: the start-up log line says what a stage does with its main options
 * (`heartbeats: heartbeat on dea.heartbeat, sync 1s, presence TTL 30s`), durations written short.
 */

/** A count with its noun, singular for one: `1 order`, `2 orders`; `plural` when it is not the noun plus s (`1 reply`, `3 replies`). */
export function counted(n: number, noun: string, plural = `${noun}s`): string {
  return `${n} ${n === 1 ? noun : plural}`;
}

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
