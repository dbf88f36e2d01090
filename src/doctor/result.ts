/**
 * What every doctor check returns, and how a result is printed:
 *
 *   ok: <what>: <detail>
 *   FAIL: <what>: <why>; fix: <fix> [<CODE>]
 *   skip: <what>: <why>
 *
 * Failures carry the problem code of the catalogue shared with /v1/status (src/sdk/problems.ts).
 * A CheckResult and its helpers are the plugins' too (src/sdk/doctor.ts): a plugin's `doctor`
 * hook checks its stages.
 */
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import type { CheckResult } from '../sdk/doctor.js';

export { fail, failPlain, pass, skip, type CheckResult } from '../sdk/doctor.js';

export interface DoctorContext {
  loaded: LoadedConfig;
  /** The config file's directory (ca_file and the like are relative to it). */
  configDir: string;
  /** The longest wait of one check for one answer. */
  timeoutMs: number;
}

export function formatResult(r: CheckResult): string {
  if (r.skipped) return `skip: ${r.what}: ${r.why}`;
  if (r.ok) return `ok: ${r.what}: ${r.why}`;
  return `FAIL: ${r.what}: ${r.why}; fix: ${r.fix}${r.code ? ` [${r.code}]` : ''}`;
}

/** `sources.desired`, `sinks.cloud_controller`: where a stage's options live in the config. */
export function stagePath(s: ResolvedStage): string {
  return s.section === 'store' ? 'store' : `${s.section}.${s.id}`;
}
