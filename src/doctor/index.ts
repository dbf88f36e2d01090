/**
 * `hmgate doctor`: checks every dependency the config names, each with a short timeout, and says
 * per check `ok`, `skip` or `FAIL` with what is wrong and what to change. The checks, one module
 * per dependency:
 *
 *   config → NATS → etcd (store.plugin: etcd) → CC bulk API → heartbeats → cc_partition →
 *   start/stop listener → the same foundation on both sides
 *
 * The lines come in that order whatever finishes first. Failures are named with the codes of the
 * catalogue that /v1/status uses (src/pipeline/problem-codes.ts).
 */
import { dirname } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { checkBulkApi, type CcCheck } from './cc.js';
import { checkEtcd } from './etcd.js';
import { checkFoundation } from './foundation.js';
import { checkHeartbeats, heartbeatsWindow, sampleHeartbeats, type HeartbeatSample } from './heartbeats.js';
import { checkNats } from './nats.js';
import { checkPartition } from './partition.js';
import { pass, stagePath, stagesOf, type CheckResult, type DoctorContext } from './result.js';
import { checkStartStop } from './start-stop.js';

export { formatResult, type CheckResult } from './result.js';

/** The longest wait of one check for one answer (the heartbeat check listens for 3 hb instead). */
export const CHECK_TIMEOUT_MS = 5_000;

export async function runDoctor(loaded: LoadedConfig, opts: { timeoutMs?: number } = {}): Promise<CheckResult[]> {
  const ctx: DoctorContext = { loaded, configDir: dirname(loaded.file), timeoutMs: opts.timeoutMs ?? CHECK_TIMEOUT_MS };
  const results: CheckResult[] = [pass('config', `config ${loaded.file}`, `valid (${loaded.stages.length} stages)`)];

  const nats = await checkNats(ctx);
  results.push(nats.result);
  try {
    const store = loaded.stages.find((s) => s.section === 'store');
    const heartbeatStages = stagesOf(loaded, 'heartbeat');
    const desiredStages = stagesOf(loaded, 'bulk-api');
    const sinks = stagesOf(loaded, 'notifier');

    // The independent checks run at once; their lines are printed in the fixed order below.
    const etcd = store?.plugin.name === 'etcd' ? checkEtcd(ctx, store.options) : undefined;
    const cc = desiredStages.map((s) => checkBulkApi(ctx, s, nats.nc, heartbeatStages.length > 0));
    const samples = heartbeatStages.map((s) =>
      nats.nc
        ? sampleHeartbeats(nats.nc, String(s.options.subject ?? 'dea.heartbeat'), heartbeatsWindow(loaded.heartbeatMs), loaded.heartbeatMs)
        : Promise.resolve(undefined),
    );
    const startStop = sinks.map((s) => checkStartStop(ctx, s));

    if (etcd) results.push(await etcd);
    const ccChecks: CcCheck[] = await Promise.all(cc);
    results.push(...ccChecks.map((c) => c.result));
    const heard: (HeartbeatSample | undefined)[] = await Promise.all(samples);
    heartbeatStages.forEach((s, i) => results.push(checkHeartbeats(s, heard[i], loaded.heartbeatMs)));
    heartbeatStages.forEach((s, i) => {
      const r = checkPartition(s, heard[i]);
      if (r) results.push(r);
    });
    results.push(...(await Promise.all(startStop)));
    if (desiredStages.length > 0 && heartbeatStages.length > 0) {
      results.push(checkFoundation(ccChecks[0]!.desired, heard[0], stagePath(desiredStages[0]!)));
    }
  } finally {
    await nats.nc?.close().catch(() => undefined);
  }
  return results;
}
