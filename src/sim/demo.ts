/**
 * `hmgate demo`: the product at work in under a minute on one machine. It starts a nats-server on a
 * free loopback port (or uses --nats), the live simulator of `hmgate simulate --live --obey` (real
 * heartbeats on that NATS, the bulk API on a loopback port, the orders obeyed) with a small
 * foundation and a short heartbeat, and the daemon in this process (the Engine, hm9000 preset,
 * every timing scaled to that heartbeat, memory store, API on a loopback port). Then it plays a
 * script — an instance crashes, an app scales up, an agent dies, an app changes version — and
 * prints what it does and every decision the daemon sends or holds back, read from the daemon's
 * decision audit. After the script (or --duration, or SIGINT/SIGTERM) it stops all it started.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createWriteStream, type WriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { parseDuration } from '../config/duration.js';
import { loadConfig } from '../config/load.js';
import { createLoggerFactory, errorText, type LoggerFactory } from '../log.js';
import type { DecisionRecord } from '../operator/audit.js';
import { Engine } from '../pipeline/engine.js';
import { DemoFoundation, newVersion } from './demo-foundation.js';
import { DemoNatsServer, freePort } from './demo-nats.js';
import { appOf, appVersion } from './live-foundation.js';
import { liveOptionsFromConfig, LiveSimulator } from './live.js';

/** The foundation: 5 agents × 3 instances, 5 apps of 3 instances; app a's index i is slot 3a + i, on agent slot mod 5. */
const AGENTS = 5;
const PER_AGENT = 3;
const PER_APP = 3;
/** The app that crashes (at index 1), the one that scales up (from 1 to 3), the one that changes version. */
const CRASHING_APP = 0;
const SCALING_APP = 1;
const NEW_VERSION_APP = 3;
/** The agent that dies, and the one its instances are started on. */
const DYING_AGENT = 2;
const STAND_IN = 3;
const API_USER = 'magnet';
const POLL_MS = 100;

export interface DemoOptions {
  /** Use this NATS instead of starting a nats-server. */
  nats?: string;
  /** The agents' heartbeat interval (default 1s). */
  heartbeat?: string;
  /** Stop after this long even if the script is not over. */
  duration?: string;
  /** The daemon API's port on 127.0.0.1 (default: a free one). */
  port?: string | number;
  /** The API password (default: $HM_API_PASSWORD, else a generated one). */
  password?: string;
  /** Write the daemon's log (JSON lines) to this file; otherwise only its warnings and errors are shown. */
  log?: string;
  /** Where the demo's lines go (default stdout). */
  write?: (s: string) => void;
  /** Stop on SIGINT/SIGTERM (default true; a second signal exits at once). */
  signals?: boolean;
  /** Stops the demo as a signal would. */
  abort?: AbortSignal;
  env?: NodeJS.ProcessEnv;
}

/** A bad option value: the message says which and why (exit 2). */
export class DemoUsageError extends Error {}

interface Settings {
  heartbeatMs: number;
  durationMs: number | undefined;
  port: number;
  password: string;
}

function settings(o: DemoOptions, env: NodeJS.ProcessEnv): Settings {
  const duration = (name: string, v: string) => {
    try {
      return parseDuration(v);
    } catch (err) {
      throw new DemoUsageError(`--${name}: ${(err as Error).message}`, { cause: err });
    }
  };
  const heartbeatMs = duration('heartbeat', o.heartbeat ?? '1s');
  if (heartbeatMs < 200 || heartbeatMs > 10_000) throw new DemoUsageError(`--heartbeat must be between 200ms and 10s, not "${o.heartbeat}"`);
  const durationMs = o.duration === undefined ? undefined : duration('duration', o.duration);
  if (durationMs !== undefined && durationMs <= 0) throw new DemoUsageError(`--duration must be more than 0, not "${o.duration}"`);
  const port = Number(o.port ?? 0);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new DemoUsageError(`--port must be a port number (0: any free one), not "${o.port}"`);
  if (o.nats !== undefined && !/^(nats|tls):\/\/./.test(o.nats))
    throw new DemoUsageError(`--nats must be a URL such as nats://127.0.0.1:4222, not "${o.nats}"`);
  const password = o.password ?? (env.HM_API_PASSWORD || randomBytes(9).toString('base64url'));
  if (password === '') throw new DemoUsageError('--password must not be empty');
  return { heartbeatMs, durationMs, port, password };
}

/** A string as a YAML double-quoted scalar, `${` kept literal. */
const yamlString = (s: string) => JSON.stringify(s).replace(/\$\{/g, '$${');

/** The demo's config: the hm9000 preset at the demo's heartbeat, pointed at the demo's NATS, bulk API and port. */
export function demoConfig(a: { heartbeatMs: number; nats: string; ccUrl: string; ccPassword: string; port: number; password: string }): string {
  return [
    '# hmgate demo: the hm9000 preset, every timing in heartbeats, at the demo heartbeat',
    'extends: hm9000',
    'foundation: demo',
    `heartbeat_interval: ${a.heartbeatMs}ms`,
    `bus: { servers: [${yamlString(a.nats)}] }`,
    'store: { plugin: memory }',
    'sources:',
    // Saved as often, measured in heartbeats, as HM9000's 1000 ms at its 10 s heartbeat.
    '  heartbeats: { sync_interval: 0.1hb, save_deadline: 1hb }',
    `  desired: { url: ${yamlString(a.ccUrl)}, user: bulk_api, password: ${yamlString(a.ccPassword)} }`,
    `api: { listen: "127.0.0.1:${a.port}", user: ${API_USER}, password: ${yamlString(a.password)} }`,
    '',
  ].join('\n');
}

/** Seconds since t0, right-aligned. */
const clock = (t0: number, at = Date.now()) => `${((at - t0) / 1000).toFixed(1).padStart(6)}s`;

const sleepUnless = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done);
  });

/** What the daemon decided, as the demo shows it. */
interface Seen {
  record: DecisionRecord;
  app: number;
  newVersion: boolean;
}

/**
 * Runs the demo; resolves with the exit code (0 after the script, --duration or a signal). Throws
 * DemoUsageError on a bad option, and an Error naming the fix when something cannot start (after
 * stopping whatever it had started).
 */
export async function runDemo(o: DemoOptions = {}): Promise<number> {
  const t0 = Date.now();
  const env = o.env ?? process.env;
  const write = o.write ?? ((s: string) => void process.stdout.write(s));
  const line = (who: string, text: string) => write(`${clock(t0)}  ${who.padEnd(8)}${text}\n`);
  const s = settings(o, env);
  const hb = s.heartbeatMs;

  const stop = new AbortController();
  const aborted = stop.signal;
  const onAbort = () => stop.abort();
  o.abort?.addEventListener('abort', onAbort);
  if (o.abort?.aborted) stop.abort();
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(1);
    signalled = true;
    line('demo:', `${signal} received: stopping`);
    stop.abort();
  };
  if (o.signals !== false) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  const endTimer =
    s.durationMs === undefined
      ? undefined
      : setTimeout(() => {
          line('demo:', `--duration ${o.duration} is up: stopping`);
          stop.abort();
        }, s.durationMs);

  // Everything started, stopped in reverse order at the end, whatever happens.
  const stops: { what: string; stop: () => Promise<unknown> }[] = [];
  let logFile: WriteStream | undefined;
  let poller: ReturnType<typeof setInterval> | undefined;
  try {
    const dir = await mkdtemp(join(tmpdir(), 'hmgate-demo-'));
    stops.push({ what: 'the config directory', stop: () => rm(dir, { recursive: true, force: true }) });

    write(`hmgate demo: a simulated foundation and a real daemon (preset hm9000, heartbeat ${hb / 1000}s)\n`);
    let natsUrl = o.nats;
    let natsNote = 'given with --nats';
    if (natsUrl === undefined) {
      const nats = await DemoNatsServer.start();
      stops.push({ what: `nats-server (pid ${nats.pid})`, stop: () => nats.stop() });
      natsUrl = nats.url;
      natsNote = `nats-server pid ${nats.pid}, started for the demo`;
    }
    write(`  NATS        ${natsUrl}  (${natsNote})\n`);
    if (aborted.aborted) return 0;

    // The foundation of the simulator below, which the script changes.
    const f = new DemoFoundation({ agents: AGENTS, instancesPerAgent: PER_AGENT, instancesPerApp: PER_APP, churn: 0, seed: 1 }, Date.now());
    // App 1 runs 1 of its 3 slots until it scales up.
    f.setDesiredInstances(SCALING_APP, 1);
    for (let i = 1; i < PER_APP; i++) f.remove(SCALING_APP * PER_APP + i);
    const ccPort = await freePort();

    const file = join(dir, 'hmgate-demo.yaml');
    const ccPassword = randomBytes(9).toString('base64url');
    await writeFile(file, demoConfig({ heartbeatMs: hb, nats: natsUrl, ccUrl: `http://127.0.0.1:${ccPort}`, ccPassword, port: s.port, password: s.password }));
    const loaded = await loadConfig(file, { env: {} });

    // The simulator of `hmgate simulate --live --obey`, on the demo's foundation (which can change).
    const sim = new LiveSimulator(
      liveOptionsFromConfig(loaded, { agents: AGENTS, instancesPerAgent: PER_AGENT, instancesPerApp: PER_APP, churn: 0, seed: 1, obey: true, ccPort }),
      undefined,
      // The demo's foundation: a LiveFoundation whose desired state and agents the script changes.
      f,
    );
    await sim.start();
    stops.push({ what: 'the simulator', stop: () => sim.stop() });
    if (aborted.aborted) return 0;
    const appName = (a: number) => `app ${a}`;
    write(
      `  simulator   ${AGENTS} agents × ${PER_AGENT} instances, ${f.apps} apps of ${PER_APP} (${appName(SCALING_APP)} runs 1 of ${PER_APP} for now), obeying orders; bulk API ${sim.ccUrl}\n`,
    );

    let loggers: LoggerFactory;
    if (o.log) {
      const out = createWriteStream(o.log, { flags: 'a' });
      logFile = out;
      loggers = createLoggerFactory({ foundation: 'demo', level: 'info', destination: { write: (l: string) => void out.write(l) } });
    } else {
      loggers = createLoggerFactory({ foundation: 'demo', level: 'warn', destination: { write: (l: string) => daemonLogLine(l) } });
    }
    function daemonLogLine(text: string) {
      try {
        const r = JSON.parse(text) as { level?: string; msg?: string; component?: string };
        line('daemon:', `[${r.level ?? 'log'}] ${r.msg ?? ''}`);
      } catch {
        line('daemon:', text.trim());
      }
    }
    const engine = new Engine(loaded, { loggers });
    await engine.start();
    stops.push({ what: 'the daemon', stop: () => engine.stop() });
    if (aborted.aborted) return 0;
    const api = engine.apiAddress;
    const base = api ? `http://127.0.0.1:${api.port}` : '(API disabled)';
    write(
      [
        `  daemon      status     curl -su ${API_USER}:${s.password} ${base}/v1/status`,
        `              decisions  curl -su ${API_USER}:${s.password} ${base}/v1/decisions`,
        `              metrics    ${base}/metrics${o.log ? `; log ${o.log}` : ''}`,
        `  Ctrl-C stops the demo${s.durationMs === undefined ? '' : `; it stops by itself after ${s.durationMs / 1000}s`}.`,
        '',
      ].join('\n'),
    );

    // The daemon's decisions, read from its audit: every start and stop sent or held back.
    const seen: Seen[] = [];
    let lastSeq = 0;
    const label = (r: DecisionRecord, a: number) => {
      const v = a >= 0 && r.version !== appVersion(a) ? ' (v2)' : a === NEW_VERSION_APP && f.desiredApp(a).version !== appVersion(a) ? ' (v1)' : '';
      return `${a >= 0 ? appName(a) : r.app}${v} index ${r.index ?? '?'}`;
    };
    const facts = (r: DecisionRecord) => {
      const desired = r.facts.desired_instances;
      const running = r.facts.running_indices;
      return desired === undefined ? '' : ` (desired ${String(desired)}, running ${Array.isArray(running) && running.length ? running.join(',') : 'none'})`;
    };
    const readAudit = () => {
      for (const r of engine.audit.after(lastSeq)) {
        lastSeq = r.seq;
        if (r.outcome === 'enqueued') continue;
        const a = appOf(r.app);
        seen.push({ record: r, app: a, newVersion: a >= 0 && r.version !== appVersion(a) });
        const what = `${r.action.toUpperCase()} ${label(r, a)}, ${r.reason}`;
        write(
          r.outcome === 'sent'
            ? `${clock(t0)}  daemon→ ${what}${facts(r)}\n`
            : `${clock(t0)}  daemon: held back ${what}: ${r.why ?? ''}${r.detail ? ` (${r.detail})` : ''}\n`,
        );
      }
    };
    poller = setInterval(readAudit, POLL_MS);
    const sent = (match: (x: Seen) => boolean) => seen.filter((x) => x.record.outcome === 'sent' && match(x));

    const waitFor = async (cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> => {
      const deadline = Date.now() + timeoutMs;
      while (!aborted.aborted) {
        readAudit();
        if (await cond()) return true;
        if (Date.now() >= deadline) return false;
        await sleepUnless(POLL_MS, aborted);
      }
      return false;
    };
    /** Until nothing new was decided for `quietMs` (at most `maxMs`). */
    const settle = async (quietMs: number, maxMs: number) => {
      const until = Date.now() + maxMs;
      let count = seen.length;
      let since = Date.now();
      await waitFor(() => {
        if (seen.length !== count) [count, since] = [seen.length, Date.now()];
        return Date.now() - since >= quietMs || Date.now() >= until;
      }, maxMs);
    };

    line('demo:', `waiting for the daemon to trust its state: heartbeats for ${loaded.config.freshness.actual_ttl / 1000}s and the bulk API read`);
    const fresh = await waitFor(async () => {
      const st = await engine.status();
      return st.actual.fresh && st.desired.fresh;
    }, 60 * hb);
    if (fresh) line('daemon:', 'actual and desired state are fresh: from now on it acts on what differs');
    else if (!aborted.aborted) line('demo:', 'the daemon is not fresh yet (see /v1/status); playing the script anyway');

    const agentOfIndex = (a: number, i: number) => f.agentOf(a * PER_APP + i);
    const onAgent = (d: number) =>
      Array.from({ length: f.instances }, (_, g) => g)
        .filter((g) => f.agentOf(g) === d && f.currentGuid(g) !== undefined)
        .map((g) => `${appName(Math.floor(g / PER_APP))} index ${g % PER_APP}`);
    const option = (id: string, key: string) => Number(loaded.stages.find((x) => x.id === id)?.options[key] ?? NaN);
    const secs = (ms: number) => `${Number((ms / 1000).toFixed(2))}s`;
    const poll = secs(option('desired', 'poll_interval'));
    const grace = secs(option('missing', 'grace_period'));
    const ttl = secs(option('heartbeats', 'heartbeat_ttl'));
    const steps: { say: () => string; act: () => void; done: () => boolean }[] = [
      {
        say: () => `${appName(CRASHING_APP)} index 1 crashes: agent ${agentOfIndex(CRASHING_APP, 1)} reports it CRASHED (a first crash is restarted at once)`,
        act: () => f.crash(CRASHING_APP * PER_APP + 1, Date.now()),
        done: () => sent((x) => x.app === CRASHING_APP && x.record.action === 'start' && x.record.index === 1).length > 0,
      },
      {
        say: () =>
          `${appName(SCALING_APP)} scales up from 1 to ${PER_APP} instances in the bulk API (the daemon reads it every ${poll}, then gives missing instances ${grace} of grace)`,
        act: () => f.setDesiredInstances(SCALING_APP, PER_APP),
        done: () => new Set(sent((x) => x.app === SCALING_APP && x.record.action === 'start').map((x) => x.record.index)).size >= PER_APP - 1,
      },
      {
        say: () =>
          `agent ${DYING_AGENT} stops heartbeating for good; it ran ${onAgent(DYING_AGENT).join(', ')} (gone ${ttl} after its last heartbeat, then ${grace} of grace; agent ${STAND_IN} runs what is started in their place)`,
        act: () => {
          f.die(DYING_AGENT, STAND_IN);
          sim.silence([DYING_AGENT]);
        },
        done: () =>
          onAgent(DYING_AGENT).every((name) => sent((x) => x.record.action === 'start' && name === `${appName(x.app)} index ${x.record.index}`).length > 0),
      },
      {
        say: () => `${appName(NEW_VERSION_APP)} changes version in the bulk API, v1 → v2 (its v1 instances are now extra, its v2 ones missing)`,
        act: () => f.setDesiredVersion(NEW_VERSION_APP, newVersion(NEW_VERSION_APP)),
        done: () => new Set(sent((x) => x.app === NEW_VERSION_APP && x.newVersion && x.record.action === 'start').map((x) => x.record.index)).size >= PER_APP,
      },
    ];
    for (const step of steps) {
      if (aborted.aborted) break;
      await settle(2 * hb, 10 * hb);
      if (aborted.aborted) break;
      line('demo:', step.say());
      step.act();
      if (!(await waitFor(step.done, 40 * hb)) && !aborted.aborted) line('demo:', 'the daemon did not answer this in time (see /v1/status)');
    }
    if (!aborted.aborted) {
      await settle(3 * hb, 15 * hb);
      readAudit();
      line('demo:', 'the script is over');
    }
    clearInterval(poller);
    poller = undefined;
    readAudit();

    const byReason = (action: 'start' | 'stop') => {
      const counts = new Map<string, number>();
      for (const x of sent((y) => y.record.action === action)) counts.set(x.record.reason, (counts.get(x.record.reason) ?? 0) + 1);
      const n = [...counts.values()].reduce((t, c) => t + c, 0);
      return `${n} ${action}${n === 1 ? '' : 's'}${n ? ` (${[...counts].map(([r, c]) => `${r} ${c}`).join(', ')})` : ''}`;
    };
    const held = seen.filter((x) => x.record.outcome === 'suppressed').length;
    const sim0 = sim.summary();
    write(
      [
        `the daemon sent ${byReason('start')} and ${byReason('stop')}, and held back ${held}`,
        `the simulator obeyed ${sim0.starts.obeyed} of the starts and ${sim0.stops.obeyed} of the stops it heard (ignored ${sim0.starts.ignored + sim0.stops.ignored}); its agents sent ${sim0.heartbeats} heartbeats`,
        '',
      ].join('\n'),
    );
    return 0;
  } finally {
    if (poller) clearInterval(poller);
    clearTimeout(endTimer);
    const what = stops.map((x) => x.what).filter((w) => w !== 'the config directory');
    for (const x of stops.reverse()) {
      await x.stop().catch((err: unknown) => line('demo:', `stopping ${x.what} failed: ${errorText(err)}`));
    }
    if (logFile) await new Promise<void>((r) => logFile!.end(() => r()));
    if (what.length) line('demo:', `stopped ${what.reverse().join(', ')}`);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    o.abort?.removeEventListener('abort', onAbort);
  }
}

interface DemoCommandOptions {
  nats?: string;
  heartbeat?: string;
  duration?: string;
  port?: string;
  password?: string;
  log?: string;
}

/** Adds `hmgate demo` to a commander program. */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .summary('a one-minute demo: nats-server, a simulated foundation and the daemon; prints every decision it sends')
    .description(
      'a simulated foundation (nats-server, agents heartbeating, a bulk API) and the daemon with the hm9000 preset, in under a minute: an instance crashes, an app scales up, an agent dies, an app changes version; prints every decision the daemon sends',
    )
    .option('--nats <url>', 'use this NATS instead of starting a nats-server (never one a Cloud Controller listens to: the demo sends start and stop orders)')
    .option('--heartbeat <time>', "the agents' heartbeat interval; every timing of the preset scales with it (200ms-10s)", '1s')
    .option('--duration <time>', 'stop after this long even if the script is not over')
    .option('--port <n>', "the daemon API's port on 127.0.0.1 (default: a free one)")
    .option('--password <pw>', `the API password (user ${API_USER}; default: $HM_API_PASSWORD, else a generated one)`)
    .option('--log <file>', "append the daemon's log (JSON lines) to this file; otherwise only its warnings and errors are shown")
    .action(async function (this: Command, opts: DemoCommandOptions) {
      let code: number;
      try {
        code = await runDemo(opts);
      } catch (err) {
        if (err instanceof DemoUsageError) this.error(`error: ${err.message}`, { exitCode: 2 });
        process.stderr.write(`hmgate: ${errorText(err)}\n`);
        code = 1;
      }
      process.exitCode = code;
      // Everything was stopped; should anything still hold the event loop, do not wait for it.
      setTimeout(() => process.exit(code), 2_000).unref();
    });
}
