/**
 * At most one log line per key every `everyMs`, with how many were held back since: a flood of
 * bad or forged input is counted in full but cannot flood the log.
 */
export class LogLimiter {
  private readonly last = new Map<string, { at: number; heldBack: number }>();

  constructor(private readonly everyMs = 10_000) {}

  /** Whether a line for `key` may go out at `now`; if so, how many were held back since the last one. */
  pass(key: string, now: number): { heldBack: number } | undefined {
    const last = this.last.get(key);
    if (last && now - last.at < this.everyMs) {
      last.heldBack++;
      return undefined;
    }
    this.last.set(key, { at: now, heldBack: 0 });
    return { heldBack: last?.heldBack ?? 0 };
  }
}
