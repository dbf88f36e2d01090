/**
 * The chaos suite's foundation: a real etcd and nats-server (with credentials, so a daemon can be
 * refused), the live simulator in this process (real dea.heartbeat on NATS, the bulk API behind a
 * proxy that can fail, obeying hm9000.start/stop), the order recorder judging every order against
 * the simulator's truth, and `hmgate run` daemons (HM9000 preset, etcd store, short lease) whose
 * /v1/status is sampled all along, so takeover times come from what the daemons said.
 *
 * Two sizes: the CI size (default; a few seconds per fault) and the larger one of `npm run chaos`
 * (HMGATE_CHAOS_SIZE=large). Every timing is in heartbeats, as the preset's are.
 */
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { LiveSimulator } from '../../src/sim/live.js';
import { startCcFaultProxy, type CcFaultProxy } from '../helpers/cc-fault-proxy.js';
import { HmgateDaemon } from '../helpers/hmgate-process.js';
import { freePort, startEtcd, startNatsServer, waitFor, type EtcdHandle, type NatsServerHandle } from '../helpers/index.js';
import { OrderRecorder } from './recorder.js';

export interface ChaosSize {
  name: 'ci' | 'large';
  hbMs: number;
  leaseS: number;
  agents: number;
  instancesPerAgent: number;
  instancesPerApp: number;
  /** Instances made to vanish in each fault. */
  vanish: number;
  /** Extra config lines for the collapse fault (min_agents under the CI size's agent count). */
  collapse: string;
}

const SIZES: Record<ChaosSize['name'], ChaosSize> = {
  ci: {
    name: 'ci',
    hbMs: 500,
    leaseS: 2,
    agents: 6,
    instancesPerAgent: 4,
    instancesPerApp: 3,
    vanish: 1,
    collapse: 'freshness: { collapse: { min_agents: 4 } }',
  },
  large: {
    name: 'large',
    hbMs: 1000,
    leaseS: 3,
    agents: 60,
    instancesPerAgent: 20,
    instancesPerApp: 4,
    vanish: 3,
    collapse: 'freshness: { collapse: { min_agents: 50 } }',
  },
};

export const SIZE: ChaosSize = SIZES[process.env.HMGATE_CHAOS_SIZE === 'large' ? 'large' : 'ci'];
export const HB = SIZE.hbMs;
export const LEASE_MS = SIZE.leaseS * 1000;
/** freshness.actual_ttl (3hb), the missing grace period (3hb), freshness.desired_ttl (12hb), sources.heartbeats.heartbeat_ttl (3hb) of the hm9000 preset. */
export const ACTUAL_TTL = 3 * HB;
export const GRACE = 3 * HB;
export const DESIRED_TTL = 12 * HB;
export const HEARTBEAT_TTL = 3 * HB;
/** After the last expected order: long enough for a second daemon's or a repeated order to show. */
export const SETTLE = 4 * HB;

const NATS_USER = 'hm';
const NATS_PASSWORD = 'nats-secret';
const API_AUTH = `Basic ${Buffer.from('magnet:pw').toString('base64')}`;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Sample {
  at: number;
  daemon: string;
  ok: boolean;
  leader: boolean;
  actualFresh: boolean;
  actualReason: string;
  desiredFresh: boolean;
  problems: string[];
}

export interface Daemon {
  name: string;
  /** Replaced by a new process under the same name (recover()): no longer watched. */
  retired?: boolean;
  port: number;
  proc: HmgateDaemon;
  status(): Promise<Record<string, any>>;
  /** An API request with the basic-auth credentials. */
  api(path: string, init?: RequestInit): Promise<Response>;
  metrics(): Promise<string>;
}

export interface DaemonOptions {
  /** NATS password this daemon uses (a wrong one: NATS refuses it). */
  natsPassword?: string;
  /** Extra top-level config lines. */
  extra?: string[];
}

export class Cluster {
  /** Start of the current fault (beginFault()); times in messages are relative to it. */
  t0 = Date.now();
  /** The daemons in service; retired ones are kept in `all` until stop(). */
  daemons: Daemon[] = [];
  private readonly all: Daemon[] = [];
  private readonly options = new Map<string, DaemonOptions>();
  private respawning: Promise<unknown> = Promise.resolve();
  readonly samples: Sample[] = [];
  /** What the test did and when, for failure messages. */
  marks: { at: number; what: string }[] = [];
  private watching = true;
  private readonly loops: Promise<void>[] = [];
  private nc: NatsConnection | undefined;

  private constructor(
    readonly dir: string,
    readonly etcd: EtcdHandle,
    readonly nats: NatsServerHandle,
    readonly sim: LiveSimulator,
    readonly cc: CcFaultProxy,
    private readonly judge: { recorder: OrderRecorder },
    private readonly extra: string[],
  ) {}

  /** The recorder of the current fault. */
  get recorder(): OrderRecorder {
    return this.judge.recorder;
  }

  /** Starts a replacement, under the same name, for every daemon that exited (not waited for). */
  respawn(): void {
    const dead = this.daemons.filter((d) => !d.proc.running);
    for (const d of dead) d.retired = true;
    this.daemons = this.daemons.filter((d) => !d.retired);
    const started = Promise.all(dead.map((d) => this.addDaemon(d.name, this.options.get(d.name))));
    started.catch(() => undefined);
    this.respawning = Promise.all([this.respawning, started]);
  }

  /** A new fault on this cluster: a new recorder (every order from now on), new marks, a new t0. */
  beginFault(): void {
    this.judge.recorder = new OrderRecorder(this.sim.foundation, (d) => this.sim.isSilent(d));
    this.marks = [];
    this.t0 = Date.now();
  }

  /**
   * Undoes whatever a fault left behind, so the next fault starts from a whole foundation: etcd and
   * every daemon running, the CC answering, every agent heartbeating, every instance running (those
   * still missing are started out of band), and a fresh leader.
   */
  async recover(): Promise<void> {
    this.etcd.resume();
    this.cc.setFault('none');
    this.sim.unsilence();
    const f = this.sim.foundation;
    for (let g = 0; g < f.instances; g++) {
      if (f.currentGuid(g) !== undefined) continue;
      const a = Math.floor(g / f.o.instancesPerApp);
      f.start(f.desiredApp(a).id, f.desiredApp(a).version, g % f.o.instancesPerApp, Date.now());
    }
    for (const d of this.daemons) if (d.proc.running) d.proc.child.kill('SIGCONT');
    this.respawn();
    await this.respawning;
    await this.freshLeader();
    await sleep(HB);
  }

  /** etcd, nats-server, the simulated foundation and its CC proxy; no daemon yet. */
  static async start(opts: { extra?: string[] } = {}): Promise<Cluster> {
    const dir = await mkdtemp(join(tmpdir(), 'hmgate-chaos-'));
    const [etcd, nats] = await Promise.all([startEtcd(), startNatsServer({ user: NATS_USER, password: NATS_PASSWORD })]);
    const judge = {} as { recorder: OrderRecorder };
    const sim = new LiveSimulator({
      agents: SIZE.agents,
      instancesPerAgent: SIZE.instancesPerAgent,
      instancesPerApp: SIZE.instancesPerApp,
      churn: 0,
      seed: 1,
      heartbeatMs: HB,
      obey: true,
      nats: { servers: [nats.url], user: NATS_USER, password: NATS_PASSWORD },
      heartbeatSubject: 'dea.heartbeat',
      startSubject: 'hm9000.start',
      stopSubject: 'hm9000.stop',
      cc: { host: '127.0.0.1', port: 0, user: 'bulk_api', password: 'bulk-password' },
      onOrder: (action, body) => judge.recorder.observe(action, body),
    });
    judge.recorder = new OrderRecorder(sim.foundation, (d) => sim.isSilent(d));
    let cc: CcFaultProxy | undefined;
    try {
      await sim.start();
      cc = await startCcFaultProxy(sim.ccUrl);
    } catch (err) {
      await sim.stop();
      await Promise.all([nats.stop(), etcd.stop()]);
      throw err;
    }
    const cluster = new Cluster(dir, etcd, nats, sim, cc, judge, opts.extra ?? []);
    cluster.mark('etcd, nats-server and the foundation are up');
    return cluster;
  }

  mark(what: string): number {
    const at = Date.now();
    this.marks.push({ at, what });
    return at;
  }

  /** Starts `hmgate run` on a config of its own; resolves once its API answers. */
  async addDaemon(name: string, o: DaemonOptions = {}): Promise<Daemon> {
    this.options.set(name, o);
    const port = await freePort();
    const file = join(this.dir, `${name}.yaml`);
    await writeFile(
      file,
      [
        'extends: hm9000',
        'foundation: chaos',
        `heartbeat_interval: ${HB}ms`,
        `leader: { ttl: ${SIZE.leaseS}s }`,
        `store: { plugin: etcd, endpoints: ["${this.etcd.endpoint}"], prefix: /chaos, dial_timeout: 1s }`,
        `bus: { servers: ["${this.nats.url}"], user: ${NATS_USER}, password: "${o.natsPassword ?? NATS_PASSWORD}", name: "hmgate-${name}" }`,
        'sources:',
        `  heartbeats: { sync_interval: ${Math.min(200, HB / 5)}ms }`,
        `  desired: { url: "${this.cc.url}", user: bulk_api, password: bulk-password }`,
        `api: { listen: "127.0.0.1:${port}", password: pw }`,
        ...this.extra,
        ...(o.extra ?? []),
        '',
      ].join('\n'),
    );
    const proc = HmgateDaemon.start(file);
    const api = (path: string, init: RequestInit = {}) =>
      fetch(`http://127.0.0.1:${port}${path}`, { ...init, headers: { Authorization: API_AUTH, ...(init.headers ?? {}) }, signal: AbortSignal.timeout(1_000) });
    const d: Daemon = {
      name,
      port,
      proc,
      api,
      status: async () => {
        const res = await api('/v1/status');
        if (!res.ok) throw new Error(`GET /v1/status of ${name}: ${res.status}`);
        return (await res.json()) as Record<string, any>;
      },
      metrics: async () => (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2_000) })).text(),
    };
    this.daemons.push(d);
    this.all.push(d);
    // A daemon that exits (a config it refuses, a crash) fails at once, with its output.
    const exited = proc.wait().then((r) => {
      throw new Error(`daemon ${name} exited (${r.code ?? r.signal}) before its API answered:\n${r.stderr.slice(-3000)}\n${r.stdout.slice(-3000)}`);
    });
    exited.catch(() => undefined);
    await Promise.race([waitFor(() => d.status(), { what: `daemon ${name}'s API`, timeoutMs: 20_000, intervalMs: 100 }), exited]);
    this.loops.push(this.watch(d));
    this.mark(`daemon ${name} answers`);
    return d;
  }

  /** The daemons a, b, c (started together). */
  async addDaemons(names = ['a', 'b', 'c'], o: DaemonOptions = {}): Promise<Daemon[]> {
    return Promise.all(names.map((n) => this.addDaemon(n, o)));
  }

  /** Samples a daemon's /v1/status every 100 ms until stop(). */
  private async watch(d: Daemon): Promise<void> {
    while (this.watching && !d.retired) {
      const at = Date.now();
      try {
        const s = await d.status();
        this.samples.push({
          at,
          daemon: d.name,
          ok: true,
          leader: s.leader === true,
          actualFresh: s.actual?.fresh === true,
          actualReason: String(s.actual?.reason ?? ''),
          desiredFresh: s.desired?.fresh === true,
          problems: Array.isArray(s.problems) ? s.problems.map((p: { code?: unknown }) => String(p.code)) : [],
        });
      } catch {
        this.samples.push({ at, daemon: d.name, ok: false, leader: false, actualFresh: false, actualReason: 'no answer', desiredFresh: false, problems: [] });
      }
      await sleep(100);
    }
  }

  /** A leader that says actual and desired state are fresh (asked now, not from the samples). */
  async freshLeader(timeoutMs = LEASE_MS + 12 * HB + 10_000, among?: Daemon[]): Promise<Daemon> {
    const d = await waitFor(
      async () => {
        for (const d of among ?? this.daemons) {
          const s = await d.status().catch(() => undefined);
          if (s?.leader && s.actual?.fresh && s.desired?.fresh) return d;
        }
        return undefined;
      },
      { what: 'a fresh leader', timeoutMs, intervalMs: 100 },
    );
    this.mark(`${d.name} leads, fresh`);
    return d;
  }

  /** The daemon that says it leads now (fresh or not), asked now. */
  async leaderNow(timeoutMs = LEASE_MS + 10 * HB + 5_000): Promise<Daemon> {
    return waitFor(
      async () => {
        for (const d of this.daemons) if ((await d.status().catch(() => undefined))?.leader) return d;
        return undefined;
      },
      { what: 'a leader', timeoutMs, intervalMs: 100 },
    );
  }

  /**
   * How long after `from` a healthy leader (leader, actual and desired fresh) was in place again,
   * from the status samples: 0 when one was in place throughout; otherwise from `from` to the first
   * sample that shows one after the first moment none did. `exclude`: daemons that do not count
   * (the one the fault hit). undefined: none was seen.
   */
  takeover(from: number, exclude: string[] = []): number | undefined {
    const latest = new Map<string, Sample>();
    const healthy = () => [...latest.values()].some((s) => s.ok && s.leader && s.actualFresh && s.desiredFresh && !exclude.includes(s.daemon));
    let gap = false;
    const before = this.samples.filter((s) => s.at < from).sort((a, b) => a.at - b.at);
    for (const s of before) latest.set(s.daemon, s);
    for (const s of this.samples.filter((x) => x.at >= from).sort((a, b) => a.at - b.at)) {
      latest.set(s.daemon, s);
      if (!gap && !healthy()) gap = true;
      else if (gap && healthy()) return s.at - from;
    }
    return gap ? undefined : 0;
  }

  /** Status samples of one daemon in [from, to). */
  samplesOf(daemon: string, from = 0, to = Infinity): Sample[] {
    return this.samples.filter((s) => s.daemon === daemon && s.at >= from && s.at < to);
  }

  /** Publishes raw bytes on a subject (the test's own connection). */
  async publish(subject: string, data: Uint8Array | string): Promise<void> {
    this.nc ??= await connect({ servers: this.nats.url, user: NATS_USER, pass: NATS_PASSWORD, name: 'chaos-test' });
    this.nc.publish(subject, typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }

  /** Distinct instances on distinct agents (none of `avoidAgents`), none picked before in this cluster. */
  pick(n: number, avoidAgents: Iterable<number> = []): number[] {
    const f = this.sim.foundation;
    const avoid = new Set(avoidAgents);
    const out: number[] = [];
    for (let k = 0; k < f.instances && out.length < n; k++) {
      const g = (k * 7 + 1) % f.instances;
      const d = f.agentOf(g);
      if (avoid.has(d) || this.picked.has(g) || f.currentGuid(g) === undefined) continue;
      avoid.add(d);
      this.picked.add(g);
      out.push(g);
    }
    if (out.length < n) throw new Error(`only ${out.length} of ${n} instances could be picked`);
    return out;
  }
  private readonly picked = new Set<number>();

  /** Marks and orders since t0, for failure messages. */
  story(): string {
    const marks = this.marks.map((m) => `  +${((m.at - this.t0) / 1000).toFixed(2)}s ${m.what}`).join('\n');
    return `what the test did:\n${marks || '  (nothing)'}\norders heard:\n${this.recorder.format(undefined, this.t0)}`;
  }

  /** Stops everything this cluster started, whatever state the test left it in. */
  async stop(): Promise<void> {
    this.watching = false;
    this.etcd.resume();
    for (const d of this.all) if (d.proc.running) d.proc.child.kill('SIGCONT');
    await Promise.all(this.all.map((d) => d.proc.stop('SIGKILL')));
    await Promise.all(this.loops);
    await this.nc?.close().catch(() => undefined);
    await this.sim.stop();
    await this.cc.stop();
    await Promise.all([this.nats.stop(), this.etcd.stop()]);
    await rm(this.dir, { recursive: true, force: true });
  }
}

/** One row of the "Faults survived" table. */
export interface FaultRow {
  fault: string;
  takeoverMs: number | undefined;
  starts: number;
  wrongStarts: number;
  staleStarts: number;
  duplicates: number;
  wrongStops: number;
  startsPerVanished: number[];
}

export function row(fault: string, c: Cluster, takeoverMs: number | undefined): FaultRow {
  const r = c.recorder;
  return {
    fault,
    takeoverMs,
    starts: r.orders.filter((o) => o.action === 'start').length,
    wrongStarts: r.with('wrong_start').length,
    staleStarts: r.with('stale_start').length,
    duplicates: r.with('duplicate').length,
    wrongStops: r.with('wrong_stop').length,
    startsPerVanished: r.startsFor().map((v) => v.starts),
  };
}

function perVanished(n: number[]): string {
  if (n.length === 0) return '–';
  const counts = new Map<number, number>();
  for (const x of n) counts.set(x, (counts.get(x) ?? 0) + 1);
  return [...counts]
    .sort((a, b) => a[0] - b[0])
    .map(([starts, k]) => `${starts} (×${k})`)
    .join(', ');
}

const TABLE_HEAD = [
  '| fault | takeover time | starts | wrong starts | starts while stale | duplicate sends | wrong stops | starts per vanished instance |',
  '|---|---|---|---|---|---|---|---|',
];

function tableLine(r: FaultRow): string {
  const takeover = r.takeoverMs === undefined ? 'none seen' : `${(r.takeoverMs / 1000).toFixed(1)} s`;
  return `| ${r.fault} | ${takeover} | ${r.starts} | ${r.wrongStarts} | ${r.staleStarts} | ${r.duplicates} | ${r.wrongStops} | ${perVanished(r.startsPerVanished)} |`;
}

export function tableCaption(size: ChaosSize = SIZE): string {
  return `Chaos suite, ${size.name} size: ${size.agents} agents × ${size.instancesPerAgent} instances (${size.agents * size.instancesPerAgent} instances, apps of ${size.instancesPerApp}), heartbeat ${size.hbMs} ms, leader.ttl ${size.leaseS} s, three daemons on one etcd.`;
}

export function markdownTable(rows: FaultRow[], size: ChaosSize = SIZE): string {
  return `${tableCaption(size)}\n\n${[...TABLE_HEAD, ...rows.map(tableLine)].join('\n')}\n`;
}

/**
 * Prints the rows of one test file; with HMGATE_CHAOS_OUT set (npm run chaos) also leaves them there
 * as JSON, rendered, for test/chaos/run.mjs to put into one table.
 */
export async function publishRows(file: string, rows: FaultRow[]): Promise<void> {
  if (rows.length === 0) return;
  console.log(`\n${markdownTable(rows)}`);
  const out = process.env.HMGATE_CHAOS_OUT;
  if (out) {
    await mkdir(out, { recursive: true });
    const rendered = { caption: tableCaption(), head: TABLE_HEAD, rows: rows.map((r) => ({ ...r, line: tableLine(r) })) };
    await writeFile(join(out, `${file}.json`), JSON.stringify(rendered, null, 2));
  }
}

/**
 * One cluster for every fault of a describe block (start-up is much of a fault's time): started
 * with its daemons before the first, stopped after the last, and before each fault restored to a
 * whole foundation with a fresh leader and a recorder of its own. Returns the cluster's getter.
 */
export function sharedCluster(timeoutMs: number, opts: { extra?: string[] } = {}): () => Cluster {
  let shared: Cluster | undefined;
  beforeAll(async () => {
    shared = await Cluster.start(opts);
    await shared.addDaemons();
  }, timeoutMs);
  afterAll(async () => {
    await shared?.stop();
  }, timeoutMs);
  beforeEach(async () => {
    await shared!.recover();
    shared!.beginFault();
  }, timeoutMs);
  return () => shared!;
}
