/**
 * `hmgate doctor`: checks every dependency the config names, each with a short timeout, and says
 * per check `ok`, `skip` or `FAIL` with what is wrong and what to change. The config and NATS are
 * checked here; each stage's dependency by its plugin's `doctor` hook (etcd, the CC bulk API, the
 * heartbeats and their cc_partition, the CC's internal API); who listens to the start/stop subjects
 * a sink publishes on (its plugin's `publishes`) here; then the cross-check of what two stages found
 * (the same foundation on both sides):
 *
 *   config → NATS → etcd → CC bulk API → heartbeats → cc_partition → start/stop listener →
 *   the same foundation on both sides
 *
 * The lines come in that order whatever finishes first. Failures are named with the codes of the
 * catalogue that /v1/status uses (src/sdk/problems.ts).
 */
import { dirname } from 'node:path';
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import type { DoctorFindings } from '../sdk/doctor.js';
import { checkFoundation } from './foundation.js';
import { checkNats } from './nats.js';
import { pass, stagePath, type CheckResult, type DoctorContext } from './result.js';
import { checkStartStop } from './start-stop.js';

export { formatResult, type CheckResult } from './result.js';

/** The longest wait of one check for one answer (the heartbeat check listens for 3 hb instead). */
export const CHECK_TIMEOUT_MS = 5_000;

/**
 * The order the stages' check lines are printed in, by check name (a plugin's check of another name
 * comes after these); within one check, in the order of the stages in the config.
 */
const CHECK_ORDER = ['etcd', 'cc', 'heartbeats', 'cc_partition', 'start_stop'];
const rank = (r: CheckResult) => (CHECK_ORDER.includes(r.name) ? CHECK_ORDER.indexOf(r.name) : CHECK_ORDER.length);

const NO_FINDINGS: DoctorFindings = { results: [] };

export async function runDoctor(loaded: LoadedConfig, opts: { timeoutMs?: number } = {}): Promise<CheckResult[]> {
  const ctx: DoctorContext = { loaded, configDir: dirname(loaded.file), timeoutMs: opts.timeoutMs ?? CHECK_TIMEOUT_MS };
  const results: CheckResult[] = [pass('config', `config ${loaded.file}`, `valid (${loaded.stages.length} stages)`)];

  const nats = await checkNats(ctx);
  results.push(nats.result);
  try {
    // Another source whose plugin checks something: the same-foundation check may compare the two.
    const crossCheck = (s: ResolvedStage) =>
      s.section === 'sources' && loaded.stages.some((o) => o !== s && o.section === 'sources' && typeof o.plugin.doctor === 'function');
    // Every stage's checks run at once; their lines are printed in the fixed order below.
    const probes = loaded.stages.map(async (s) => {
      const published = typeof s.plugin.publishes === 'function' ? s.plugin.publishes(s.options) : [];
      const [findings, startStop] = await Promise.all([
        typeof s.plugin.doctor === 'function'
          ? s.plugin.doctor({
              id: s.id,
              section: s.section,
              path: stagePath(s),
              options: s.options,
              configDir: ctx.configDir,
              timeoutMs: ctx.timeoutMs,
              heartbeatMs: loaded.heartbeatMs,
              ...(nats.nc ? { nats: nats.nc } : {}),
              crossCheck: crossCheck(s),
            })
          : NO_FINDINGS,
        published.length > 0 ? checkStartStop(ctx, s, published) : undefined,
      ]);
      return { stage: s, findings, lines: startStop ? [...findings.results, startStop] : findings.results };
    });
    const probed = await Promise.all(probes);
    results.push(...probed.flatMap((p) => p.lines).sort((a, b) => rank(a) - rank(b)));

    // The same foundation: the first stage that read the desired apps against the first that heard heartbeats.
    const desired = probed.find((p) => p.findings.desired !== undefined);
    const heard = probed.find((p) => p.findings.heartbeats !== undefined);
    if (desired && heard) {
      results.push(checkFoundation(desired.findings.desired ?? undefined, heard.findings.heartbeats ?? undefined, stagePath(desired.stage)));
    }
  } finally {
    await nats.nc?.close().catch(() => undefined);
  }
  return results;
}
