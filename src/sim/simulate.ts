/**
 * `hmgate simulate`: a foundation of N agents × M instances under the config's real rules, on the
 * virtual clock, with what goes wrong in a foundation — instances crashing, an agent dying, an
 * agent evacuating, a version change, a Cloud Controller outage. The agents obey the orders (a
 * start runs the instance on a live agent, a stop removes it), so the run shows how the rules
 * converge. Prints a timeline of the orders with their reasons and a summary.
 */
import type { LoadedConfig } from '../config/load.js';
import { seededRandom } from './live-foundation.js';
import { runScenarioObject, type ScenarioResult, type TimedOrder } from './scenario.js';
import type { Scenario, ScenarioEvent, ScenarioInstance } from './scenario-schema.js';

export interface SimulationOptions {
  agents: number;
  instancesPerAgent: number;
  instancesPerApp: number;
  /** Share of running instances that crash over the run (0–1). */
  crashRate: number;
  /** Virtual ms at which agent 0 dies (stops heartbeating for good). */
  agentDiesAt?: number;
  /** Virtual ms at which agent 1 starts evacuating all its instances. */
  evacuateAt?: number;
  /** Virtual ms at which app 0 changes to version v2. */
  versionChangeAt?: number;
  /** [from, to] virtual ms of a Cloud Controller outage. */
  ccOutage?: [number, number];
  durationMs: number;
  seed: number;
}

export function buildSimulation(o: SimulationOptions): Scenario {
  const total = o.agents * o.instancesPerAgent;
  const apps = Math.ceil(total / o.instancesPerApp);
  const desired = Array.from({ length: apps }, (_, a) => ({
    app: `app-${a}`,
    version: 'v1',
    instances: Math.min(o.instancesPerApp, total - a * o.instancesPerApp),
    state: 'STARTED',
    package_state: 'STAGED',
  }));
  const agents: Record<string, ScenarioInstance[]> = {};
  for (let n = 0; n < total; n++) {
    const id = `dea-${n % o.agents}`;
    (agents[id] ??= []).push({ app: `app-${Math.floor(n / o.instancesPerApp)}`, version: 'v1', index: n % o.instancesPerApp, state: 'RUNNING' });
  }
  const rnd = seededRandom(o.seed);
  const events: ScenarioEvent[] = [];
  for (let n = 0; n < Math.round(total * o.crashRate); n++) {
    const i = Math.floor(rnd() * total);
    const agentId = `dea-${i % o.agents}`;
    const inst = agents[agentId]![Math.floor(i / o.agents)]!;
    events.push({
      at: Math.floor(rnd() * o.durationMs * 0.5),
      agent: agentId,
      set: { app: inst.app, version: inst.version, index: inst.index, state: 'CRASHED' },
    });
  }
  if (o.agentDiesAt !== undefined) events.push({ at: o.agentDiesAt, agent: 'dea-0', silence: true });
  if (o.evacuateAt !== undefined && o.agents > 1) {
    for (const inst of agents['dea-1'] ?? [])
      events.push({ at: o.evacuateAt, agent: 'dea-1', set: { app: inst.app, version: inst.version, index: inst.index, state: 'EVACUATING' } });
  }
  if (o.versionChangeAt !== undefined) events.push({ at: o.versionChangeAt, desired: desired.map((d, a) => (a === 0 ? { ...d, version: 'v2' } : d)) });
  if (o.ccOutage) events.push({ at: o.ccOutage[0], cc: 'down' }, { at: o.ccOutage[1], cc: 'up' });
  events.sort((a, b) => a.at - b.at);
  return { name: 'simulation', config: '(loaded)', obey: '*', desired, agents, events, run_for: o.durationMs, random: rnd(), expect: [] };
}

export interface SimulationSummary {
  starts: Record<string, number>;
  stops: Record<string, number>;
  /** Virtual time of the last order: when the foundation had converged. */
  convergedAt: number | null;
}

export function summarize(timeline: TimedOrder[]): SimulationSummary {
  const starts: Record<string, number> = {};
  const stops: Record<string, number> = {};
  for (const { order } of timeline) {
    const into = order.action === 'start' ? starts : stops;
    into[order.reason] = (into[order.reason] ?? 0) + 1;
  }
  return { starts, stops, convergedAt: timeline.length ? timeline[timeline.length - 1]!.at : null };
}

export async function simulateFoundation(loaded: LoadedConfig, o: SimulationOptions): Promise<{ result: ScenarioResult; summary: SimulationSummary }> {
  const result = await runScenarioObject(buildSimulation(o), loaded);
  return { result, summary: summarize(result.timeline) };
}
