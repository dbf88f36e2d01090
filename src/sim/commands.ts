/**
 * The `hmgate test` and `hmgate simulate` commands: what they print and their exit codes, kept
 * apart from the CLI's argument parsing. A flag's bad value is a UsageError (the CLI exits 2).
 */
import { readdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { ConfigError, formatProblem } from '../config/errors.js';
import { parseDuration } from '../config/duration.js';
import type { LoadedConfig } from '../config/load.js';
import { counted } from '../sdk/summary.js';
import { formatLiveSummary, liveOptionsFromConfig, LiveSimulator } from './live.js';
import { formatTimeline, runScenario } from './scenario.js';
import { simulateFoundation, type SimulationOptions } from './simulate.js';

/** A flag's value the command cannot use: the CLI prints the message as one line and exits 2. */
export class UsageError extends Error {}

/** Scenario files: the given files, and every *.yaml / *.yml inside the given directories. */
export function scenarioFiles(paths: string[], cwd = process.cwd()): string[] {
  const out: string[] = [];
  for (const p of paths.length ? paths : ['test/scenarios']) {
    const abs = resolve(cwd, p);
    if (statSync(abs, { throwIfNoEntry: false })?.isDirectory()) {
      for (const f of readdirSync(abs).sort()) if (/\.ya?ml$/.test(f)) out.push(join(abs, f));
    } else out.push(abs);
  }
  return out;
}

/** Runs the scenarios; prints PASS/FAIL lines (and the timeline of a failure); returns the exit code. */
export async function runTests(paths: string[], write: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const files = scenarioFiles(paths);
  if (files.length === 0) {
    write('no scenario files found\n');
    return 1;
  }
  let failed = 0;
  for (const file of files) {
    const shown = relative(process.cwd(), file) || file;
    const t0 = performance.now();
    try {
      const r = await runScenario(file);
      const ms = (performance.now() - t0).toFixed(0);
      if (r.passed) write(`PASS ${shown}: ${r.name} (${counted(r.timeline.length, 'order')}, ${ms} ms)\n`);
      else {
        failed++;
        write(`FAIL ${shown}: ${r.name}\n${r.failures.map((f) => `  - ${f}\n`).join('')}  what was sent:\n${formatTimeline(r.timeline)}\n`);
      }
    } catch (err) {
      failed++;
      if (err instanceof ConfigError) write(`FAIL ${shown}: invalid scenario\n${err.problems.map((p) => `  ${formatProblem(p)}\n`).join('')}`);
      else write(`FAIL ${shown}: ${(err as Error).message}\n`);
    }
  }
  write(`${files.length - failed} passed, ${failed} failed\n`);
  return failed === 0 ? 0 : 1;
}

export interface SimulateArgs {
  agents: string;
  instances: string;
  perApp: string;
  crashRate: string;
  agentDiesAt?: string;
  evacuateAt?: string;
  versionChangeAt?: string;
  ccOutage?: string;
  duration: string;
  seed: string;
  timeline: boolean;
  /** Live mode: real heartbeats on the config's NATS and a real bulk API, in real time. */
  live?: boolean;
  churn?: string;
  obey?: boolean;
  ccPort?: string;
  removeAt?: string;
}

/** A flag's number; NaN for anything else, the empty string too (Number('') is 0). */
const flagNumber = (v: string | undefined): number => (v === undefined || v.trim() === '' ? NaN : Number(v));

/** A duration flag's value (hb in the config's heartbeat units); a bad one is a UsageError naming the flag. */
function durationFlag(name: string, v: string, heartbeatMs: number): number {
  try {
    return parseDuration(v, heartbeatMs);
  } catch (err) {
    throw new UsageError(`--${name}: ${(err as Error).message}`);
  }
}

export function simulationOptions(a: SimulateArgs, heartbeatMs: number): SimulationOptions {
  const int = (name: string, v: string) => {
    const n = flagNumber(v);
    if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${name} must be a whole number > 0, not "${v}"`);
    return n;
  };
  const rate = flagNumber(a.crashRate);
  if (!(rate >= 0 && rate <= 1)) throw new UsageError(`--crash-rate must be between 0 and 1, not "${a.crashRate}"`);
  const dur = (name: string, v: string | undefined) => (v === undefined ? undefined : durationFlag(name, v, heartbeatMs));
  let ccOutage: [number, number] | undefined;
  if (a.ccOutage) {
    const [from, to, ...rest] = a.ccOutage.split('-');
    if (!from || !to || rest.length > 0) throw new UsageError(`--cc-outage must be FROM-TO, e.g. 5m-8m, not "${a.ccOutage}"`);
    ccOutage = [durationFlag('cc-outage', from, heartbeatMs), durationFlag('cc-outage', to, heartbeatMs)];
    if (ccOutage[1] <= ccOutage[0]) throw new UsageError(`--cc-outage must end after it begins, not "${a.ccOutage}"`);
  }
  const seed = flagNumber(a.seed);
  if (!Number.isInteger(seed)) throw new UsageError(`--seed must be a whole number, not "${a.seed}"`);
  return {
    agents: int('agents', a.agents),
    instancesPerAgent: int('instances', a.instances),
    instancesPerApp: int('per-app', a.perApp),
    crashRate: rate,
    agentDiesAt: dur('agent-dies-at', a.agentDiesAt),
    evacuateAt: dur('evacuate-at', a.evacuateAt),
    versionChangeAt: dur('version-change-at', a.versionChangeAt),
    ccOutage,
    durationMs: durationFlag('duration', a.duration, heartbeatMs),
    seed: seed || 1,
  };
}

export async function runSimulate(loaded: LoadedConfig, a: SimulateArgs, write: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  if (a.live) return runLiveSimulate(loaded, a, write);
  const o = simulationOptions(a, loaded.heartbeatMs);
  const t0 = performance.now();
  const { result, summary } = await simulateFoundation(loaded, o);
  if (a.timeline) write(`${formatTimeline(result.timeline)}\n`);
  const list = (m: Record<string, number>) =>
    Object.entries(m)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  write(
    [
      `simulated ${counted(o.agents, 'agent')} × ${counted(o.instancesPerAgent, 'instance')} for ${o.durationMs / 1000}s of virtual time in ${(performance.now() - t0).toFixed(0)} ms`,
      `starts: ${list(summary.starts)}`,
      `stops: ${list(summary.stops)}`,
      `converged: ${summary.convergedAt === null ? 'nothing to do' : `last order at ${summary.convergedAt / 1000}s`}`,
      '',
    ].join('\n'),
  );
  return 0;
}

/** The live mode's options from the command line (durations in the config's heartbeat units too). */
export function liveSimulationOptions(loaded: LoadedConfig, a: SimulateArgs) {
  const o = simulationOptions(a, loaded.heartbeatMs);
  const churn = a.churn === undefined ? 0 : flagNumber(a.churn);
  if (!(churn >= 0 && churn <= 1)) throw new UsageError(`--churn must be between 0 and 1, not "${a.churn}"`);
  let ccPort: number | undefined;
  if (a.ccPort !== undefined) {
    ccPort = flagNumber(a.ccPort);
    if (!Number.isInteger(ccPort) || ccPort < 0 || ccPort > 65535) {
      throw new UsageError(`--cc-port must be a port number (0: any free one), not "${a.ccPort}"`);
    }
  }
  return liveOptionsFromConfig(loaded, {
    agents: o.agents,
    instancesPerAgent: o.instancesPerAgent,
    instancesPerApp: o.instancesPerApp,
    churn,
    seed: o.seed,
    durationMs: o.durationMs,
    obey: Boolean(a.obey),
    removeAtMs: a.removeAt === undefined ? undefined : durationFlag('remove-at', a.removeAt, loaded.heartbeatMs),
    ccPort,
  });
}

/**
 * `hmgate simulate --live`: runs until --duration or the first SIGINT/SIGTERM (a second one exits
 * at once), then prints the summary.
 */
export async function runLiveSimulate(loaded: LoadedConfig, a: SimulateArgs, write: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const sim = new LiveSimulator(liveSimulationOptions(loaded, a), (line) => write(`${line}\n`));
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(1);
    signalled = true;
    write(`${signal} received: stopping\n`);
    void sim.stop();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await sim.start();
    write(formatLiveSummary(await sim.done));
    return 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await sim.stop();
  }
}
