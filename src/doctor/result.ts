/**
 * What every doctor check returns, and how a result is printed:
 *
 *   ok: <what>: <detail>
 *   FAIL: <what>: <why>; fix: <fix> [<CODE>]
 *   skip: <what>: <why>
 *
 * Failures carry the problem code of the catalogue shared with /v1/status (problem-codes.ts).
 */
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import type { Problem, ProblemCode } from '../operator/problem-codes.js';

export interface CheckResult {
  /** The check: config, nats, etcd, cc, heartbeats, cc_partition, start_stop, foundation. */
  name: string;
  ok: boolean;
  /** Not run (a dependency failed, or nothing to compare); counts as ok. */
  skipped?: boolean;
  what: string;
  why: string;
  /** What to change; '' when ok. */
  fix: string;
  code?: ProblemCode;
}

export interface DoctorContext {
  loaded: LoadedConfig;
  /** The config file's directory (ca_file and the like are relative to it). */
  configDir: string;
  /** The longest wait of one check for one answer. */
  timeoutMs: number;
}

export const pass = (name: string, what: string, why: string): CheckResult => ({ name, ok: true, what, why, fix: '' });
export const skip = (name: string, what: string, why: string): CheckResult => ({ name, ok: true, skipped: true, what, why, fix: '' });
export const fail = (name: string, p: Problem): CheckResult => ({ name, ok: false, what: p.what, why: p.why, fix: p.fix, code: p.code });
/** A failure that is about the config itself rather than a dependency (no problem code). */
export const failPlain = (name: string, what: string, why: string, fix: string): CheckResult => ({ name, ok: false, what, why, fix });

export function formatResult(r: CheckResult): string {
  if (r.skipped) return `skip: ${r.what}: ${r.why}`;
  if (r.ok) return `ok: ${r.what}: ${r.why}`;
  return `FAIL: ${r.what}: ${r.why}; fix: ${r.fix}${r.code ? ` [${r.code}]` : ''}`;
}

/** The stages of one plugin, found by the plugin's own name. */
export function stagesOf(loaded: LoadedConfig, plugin: string): ResolvedStage[] {
  return loaded.stages.filter((s) => s.plugin.name === plugin);
}

/** `sources.desired`, `sinks.cloud_controller`: where a stage's options live in the config. */
export function stagePath(s: ResolvedStage): string {
  return s.section === 'store' ? 'store' : `${s.section}.${s.id}`;
}
