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
 * The lines come in that order whatever finishes first, each as soon as every line before it is
 * known (`onResult`): the config's at once, NATS's once connected, a stage's once the checks of the
 * stages that could print before it are done — a plugin's hook may return a line of any check, so a
 * running hook holds back the lines after its place. `onWaiting` says what is still running, for a
 * progress line. Failures are named with the codes of the catalogue that /v1/status uses
 * (src/sdk/problems.ts).
 */
import { dirname } from 'node:path';
import type { LoadedConfig, ResolvedStage } from '../config/load.js';
import { maskUrl } from '../config/mask.js';
import type { DoctorFindings } from '../sdk/doctor.js';
import { checkFoundation } from './foundation.js';
import { checkNats } from './nats.js';
import { pass, stagePath, type CheckResult, type DoctorContext } from './result.js';
import { publishedSubjects } from '../operator/listener-probe.js';
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

export interface DoctorOptions {
  timeoutMs?: number;
  /** Each result, in the printed order, as soon as every one before it is known. */
  onResult?: (r: CheckResult) => void;
  /** What is still being checked, whenever that changes; [] once nothing is. */
  onWaiting?: (what: string[]) => void;
}

/** One running part of a stage's checks: its plugin's hook, or the start/stop listener check. */
interface Part {
  /** What the progress line names while it runs. */
  label: string;
  /** The ranks of the lines it may return: a hook any, the start/stop check only its own. */
  mayReturn: (rank: number) => boolean;
  lines?: CheckResult[];
}

/**
 * The lines of every stage that are certain to come next, in the fixed order: by check, then by
 * stage, a stage's hook before its start/stop check — up to the first place a running part could
 * still put a line.
 */
function knownLines(parts: readonly (readonly Part[])[]): CheckResult[] {
  const out: CheckResult[] = [];
  for (let r = 0; r <= CHECK_ORDER.length; r++) {
    for (const stageParts of parts) {
      for (const part of stageParts) {
        if (!part.lines) {
          if (part.mayReturn(r)) return out;
          continue;
        }
        for (const l of part.lines) if (rank(l) === r) out.push(l);
      }
    }
  }
  return out;
}

export async function runDoctor(loaded: LoadedConfig, opts: DoctorOptions = {}): Promise<CheckResult[]> {
  const ctx: DoctorContext = { loaded, configDir: dirname(loaded.file), timeoutMs: opts.timeoutMs ?? CHECK_TIMEOUT_MS };
  const results: CheckResult[] = [];
  let done = false;
  const emit = (r: CheckResult) => {
    results.push(r);
    opts.onResult?.(r);
  };
  emit(pass('config', `config ${loaded.file}`, `valid (${loaded.stages.length} stages)`));

  opts.onWaiting?.([`NATS at ${loaded.config.bus.servers.map(maskUrl).join(', ')}`]);
  const nats = await checkNats(ctx);
  opts.onWaiting?.([]);
  emit(nats.result);
  try {
    // Another source whose plugin checks something: the same-foundation check may compare the two.
    const crossCheck = (s: ResolvedStage) =>
      s.section === 'sources' && loaded.stages.some((o) => o !== s && o.section === 'sources' && typeof o.plugin.doctor === 'function');
    const parts: Part[][] = loaded.stages.map(() => []);
    let printed = 0;
    const progress = () => {
      if (done) return;
      for (const r of knownLines(parts).slice(printed)) {
        printed++;
        emit(r);
      }
      opts.onWaiting?.(
        parts
          .flat()
          .filter((p) => !p.lines)
          .map((p) => p.label),
      );
    };
    const track = <T>(stage: number, part: Part, linesOf: (v: T) => CheckResult[], work: Promise<T>): Promise<T> => {
      parts[stage]!.push(part);
      return work.then((v) => {
        part.lines = linesOf(v);
        progress();
        return v;
      });
    };
    // Every stage's checks run at once; their lines are printed in the fixed order as they become known.
    const probes = loaded.stages.map(async (s, i) => {
      const path = stagePath(s);
      const published = publishedSubjects(s);
      const [findings] = await Promise.all([
        typeof s.plugin.doctor === 'function'
          ? track(
              i,
              { label: `${path} (${s.pluginSpec})`, mayReturn: () => true },
              (f: DoctorFindings) => f.results,
              Promise.resolve().then(() =>
                s.plugin.doctor!({
                  id: s.id,
                  section: s.section,
                  path,
                  options: s.options,
                  configDir: ctx.configDir,
                  timeoutMs: ctx.timeoutMs,
                  heartbeatMs: loaded.heartbeatMs,
                  ...(nats.nc ? { nats: nats.nc } : {}),
                  crossCheck: crossCheck(s),
                }),
              ),
            )
          : NO_FINDINGS,
        published.length > 0
          ? track(
              i,
              { label: `start/stop listeners of ${path}`, mayReturn: (r) => r === CHECK_ORDER.indexOf('start_stop') },
              (r: CheckResult) => [r],
              checkStartStop(ctx, s, published),
            )
          : undefined,
      ]);
      return { stage: s, findings };
    });
    progress();
    const probed = await Promise.all(probes);

    // The same foundation: the first stage that read the desired apps against the first that heard heartbeats.
    const desired = probed.find((p) => p.findings.desired !== undefined);
    const heard = probed.find((p) => p.findings.heartbeats !== undefined);
    if (desired && heard) {
      emit(checkFoundation(desired.findings.desired ?? undefined, heard.findings.heartbeats ?? undefined, stagePath(desired.stage)));
    }
  } finally {
    done = true;
    opts.onWaiting?.([]);
    await nats.nc?.close().catch(() => undefined);
  }
  return results;
}
