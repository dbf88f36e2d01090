/**
 * Runs a policy-test scenario (`hmgate test`): the config under test, built by the real engine with
 * its real heartbeat source and policies, on a virtual clock with an in-process bus. Simulated
 * agents heartbeat every heartbeat interval, a simulated Cloud Controller answers the desired-state
 * polls, and a recording sink takes the place of the notifiers. The orders sent, with their virtual
 * times, are checked against the scenario's expectations.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Type } from '@sinclair/typebox';
import { stringify } from 'yaml';
import { ConfigError, type ConfigProblem } from '../config/errors.js';
import { loadConfig, type LoadedConfig, type ResolvedStage } from '../config/load.js';
import { isPlainObject } from '../config/merge.js';
import { readSourceFile } from '../config/source.js';
import { makeValidator } from '../config/validate.js';
import { createLoggerFactory } from '../log.js';
import { presetsDir } from '../paths.js';
import { VirtualClock } from '../sdk/clock.js';
import { counted } from '../sdk/summary.js';
import type { Order, SinkStage } from '../sdk/orders.js';
import { Engine } from '../pipeline/engine.js';
import { definePlugin, type StageContext } from '../sdk/plugin.js';
import { type Stage } from '../sdk/stage.js';
import { loadPlugin } from '../pipeline/plugin-loader.js';
import type { DesiredApp } from '../sdk/state.js';
import { InProcessBus } from './in-process-bus.js';
import { ScenarioSchema, type Scenario, type ScenarioApp, type ScenarioExpectation, type ScenarioInstance } from './scenario-schema.js';

/** An order as the scenario saw it: sent at `at` ms of virtual time since the start. */
export interface TimedOrder {
  at: number;
  order: Order;
}

export interface ScenarioResult {
  file: string;
  name: string;
  passed: boolean;
  failures: string[];
  timeline: TimedOrder[];
}

const EPOCH = Date.UTC(2026, 0, 1);

function instanceGuid(agent: string, i: ScenarioInstance): string {
  return i.instance ?? `${agent}-${i.app}-${i.version}-${i.index}`;
}

/**
 * The config under test with the scenario's overrides merged over it, written where loadConfig can
 * read it. A scenario needs no API: it is switched off (so a preset's required password is moot).
 */
async function loadScenarioConfig(file: string, raw: Record<string, unknown>): Promise<{ loaded: LoadedConfig; cleanup: () => Promise<void> }> {
  const configRef = String(raw.config ?? '');
  const preset = join(presetsDir, `${configRef}.yaml`);
  const base = !configRef.includes('/') && existsSync(preset) ? configRef : resolve(dirname(file), configRef);
  const overrides = isPlainObject(raw.overrides) ? raw.overrides : {};
  const api = { password: 'scenario', ...(isPlainObject(overrides.api) ? overrides.api : {}), enabled: false };
  const dir = await mkdtemp(join(tmpdir(), 'hmgate-scenario-'));
  const merged = join(dir, 'config.yaml');
  await writeFile(merged, stringify({ extends: base, ...overrides, api }));
  try {
    return { loaded: await loadConfig(merged), cleanup: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** The simulated Cloud Controller as a desired-state source: its context raises events, its answer says whether desired state is available. */
interface SimulatedCc {
  ctx?: StageContext;
  available: boolean;
}

/** The pipeline of the config, with the notifiers replaced by a recorder and the CC simulated. */
function simulatedStages(loaded: LoadedConfig, record: (o: Order) => void, cc: SimulatedCc): ResolvedStage[] {
  const recorder = definePlugin({
    name: 'scenario-recorder',
    kind: 'sink',
    optionsSchema: Type.Object({}),
    create: (): SinkStage => ({ send: async (order: Order) => record(order) }),
  });
  const source = definePlugin({
    name: 'scenario-cc',
    kind: 'source',
    optionsSchema: Type.Object({}),
    create: (_o, ctx) => {
      cc.ctx = ctx;
      const stage: Stage & { desiredAvailable(): boolean } = { desiredAvailable: () => cc.available };
      return stage;
    },
  });
  const kept = loaded.stages.filter((s) => !(s.kind === 'sink' || s.plugin.name === 'bulk-api'));
  return [
    ...kept,
    { id: 'scenario_cc', section: 'sources', kind: 'source', plugin: source, pluginSpec: 'scenario-cc', options: {} },
    { id: 'scenario', section: 'sinks', kind: 'sink', plugin: recorder, pluginSpec: 'scenario-recorder', options: {} },
  ];
}

function desiredApps(apps: ScenarioApp[]): DesiredApp[] {
  // What the bulk-api source keeps: STARTED and STAGED or PENDING.
  return apps.filter((a) => a.state === 'STARTED' && (a.package_state === 'STAGED' || a.package_state === 'PENDING')).map(toDesired);
}

function toDesired(a: ScenarioApp): DesiredApp {
  return {
    guid: a.app,
    version: a.version,
    instances: a.instances,
    state: a.state,
    packageState: a.package_state,
    ...(a.updated_at ? { updatedAt: a.updated_at } : {}),
  };
}

/** Runs a scenario built in code (the simulator) against a loaded config. */
export function runScenarioObject(scenario: Scenario, loaded: LoadedConfig, name = '(simulation)'): Promise<ScenarioResult> {
  return simulate(name, scenario, loaded);
}

export async function runScenario(file: string): Promise<ScenarioResult> {
  const source = await readSourceFile(file);
  if (!isPlainObject(source.value))
    throw new ConfigError([{ pos: { file, line: 1, col: 1 }, message: 'a scenario must be a map (name, config, desired, agents, events, expect)' }]);
  const { loaded, cleanup } = await loadScenarioConfig(file, source.value);
  try {
    const scenario = structuredClone(source.value) as Scenario;
    const problems = makeValidator({ heartbeatMs: loaded.heartbeatMs, convertDurations: true }).validate(ScenarioSchema, scenario);
    if (problems.length > 0) {
      throw new ConfigError(
        problems.map<ConfigProblem>((p) => ({
          pos: (p.atKey ? source.locations.get(p.pointer)?.key : undefined) ?? source.locations.get(p.pointer)?.value ?? { file, line: 1, col: 1 },
          message: p.message,
        })),
      );
    }
    return await simulate(file, scenario, loaded);
  } finally {
    await cleanup();
  }
}

async function simulate(file: string, scenario: Scenario, loaded: LoadedConfig): Promise<ScenarioResult> {
  const clock = new VirtualClock(EPOCH);
  const bus = new InProcessBus();
  const timeline: TimedOrder[] = [];
  let obey: ((order: Order) => void) | undefined;
  // A simulation keeps its state in memory and serves no API, whatever the config says.
  const memory = (await loadPlugin('memory', process.cwd())).definition;
  loaded = { ...loaded, config: { ...loaded.config, api: { ...loaded.config.api, enabled: false } } };
  loaded = { ...loaded, stages: loaded.stages.map((st) => (st.section === 'store' ? { ...st, plugin: memory, pluginSpec: 'memory', options: {} } : st)) };
  const cc: SimulatedCc = { available: false };
  const stages = simulatedStages(
    loaded,
    (order) => {
      timeline.push({ at: clock.now() - EPOCH, order });
      obey?.(order);
    },
    cc,
  );
  const random = scenario.random ?? 0.5;
  const engine = new Engine(
    { ...loaded, stages },
    { clock, bus, random: () => random, loggers: createLoggerFactory({ foundation: 'scenario', level: 'silent' }) },
  );
  const hb = loaded.heartbeatMs;

  // Simulated agents: instance guid → instance, per agent.
  const agents = new Map<string, { silent: boolean; instances: Map<string, ScenarioInstance> }>();
  const agent = (id: string) => {
    let a = agents.get(id);
    if (!a) agents.set(id, (a = { silent: false, instances: new Map() }));
    return a;
  };
  for (const [id, list] of Object.entries(scenario.agents)) for (const i of list) agent(id).instances.set(instanceGuid(id, i), i);
  const heartbeatSubject = String(loaded.stages.find((s) => s.plugin.name === 'heartbeat')?.options.subject ?? 'dea.heartbeat');
  const beat = () => {
    for (const [id, a] of agents) {
      if (a.silent) continue;
      const droplets = [...a.instances.entries()].map(([guid, i]) => ({
        cc_partition: i.cc_partition ?? 'default',
        droplet: i.app,
        version: i.version,
        instance: guid,
        index: i.index,
        state: i.state,
        state_timestamp: (clock.now() - EPOCH) / 1000,
      }));
      bus.publish(heartbeatSubject, JSON.stringify({ dea: id, droplets }));
    }
    clock.setTimeout(beat, hb);
  };

  // The simulated Cloud Controller, polled like the bulk-api stage would poll it.
  let ccApps = scenario.desired;
  let ccUp = true;
  const desiredStage = loaded.stages.find((s) => s.plugin.name === 'bulk-api');
  const pollMs = Number(desiredStage?.options.poll_interval ?? 6 * hb);
  const poll = async () => {
    cc.available = ccUp;
    if (ccUp) {
      // Event policies see the walk as the bulk-api source reports it: every app, page by page.
      const events = cc.ctx?.events;
      if (events?.wants('desired')) {
        events.emit({ kind: 'walk', phase: 'start' });
        for (const a of ccApps) events.emit({ kind: 'desired', app: toDesired(a) });
        events.emit({ kind: 'walk', phase: 'done' });
      }
      await engine.stateStore!.replaceDesired(desiredApps(ccApps));
      await engine.stateStore!.bumpFreshness('desired', loaded.config.freshness.desired_ttl);
    }
    clock.setTimeout(() => void poll(), pollMs);
  };

  if (scenario.obey) {
    const placeOn = scenario.obey;
    let next = 0;
    obey = (order) => {
      if (order.action === 'request') {
        const r = order.request;
        if (r.op === 'STOP') {
          for (const a of agents.values()) for (const i of r.instances ?? []) if (i.instance) a.instances.delete(i.instance);
          return;
        }
        for (const index of r.indices ?? []) run({ app: order.app, version: r.version ?? 'v1', index });
        return;
      }
      if (order.action === 'stop') {
        for (const a of agents.values()) a.instances.delete(order.instance);
        return;
      }
      run(order);
    };
    // The restarted instance replaces a crashed one at that index; `*` places round-robin.
    const run = (o: { app: string; version: string; index: number }) => {
      for (const a of agents.values()) {
        for (const [guid, i] of a.instances)
          if (i.app === o.app && i.version === o.version && i.index === o.index && i.state === 'CRASHED') a.instances.delete(guid);
      }
      const live = [...agents.entries()].filter(([, a]) => !a.silent).map(([id]) => id);
      const target = placeOn === '*' ? (live[next++ % Math.max(1, live.length)] ?? 'dea-new') : placeOn;
      agent(target).instances.set(`${target}-${o.app}-${o.version}-${o.index}-${clock.now()}`, {
        app: o.app,
        version: o.version,
        index: o.index,
        state: 'RUNNING',
      });
    };
  }

  for (const e of scenario.events) {
    clock.setTimeout(() => {
      if (e.desired) ccApps = e.desired;
      if (e.cc) ccUp = e.cc === 'up';
      if (e.exited) {
        const x = e.exited;
        let instance = x.instance;
        for (const a of agents.values())
          for (const [guid, i] of a.instances) if (!instance && i.app === x.app && i.version === x.version && i.index === x.index) instance = guid;
        const crash = x.reason === 'CRASHED' ? { crash_timestamp: Math.floor(clock.now() / 1000) } : {};
        bus.publish(
          'droplet.exited',
          JSON.stringify({
            droplet: x.app,
            version: x.version,
            instance: instance ?? `exited-${x.app}-${x.index}`,
            index: x.index,
            reason: x.reason,
            ...crash,
          }),
        );
      }
      if (e.updated) bus.publish('droplet.updated', JSON.stringify({ droplet: e.updated }));
      if (e.agent) {
        const a = agent(e.agent);
        if (e.silence !== undefined) a.silent = e.silence;
        if (e.run) a.instances.set(instanceGuid(e.agent, e.run), e.run);
        for (const [guid, i] of a.instances) {
          if (e.set && i.app === e.set.app && i.version === e.set.version && i.index === e.set.index) a.instances.set(guid, { ...i, state: e.set.state });
          if (e.remove && i.app === e.remove.app && i.version === e.remove.version && i.index === e.remove.index) a.instances.delete(guid);
        }
      }
    }, e.at);
  }

  await engine.start();
  try {
    await poll();
    beat();
    // Step a heartbeat at a time so async work triggered by timers settles in order.
    for (let t = 0; t < scenario.run_for; t += Math.min(hb, 1000)) await clock.advanceAsync(Math.min(hb, 1000, scenario.run_for - t));
  } finally {
    await engine.stop();
  }
  const failures = check(scenario.expect, timeline);
  return { file, name: scenario.name, passed: failures.length === 0, failures, timeline };
}

function describeOrder(o: Order): string {
  if (o.action === 'request') {
    const r = o.request;
    const what =
      r.op === 'START' ? `indices ${JSON.stringify(r.indices)}${r.flapping ? ' flapping' : ''}` : `instances ${r.instances!.map((i) => i.instance).join(',')}`;
    return `${r.op.toLowerCase()} ${o.app}/${r.version} ${what} (${o.reason})`;
  }
  return o.action === 'start'
    ? `start ${o.app}/${o.version} index ${o.index} (${o.reason})`
    : `stop ${o.app}/${o.version} index ${o.index} instance ${o.instance} (${o.reason}, is_duplicate ${o.isDuplicate})`;
}

export function formatTimeline(timeline: TimedOrder[]): string {
  if (timeline.length === 0) return '    (nothing was sent)';
  return timeline.map((t) => `    ${(t.at / 1000).toFixed(3).padStart(9)}s  ${describeOrder(t.order)}`).join('\n');
}

function check(expectations: ScenarioExpectation[], timeline: TimedOrder[]): string[] {
  const failures: string[] = [];
  const used = new Set<TimedOrder>();
  const fmt = (ms: number) => `${ms / 1000}s`;
  for (const e of expectations) {
    const want = e.start ? { action: 'start' as const, ...e.start } : e.stop ? { action: 'stop' as const, ...e.stop } : undefined;
    if (want) {
      const hit = timeline.find((t) => {
        const o = t.order;
        if (used.has(t)) return false;
        if (o.action === 'request') {
          const r = o.request;
          if (r.op !== (want.action === 'start' ? 'START' : 'STOP') || o.app !== want.app) return false;
          if (want.version !== undefined && r.version !== want.version) return false;
          if (want.index !== undefined && !(r.indices ?? []).includes(want.index)) return false;
          if (want.reason !== undefined && o.reason !== want.reason) return false;
          if (want.flapping !== undefined && (r.flapping ?? false) !== want.flapping) return false;
          if ('instance' in want && want.instance !== undefined && !(r.instances ?? []).some((i) => i.instance === want.instance)) return false;
          return (
            (want.at === undefined || t.at === want.at) &&
            (want.after === undefined || t.at >= want.after) &&
            (want.before === undefined || t.at <= want.before)
          );
        }
        if (o.action !== want.action || o.app !== want.app) return false;
        if (want.version !== undefined && o.version !== want.version) return false;
        if (want.index !== undefined && o.index !== want.index) return false;
        if (want.reason !== undefined && o.reason !== want.reason) return false;
        if ('instance' in want && want.instance !== undefined && (o.action !== 'stop' || o.instance !== want.instance)) return false;
        if ('is_duplicate' in want && want.is_duplicate !== undefined && (o.action !== 'stop' || o.isDuplicate !== want.is_duplicate)) return false;
        if (want.at !== undefined && t.at !== want.at) return false;
        if (want.after !== undefined && t.at < want.after) return false;
        if (want.before !== undefined && t.at > want.before) return false;
        return true;
      });
      if (hit) used.add(hit);
      else {
        const when =
          want.at !== undefined
            ? ` at ${fmt(want.at)}`
            : `${want.after !== undefined ? ` after ${fmt(want.after)}` : ''}${want.before !== undefined ? ` before ${fmt(want.before)}` : ''}`;
        failures.push(
          `expected a ${want.action} of ${want.app}${want.index !== undefined ? ` index ${want.index}` : ''}${want.reason ? ` (${want.reason})` : ''}${when}: none matched`,
        );
      }
    }
    if (e.no_message_until !== undefined) {
      const early = timeline.filter((t) => t.at < e.no_message_until!);
      if (early.length)
        failures.push(
          `expected no message before ${fmt(e.no_message_until)}, got ${early.length} (first: ${describeOrder(early[0]!.order)} at ${fmt(early[0]!.at)})`,
        );
    }
    if (e.starts !== undefined) {
      const n = timeline.filter((t) => t.order.action === 'start' || (t.order.action === 'request' && t.order.request.op === 'START')).length;
      if (n !== e.starts) failures.push(`expected ${counted(e.starts, 'start')} in all, got ${n}`);
    }
    if (e.stops !== undefined) {
      const n = timeline.filter((t) => t.order.action === 'stop' || (t.order.action === 'request' && t.order.request.op === 'STOP')).length;
      if (n !== e.stops) failures.push(`expected ${counted(e.stops, 'stop')} in all, got ${n}`);
    }
  }
  return failures;
}
