/**
 * The dump as text, in the layout of HM9000's structured dump (docs/hm9000.md#dump):
 *
 *   Dump - Current timestamp <unix>
 *   Store is fresh | STORE IS NOT FRESH: <error> (<reasons>)
 *   ====================
 *
 *   Guid: <guid> | Version: <version>
 *     Desired: [<n>] instances, (<STATE>, <PACKAGE_STATE>) | Desired: NO
 *     Heartbeats: NONE | Heartbeats:
 *       [<index> <STATE>] <instance guid> on <agent>
 *     CrashCounts: [<index>]:<count> …
 *     Pending Starts:
 *       [<index>] priority:<%.2f>[ NO VERIFICATION] send:SENT delete:<duration> | send:<duration>
 *     Pending Stops:
 *       <instance guid> send:SENT delete:<duration> | send:<duration>
 *
 * Durations are written as Go's time.Duration.String() writes them (30s, 1m0s, -10s, 250ms). Two
 * differences make it easier to read: the agent is named in full (HM9000 cut it to 5 characters),
 * and the not-fresh line says why.
 */
import type { DumpDoc } from './build.js';

/** A duration in milliseconds as Go's time.Duration.String() writes it. */
export function goDuration(ms: number): string {
  const v = Math.round(ms);
  if (v === 0) return '0s';
  const sign = v < 0 ? '-' : '';
  let rest = Math.abs(v);
  if (rest < 1000) return `${sign}${rest}ms`;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const whole = Math.floor(rest / 1000);
  const frac = rest % 1000;
  const s = frac ? `${whole}.${String(frac).padStart(3, '0').replace(/0+$/, '')}s` : `${whole}s`;
  if (h > 0) return `${sign}${h}h${m}m${s}`;
  if (m > 0) return `${sign}${m}m${s}`;
  return `${sign}${s}`;
}

/** Go's fmt %.2f: the exact binary value rounded, an exact tie to the even digit. */
export function goFixed2(x: number): string {
  if (!Number.isFinite(x)) return x > 0 ? '+Inf' : x < 0 ? '-Inf' : 'NaN';
  const exact = Math.abs(x).toFixed(60);
  const frac = exact.split('.')[1]!;
  if (frac[2] === '5' && /^0*$/.test(frac.slice(3))) {
    // An exact tie: JavaScript rounds it up, Go to even.
    const cents = Math.floor(Math.abs(x) * 100);
    const even = cents % 2 === 0 ? cents : cents + 1;
    const text = (even / 100).toFixed(2);
    return x < 0 ? `-${text}` : text;
  }
  return x.toFixed(2);
}

/** The dump in HM9000's layout, one string ending with a newline. */
export function renderDump(doc: DumpDoc): string {
  const lines: string[] = [];
  const now = Date.parse(doc.timestamp);
  lines.push(`Dump - Current timestamp ${Math.floor(now / 1000)}`);
  if (doc.fresh) {
    lines.push('Store is fresh');
  } else {
    const why = [
      doc.actual.fresh ? '' : `actual: ${doc.actual.reason ?? 'not fresh'}`,
      doc.desired.fresh ? '' : `desired: ${doc.desired.reason ?? 'not fresh'}`,
    ].filter(Boolean);
    lines.push(`STORE IS NOT FRESH: ${doc.freshness_error ?? 'not fresh'}${why.length ? ` (${why.join('; ')})` : ''}`);
  }
  lines.push('====================');
  for (const app of doc.apps) {
    lines.push('');
    lines.push(`Guid: ${app.guid} | Version: ${app.version}`);
    lines.push(app.desired ? `  Desired: [${app.desired.instances}] instances, (${app.desired.state}, ${app.desired.package_state})` : '  Desired: NO');
    if (app.instances.length === 0) {
      lines.push('  Heartbeats: NONE');
    } else {
      lines.push('  Heartbeats:');
      for (const i of app.instances) lines.push(`    [${i.index} ${i.state}] ${i.instance} on ${i.agent}`);
    }
    if (app.crash_counts.length > 0) lines.push(`  CrashCounts: ${app.crash_counts.map((c) => `[${c.index}]:${c.count}`).join(' ')}`);
    if (app.pending_starts.length > 0) {
      lines.push('  Pending Starts:');
      for (const m of app.pending_starts) {
        const verification = m.skip_verification ? ' NO VERIFICATION' : '';
        lines.push(`    [${m.index}] priority:${goFixed2(m.priority)}${verification} ${timing(m.send_in_ms, m.delete_in_ms)}`);
      }
    }
    if (app.pending_stops.length > 0) {
      lines.push('  Pending Stops:');
      for (const m of app.pending_stops) lines.push(`    ${m.instance} ${timing(m.send_in_ms, m.delete_in_ms)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function timing(sendIn: number | null, deleteIn: number | null): string {
  return sendIn === null ? `send:SENT delete:${goDuration(deleteIn ?? 0)}` : `send:${goDuration(sendIn)}`;
}
