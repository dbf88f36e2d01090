/**
 * HM9000's ComputeCrashDelay (docs/hm9000.md#crash-back-off; HM9000 `analyzer/crash_delay.go`): no
 * delay for the first `n` crashes, then doubling from `start`
 * up to `max`. `c` is the count before this restart. effMax uses float log2 truncated toward zero,
 * so a max that is not a power-of-two multiple of start is reached one step early (max=950 → c=8).
 */
export function computeCrashDelay(c: number, n: number, start: number, max: number): number {
  if (c < n) return 0;
  const effMax = Math.trunc(Math.log2(max / start) + n);
  if (c > effMax) return max;
  return start * 2 ** (c - n);
}
