/**
 * bench/analyze: analyze → dispatch cycles of the HM9000 rules over the memory store, at 10 k,
 * 100 k and 1 M instances (100 instances an agent, 10 instances an app, a few percent of them
 * missing, crashed, extra or duplicated so every rule has work). The first cycle analyses every
 * app; later ones only the apps whose inputs changed, with 1 % of the agents reporting a state
 * change before each cycle. Prints the cycle times (analysis, saving what it enqueued, dispatch)
 * and the process RSS. Figures, not a test.
 *
 *   npm run bench:analyze            # all sizes
 *   node dist/bench/analyze.js 100000
 */
import { pino } from 'pino';
import { MemoryStore } from '../plugins/memory-store/memory-store.js';
import { crashesRule } from '../plugins/crashes/index.js';
import { duplicatesRule } from '../plugins/duplicates/index.js';
import { evacuationRule } from '../plugins/evacuation/index.js';
import { extrasRule } from '../plugins/extras/index.js';
import { missingRule } from '../plugins/missing/index.js';
import { analyze, type NamedPolicy } from '../src/pipeline/cycle/analyzer.js';
import { ChangedApps } from '../src/pipeline/cycle/changed-apps.js';
import { VirtualClock } from '../src/sdk/clock.js';
import { dispatch } from '../src/pipeline/cycle/dispatcher.js';
import type { AgentHeartbeat, DesiredApp, InstanceHeartbeat } from '../src/sdk/state.js';

const HB = 10_000;
// Options objects built once, as the plugins' create() does.
const grace = { grace_period: 3 * HB };
const missingOpts = { ...grace, evacuating_counts_as_present: false };
const crashesOpts = { ...grace, crashes_before_backoff: 3, starting_backoff: 3 * HB, maximum_backoff: 96 * HB };
const duplicatesOpts = { ...grace, first_stop_after: 4 };
// Each says, as the plugin does, that it proposes nothing for a converged app.
const quiet = { quietWhenConverged: true };
const policies: NamedPolicy[] = [
  { id: 'missing', stage: { ...quiet, evaluate: (i) => missingRule(i, missingOpts) } },
  { id: 'crashes', stage: { ...quiet, evaluate: (i) => crashesRule(i, crashesOpts) } },
  { id: 'evacuation', stage: { ...quiet, evaluate: (i) => evacuationRule(i, grace) } },
  { id: 'extras', stage: { ...quiet, gate: 'no-new-start', evaluate: (i) => extrasRule(i, grace) } },
  { id: 'duplicates', stage: { ...quiet, gate: 'no-new-start', evaluate: (i) => duplicatesRule(i, duplicatesOpts) } },
];

const PER_AGENT = 100;
const PER_APP = 10;

async function fill(store: MemoryStore, instances: number): Promise<AgentHeartbeat[]> {
  const apps = instances / PER_APP;
  const desired: DesiredApp[] = [];
  for (let a = 0; a < apps; a++) desired.push({ guid: `app-${a}`, version: 'v1', instances: PER_APP, state: 'STARTED', packageState: 'STAGED' });
  await store.replaceDesired(desired);
  const batch: AgentHeartbeat[] = [];
  let current: InstanceHeartbeat[] = [];
  let n = 0;
  for (let a = 0; a < apps; a++) {
    for (let index = 0; index < PER_APP; index++) {
      const r = (a * PER_APP + index) % 100;
      if (r === 0) continue; // 1 % missing
      const state = r === 1 ? 'CRASHED' : r === 2 ? 'STARTING' : 'RUNNING';
      current.push({
        app: `app-${a}`,
        version: 'v1',
        instance: `i-${a}-${index}`,
        index: r === 3 ? PER_APP + 1 : index,
        state,
        stateTimestamp: 1,
        agent: `dea-${batch.length}`,
      });
      if (r === 4)
        current.push({
          app: `app-${a}`,
          version: 'v1',
          instance: `i-${a}-${index}-dup`,
          index,
          state: 'RUNNING',
          stateTimestamp: 1,
          agent: `dea-${batch.length}`,
        });
      if (++n % PER_AGENT === 0) {
        batch.push({ agent: `dea-${batch.length}`, instances: current });
        current = [];
      }
    }
  }
  if (current.length) batch.push({ agent: `dea-${batch.length}`, instances: current });
  await store.saveHeartbeats(batch, 3 * HB);
  return batch;
}

/** 1 % of the agents report one instance in another state (RUNNING ↔ STARTING). */
function churn(agents: AgentHeartbeat[], cycle: number): AgentHeartbeat[] {
  const out: AgentHeartbeat[] = [];
  for (let a = cycle % 100; a < agents.length; a += 100) {
    const flip = cycle % agents[a]!.instances.length;
    const instances = agents[a]!.instances.map((i, k) => (k === flip ? { ...i, state: i.state === 'RUNNING' ? 'STARTING' : 'RUNNING' } : i));
    agents[a] = { agent: agents[a]!.agent, instances };
    out.push(agents[a]!);
  }
  return out;
}

async function measure(instances: number): Promise<void> {
  const clock = new VirtualClock(1_700_000_000_000);
  const store = new MemoryStore(clock);
  const agents = await fill(store, instances);
  const logger = pino({ level: 'silent' });
  const changed = new ChangedApps(store);
  const times: number[] = [];
  for (let cycle = 0; cycle < 6; cycle++) {
    if (cycle > 0) await store.saveHeartbeats(churn(agents, cycle), 3 * HB);
    const t0 = performance.now();
    const now = clock.now();
    const collected = changed.collect();
    const snap = await store.snapshot();
    const keys = changed.take(snap, collected);
    const result = analyze(snap, now, policies, logger, keys);
    const tAnalyzed = performance.now();
    for (const { count, ttlMs } of result.crashCounts) await store.putCrashCounts([count], ttlMs);
    if (result.starts.length) await store.putPendingStarts(result.starts);
    if (result.stops.length) await store.putPendingStops(result.stops);
    const sent = await dispatch(await store.snapshot(), now, async () => {}, { messageLimit: 60, shadow: false }, logger);
    if (sent.saveStarts.length) await store.putPendingStarts(sent.saveStarts);
    if (sent.deleteStarts.length) await store.deletePendingStarts(sent.deleteStarts);
    if (sent.saveStops.length) await store.putPendingStops(sent.saveStops);
    if (sent.deleteStops.length) await store.deletePendingStops(sent.deleteStops);
    times.push(performance.now() - t0);
    if (process.env.BENCH_PHASES)
      console.log(
        `  cycle ${cycle}: ${keys ? keys.size : 'all'} apps analysed in ${(tAnalyzed - t0).toFixed(0)} ms, ${result.starts.length} starts + ${result.stops.length} stops enqueued, dispatch of ${sent.sent.length} in ${(performance.now() - tAnalyzed).toFixed(0)} ms`,
      );
    await clock.advanceAsync(HB);
    await store.saveHeartbeats(agents, 3 * HB); // every agent heartbeats each interval
  }
  changed.close();
  const rss = process.memoryUsage().rss / 1024 / 1024;
  const steady = times.slice(1);
  console.log(
    `${String(instances).padStart(9)} instances: first (full) cycle ${times[0]!.toFixed(0)} ms, then ${(steady.reduce((a, b) => a + b, 0) / steady.length).toFixed(0)} ms a cycle (max ${Math.max(...steady).toFixed(0)} ms), RSS ${rss.toFixed(0)} MB`,
  );
  await store.stop();
}

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
console.log(`bench/analyze: HM9000 rules, memory store, one process (node ${process.version})`);
for (const n of sizes.length ? sizes : [10_000, 100_000, 1_000_000]) await measure(n);
