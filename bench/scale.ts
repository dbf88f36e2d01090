/**
 * bench/scale: hmgate at 10 k, 100 k and 1 M instances with the etcd store, and the same load
 * through a store with HM9000's layout (bench/hm9000-layout-store.ts), to find where that one
 * loses freshness. Figures, not a test.
 *
 * Each run starts, on free loopback ports: a fresh etcd and nats-server; the live simulator
 * (`hmgate simulate --live`, its own process: agents × 100 instances, apps of 10, 1 % of the
 * instances restarted every heartbeat as in HM9000's scale measurements, heartbeat 10 s spread
 * evenly, and the bulk API); then `hmgate run` (hm9000 preset, the store under test). It waits for
 * the daemon to be fresh (actual and desired, per /v1/status, polled every second) and then
 * observes it for several heartbeat TTLs:
 *
 *   - fresh: yes if it stayed fresh through the observation; LOST if it became fresh and lost it,
 *     NEVER if it did not become fresh within the wait;
 *   - ingest lag: restarted instances carry the time their first heartbeat was built in their
 *     guid; a watch on the store's keys in etcd notes when each is first written (p50 / p99);
 *   - cycle: hmgate_cycle_duration_seconds from the daemon's /metrics, scraped every --scrape
 *     seconds (as Prometheus would): the first fresh cycle (every app analysed), then the mean and
 *     the largest per-scrape mean of the later ones;
 *   - etcd writes/s: etcd's own etcd_mvcc_put_total and etcd_mvcc_delete_total over the window;
 *   - RSS (end, and peak VmHWM) and CPU (% of one core over the window) of the hmgate process, from
 *     /proc; etcd's too, and the simulator's publish lag.
 *
 * The HM9000 layouts go up their sizes until a run is not fresh, and the largest fresh hmgate size
 * is divided by that one: `hm9000` is the layout with this store's index of each agent's
 * instances, `hm9000-scan` finds an agent's vanished instances as HM9000's listener did, by a scan
 * of the whole cache per heartbeat. Every process is stopped at the end of each run, on failure too.
 *
 *   npm run bench:scale
 *   node dist/bench/scale.js [--sizes 10000,100000,1000000] [--hm9000-sizes 50000,100000,200000,300000,500000,1000000]
 *       [--layouts hmgate,hm9000,hm9000-scan] [--scan-sizes 50000,100000,150000,200000,500000] [--observe 90] [--max-wait 240]
 *       [--scrape 15] [--churn 0.01] [--keep]
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startNatsServer, type NatsServerHandle } from '../test/helpers/nats-server.js';
import { freePort, ManagedProcess } from '../test/helpers/ports.js';
import { formatDecode, measureDecode } from './scale-decode.js';
import { startBenchEtcd, type BenchEtcd } from './scale-etcd.js';
import { cpuPercent, fetchText, FreshnessMarkers, LagWatcher, procSample, promBucket, promValue, type ProcSample } from './scale-probe.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = resolve(here, '../src/cli.js');
const HM9000_STORE = resolve(here, 'hm9000-layout-store.js');

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10000,100000,1000000' },
    'hm9000-sizes': { type: 'string', default: '50000,100000,200000,300000,500000,1000000' },
    layouts: { type: 'string', default: 'hmgate,hm9000,hm9000-scan' },
    'scan-sizes': { type: 'string', default: '50000,100000,150000,200000,500000' },
    observe: { type: 'string', default: '90' },
    'max-wait': { type: 'string', default: '240' },
    scrape: { type: 'string', default: '15' },
    heartbeat: { type: 'string', default: '10' },
    'per-agent': { type: 'string', default: '100' },
    'per-app': { type: 'string', default: '10' },
    churn: { type: 'string', default: '0.01' },
    keep: { type: 'boolean', default: false },
    /** Extra node arguments for the daemon, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof". */
    'daemon-node-args': { type: 'string', default: '' },
  },
});

const HB_S = Number(args.heartbeat);
const OBSERVE_S = Number(args.observe);
const MAX_WAIT_S = Number(args['max-wait']);
const SCRAPE_S = Number(args.scrape);
const PER_AGENT = Number(args['per-agent']);
const PER_APP = Number(args['per-app']);
const CHURN = Number(args.churn);
/** A run whose daemon grows past this is stopped: the machine is shared. */
const RSS_LIMIT_MB = 6_000;
const API_PASSWORD = 'scale';
const auth = { Authorization: `Basic ${Buffer.from(`magnet:${API_PASSWORD}`).toString('base64')}` };

type Layout = 'hmgate' | 'hm9000' | 'hm9000-scan';
const LABEL: Record<Layout, string> = { hmgate: 'etcd (hmgate)', hm9000: 'HM9000 layout', 'hm9000-scan': 'HM9000 layout + scan' };
type Verdict = 'yes' | 'LOST' | 'NEVER' | 'FAILED';

interface RunResult {
  layout: Layout;
  instances: number;
  agents: number;
  verdict: Verdict;
  note: string;
  firstFreshS?: number;
  lostAfterS?: number;
  lag?: { p50?: number; p99?: number; n: number };
  cycle?: { firstMs?: number; meanMs?: number; maxMs?: number; count: number; overOneS: number };
  etcd?: { putsPerS: number; deletesPerS: number; cpuPct?: number; rssMb?: number };
  hmgate?: { rssMb: number; hwmMb: number; cpuPct?: number };
  sim?: { publishLagP99?: number; publishLagMax?: number; cpuPct?: number };
  statusFailures: number;
  loadBefore: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const loadText = () =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');

function config(layout: Layout, o: { natsUrl: string; etcd: string; ccPort: number; apiPort: number }): string {
  const store =
    layout === 'hmgate'
      ? `store: { plugin: etcd, endpoints: ["${o.etcd}"], prefix: /hmgate }`
      : `store: { plugin: "${HM9000_STORE}", endpoints: ["${o.etcd}"], prefix: /hm9000layout, scan: ${layout === 'hm9000-scan'} }`;
  return [
    'extends: hm9000',
    'foundation: scale',
    `heartbeat_interval: ${HB_S}s`,
    // The preset keeps whole seconds (HM9000's timestamps); durations measured on that clock —
    // a save against save_deadline, a cycle's length — would then read 0 or 1000 ms.
    'time_resolution: 1ms',
    'log: { level: warn }',
    `bus: { servers: ["${o.natsUrl}"] }`,
    store,
    'sources:',
    `  desired: { url: "http://127.0.0.1:${o.ccPort}", user: bulk_api, password: scale-cc }`,
    `api: { listen: "127.0.0.1:${o.apiPort}", password: ${API_PASSWORD} }`,
    '',
  ].join('\n');
}

async function etcdCounters(endpoint: string): Promise<{ puts: number; deletes: number }> {
  const text = await fetchText(`${endpoint}/metrics`);
  return {
    puts: promValue(text, 'etcd_mvcc_put_total') ?? promValue(text, 'etcd_debugging_mvcc_put_total') ?? 0,
    deletes: promValue(text, 'etcd_mvcc_delete_total') ?? promValue(text, 'etcd_debugging_mvcc_delete_total') ?? 0,
  };
}

interface Scrape {
  t: number;
  sum: number;
  count: number;
  le1: number;
}

async function scrapeCycles(apiPort: number): Promise<Scrape> {
  const text = await fetchText(`http://127.0.0.1:${apiPort}/metrics`, 30_000);
  const name = 'hmgate_cycle_duration_seconds';
  return { t: Date.now(), sum: promValue(text, `${name}_sum`) ?? 0, count: promValue(text, `${name}_count`) ?? 0, le1: promBucket(text, name, '1') ?? 0 };
}

function logTo(proc: ManagedProcess, file: string): WriteStream {
  const out = createWriteStream(file);
  proc.child.stdout?.on('data', (d: Buffer) => out.write(d));
  proc.child.stderr?.on('data', (d: Buffer) => out.write(d));
  return out;
}

async function runOne(layout: Layout, instances: number): Promise<RunResult> {
  const agents = Math.ceil(instances / PER_AGENT);
  const result: RunResult = { layout, instances, agents, verdict: 'FAILED', note: '', statusFailures: 0, loadBefore: loadText() };
  const dir = await mkdtemp(join(tmpdir(), `hmgate-scale-${layout}-${instances}-`));
  let etcd: BenchEtcd | undefined;
  let nats: NatsServerHandle | undefined;
  let sim: ManagedProcess | undefined;
  let daemon: ManagedProcess | undefined;
  let watcher: LagWatcher | undefined;
  let markers: FreshnessMarkers | undefined;
  const logs: WriteStream[] = [];
  const say = (s: string) => console.log(`  [${layout} ${instances}] ${s}`);
  try {
    etcd = await startBenchEtcd();
    nats = await startNatsServer();
    const [ccPort, apiPort] = [await freePort(), await freePort()];
    const file = join(dir, 'hmgate.yaml');
    await writeFile(file, config(layout, { natsUrl: nats.url, etcd: etcd.endpoint, ccPort, apiPort }));

    // The simulator first, so the daemon's first desired-state fetch finds the bulk API.
    const simDuration = MAX_WAIT_S + OBSERVE_S + 120;
    sim = new ManagedProcess('simulator', process.execPath, [
      CLI,
      'simulate',
      '--live',
      '-c',
      file,
      '--agents',
      String(agents),
      '--instances',
      String(PER_AGENT),
      '--per-app',
      String(PER_APP),
      '--churn',
      String(CHURN),
      '--duration',
      `${simDuration}s`,
    ]);
    logs.push(logTo(sim, join(dir, 'simulate.log')));
    await sim.waitUntilReady(async () => sim!.output().includes('bulk API:'), 60_000);
    const nodeArgs = args['daemon-node-args']!.split(' ').filter(Boolean);
    daemon = new ManagedProcess('hmgate', process.execPath, [...nodeArgs, CLI, 'run', '-c', file]);
    logs.push(logTo(daemon, join(dir, 'hmgate.log')));
    const started = Date.now();
    markers = new FreshnessMarkers(etcd.endpoint, layout === 'hmgate' ? '/hmgate/fresh/' : '/hm9000layout/fresh/', HB_S * 3_000);
    say(`started (etcd ${etcd.endpoint}, ${nats.url}, load ${result.loadBefore})`);

    const markers_ = markers!;
    let firstFresh: number | undefined;
    let endAt = started + MAX_WAIT_S * 1000;
    let base: { t: number; etcd: { puts: number; deletes: number }; daemon?: ProcSample; etcdProc?: ProcSample; simProc?: ProcSample } | undefined;
    let preFresh: Scrape | undefined;
    const scrapes: Scrape[] = [];
    let nextScrape = 0;
    let lostAt: number | undefined;
    let peakRss = 0;
    for (let tick = 0; Date.now() < endAt; tick++) {
      await sleep(Math.max(0, started + (tick + 1) * 1000 - Date.now()));
      if (!daemon.isRunning()) {
        result.note = `hmgate ${daemon.describeExit()}`;
        break;
      }
      const s = procSample(daemon.pid);
      if (s) peakRss = Math.max(peakRss, s.rssMb);
      if (s && s.rssMb > RSS_LIMIT_MB) {
        result.note = `stopped: hmgate RSS ${s.rssMb.toFixed(0)} MB > ${RSS_LIMIT_MB} MB`;
        break;
      }
      let fresh: boolean | undefined;
      try {
        const v = await markers_.verdict();
        fresh = v.actual && v.desired;
        if (firstFresh !== undefined && !fresh && lostAt === undefined) {
          lostAt = Date.now();
          say(
            `lost freshness after ${((lostAt - firstFresh) / 1000).toFixed(0)}s: actual ${v.actual ? 'fresh' : 'not fresh'}, desired ${v.desired ? 'fresh' : 'not fresh'}`,
          );
        }
      } catch {
        // etcd did not answer within 5 s: not a verdict either way.
        if (firstFresh !== undefined) result.statusFailures++;
      }
      if (firstFresh === undefined) {
        if (fresh) {
          firstFresh = Date.now();
          endAt = firstFresh + OBSERVE_S * 1000;
          say(`fresh after ${((firstFresh - started) / 1000).toFixed(1)}s; observing for ${OBSERVE_S}s`);
          base = {
            t: Date.now(),
            etcd: await etcdCounters(etcd.endpoint),
            daemon: procSample(daemon.pid),
            etcdProc: procSample(etcd.pid),
            simProc: procSample(sim.pid),
          };
          watcher = new LagWatcher(etcd.endpoint);
          await watcher.start(layout === 'hmgate' ? '/hmgate/' : '/hm9000layout-hm/');
          if (preFresh) scrapes.push(preFresh);
          nextScrape = Date.now() + SCRAPE_S * 1000;
        } else if (tick % 4 === 0) {
          // Before freshness a scrape is cheap (the app gauges are not computed): the baseline.
          preFresh = await scrapeCycles(apiPort).catch(() => preFresh);
        }
      } else if (Date.now() >= nextScrape) {
        const sc = await scrapeCycles(apiPort).catch(() => undefined);
        if (sc) scrapes.push(sc);
        nextScrape = Date.now() + SCRAPE_S * 1000;
      }
    }

    if (firstFresh === undefined) {
      result.verdict = result.note ? 'FAILED' : 'NEVER';
      if (!result.note) result.note = `not fresh within ${MAX_WAIT_S}s`;
    } else {
      result.firstFreshS = (firstFresh - started) / 1000;
      result.verdict = result.note ? 'FAILED' : lostAt === undefined ? 'yes' : 'LOST';
      if (lostAt !== undefined) result.lostAfterS = (lostAt - firstFresh) / 1000;
      const sc = await scrapeCycles(apiPort).catch(() => undefined);
      if (sc) scrapes.push(sc);
      // The daemon's own verdict at the end agrees with the markers read from etcd.
      try {
        const st = JSON.parse(await fetchText(`http://127.0.0.1:${apiPort}/v1/status`, 30_000, auth)) as {
          actual: { fresh: boolean };
          desired: { fresh: boolean };
        };
        if ((st.actual.fresh && st.desired.fresh) !== (lostAt === undefined))
          result.note = `/v1/status says ${st.actual.fresh && st.desired.fresh ? 'fresh' : 'not fresh'} at the end`;
      } catch (err) {
        result.note = `/v1/status did not answer at the end (${(err as Error).message})`;
      }
      const seconds = (Date.now() - base!.t) / 1000;
      const e1 = await etcdCounters(etcd.endpoint);
      const d1 = procSample(daemon.pid);
      result.etcd = {
        putsPerS: (e1.puts - base!.etcd.puts) / seconds,
        deletesPerS: (e1.deletes - base!.etcd.deletes) / seconds,
        cpuPct: cpuPercent(base!.etcdProc, procSample(etcd.pid), seconds),
        rssMb: procSample(etcd.pid)?.rssMb,
      };
      result.hmgate = { rssMb: d1?.rssMb ?? 0, hwmMb: d1?.hwmMb ?? peakRss, cpuPct: cpuPercent(base!.daemon, d1, seconds) };
      result.sim = { cpuPct: cpuPercent(base!.simProc, procSample(sim.pid), seconds) };
      if (process.env.BENCH_DEBUG) say(`watch: ${watcher?.events} events, ${watcher?.n} probes`);
      if (process.env.BENCH_DEBUG) say(`scrapes: ${JSON.stringify(scrapes.map((x) => ({ t: x.t - firstFresh!, sum: x.sum, count: x.count })))}`);
      // Per scrape interval: the first holds the first fresh cycle (every app analysed).
      const means: number[] = [];
      let firstMs: number | undefined;
      for (let i = 1; i < scrapes.length; i++) {
        const dc = scrapes[i]!.count - scrapes[i - 1]!.count;
        const ds = scrapes[i]!.sum - scrapes[i - 1]!.sum;
        if (dc <= 0) continue;
        if (firstMs === undefined) firstMs = ds * 1000;
        else means.push((ds / dc) * 1000);
      }
      const first = scrapes[0];
      const last = scrapes[scrapes.length - 1];
      const later = scrapes.length > 2 ? { dc: last!.count - scrapes[1]!.count, ds: last!.sum - scrapes[1]!.sum } : undefined;
      result.cycle = {
        firstMs,
        meanMs: later && later.dc > 0 ? (later.ds / later.dc) * 1000 : undefined,
        maxMs: means.length ? Math.max(...means) : undefined,
        count: first && last ? last.count - first.count : 0,
        overOneS: first && last ? last.count - first.count - (last.le1 - first.le1) : 0,
      };
      result.lag = { p50: watcher?.quantile(0.5), p99: watcher?.quantile(0.99), n: watcher?.n ?? 0 };
    }
  } catch (err) {
    result.verdict = 'FAILED';
    result.note = (err as Error).message.split('\n')[0]!;
  } finally {
    await watcher?.stop().catch(() => undefined);
    markers?.close();
    await daemon?.stop(10_000);
    if (sim) {
      await sim.stop(10_000);
      const out = sim.output();
      const m = /publish lag p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms/.exec(out);
      if (m) result.sim = { ...result.sim, publishLagP99: Number(m[2]), publishLagMax: Number(m[3]) };
    }
    await etcd?.stop();
    await nats?.stop();
    for (const l of logs) l.end();
    if (!args.keep && result.verdict === 'yes') await rm(dir, { recursive: true, force: true });
    else say(`logs kept in ${dir}`);
  }
  say(summaryLine(result));
  return result;
}

const f0 = (x: number | undefined, d = 0) => (x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const secs = (ms: number | undefined) => (ms === undefined ? '–' : (ms / 1000).toFixed(2));

function summaryLine(r: RunResult): string {
  return `fresh: ${r.verdict}${r.note ? ` (${r.note})` : ''}${r.firstFreshS !== undefined ? `, fresh after ${f0(r.firstFreshS, 1)}s` : ''}${r.lostAfterS !== undefined ? `, lost after ${f0(r.lostAfterS)}s` : ''}`;
}

function table(results: RunResult[]): string {
  const head =
    '| store | instances | agents | fresh held | first fresh (s) | ingest lag p50 / p99 (s) | cycle: first / mean / max (ms), cycles > 1 s | etcd puts/s + deletes/s | hmgate RSS / peak (MB) | hmgate CPU | etcd CPU, RSS (MB) | simulator CPU, publish lag p99 (ms) |';
  const rows = results.map((r) =>
    [
      LABEL[r.layout],
      r.instances.toLocaleString('en-US'),
      r.agents.toLocaleString('en-US'),
      r.verdict === 'yes' ? 'yes' : `**${r.verdict}**${r.lostAfterS !== undefined ? ` after ${f0(r.lostAfterS)} s` : ''}${r.note ? ` (${r.note})` : ''}`,
      f0(r.firstFreshS, 1),
      r.lag ? `${secs(r.lag.p50)} / ${secs(r.lag.p99)} (n ${r.lag.n})` : '–',
      r.cycle ? `${f0(r.cycle.firstMs)} / ${f0(r.cycle.meanMs)} / ${f0(r.cycle.maxMs)}, ${r.cycle.overOneS} of ${r.cycle.count}` : '–',
      r.etcd ? `${f0(r.etcd.putsPerS)} + ${f0(r.etcd.deletesPerS)}` : '–',
      r.hmgate ? `${f0(r.hmgate.rssMb)} / ${f0(r.hmgate.hwmMb)}` : '–',
      r.hmgate?.cpuPct !== undefined ? `${f0(r.hmgate.cpuPct)} %` : '–',
      r.etcd ? `${f0(r.etcd.cpuPct)} %, ${f0(r.etcd.rssMb)}` : '–',
      `${r.sim?.cpuPct !== undefined ? `${f0(r.sim.cpuPct)} %` : '–'}, ${f0(r.sim?.publishLagP99)}`,
    ].join(' | '),
  );
  return [head, `|${'---|'.repeat(12)}`, ...rows.map((r) => `| ${r} |`)].join('\n');
}

async function main(): Promise<void> {
  const list = (s: string) =>
    s
      .split(',')
      .map(Number)
      .filter((n) => n > 0);
  const layouts = args.layouts!.split(',') as Layout[];
  console.log(
    `bench/scale on ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${release()}, node ${process.version}`,
  );
  console.log(
    `heartbeat ${HB_S}s, ${PER_AGENT} instances per agent, ${PER_APP} per app, churn ${CHURN * 100}% of instances restarted per heartbeat; observe ${OBSERVE_S}s after first fresh (wait ≤ ${MAX_WAIT_S}s); /metrics scraped every ${SCRAPE_S}s`,
  );
  console.log(`load average before: ${loadText()}`);
  console.log('');
  console.log(formatDecode(measureDecode(PER_AGENT), PER_AGENT));
  console.log('');
  const results: RunResult[] = [];
  if (layouts.includes('hmgate')) for (const n of list(args.sizes!)) results.push(await runOne('hmgate', n));
  const losses = new Map<Layout, number | undefined>();
  for (const layout of ['hm9000', 'hm9000-scan'] as const) {
    if (!layouts.includes(layout)) continue;
    losses.set(layout, undefined);
    for (const n of list(args[layout === 'hm9000' ? 'hm9000-sizes' : 'scan-sizes']!)) {
      const r = await runOne(layout, n);
      results.push(r);
      if (r.verdict !== 'yes') {
        losses.set(layout, n);
        break;
      }
    }
  }
  console.log('');
  console.log(table(results));
  console.log('');
  const heldHmgate = results.filter((r) => r.layout === 'hmgate' && r.verdict === 'yes').map((r) => r.instances);
  const best = heldHmgate.length ? Math.max(...heldHmgate) : undefined;
  if (best !== undefined) console.log(`hmgate etcd store: fresh up to ${best.toLocaleString('en-US')} instances of the sizes tried`);
  for (const [layout, loss] of losses) {
    const held = results.filter((r) => r.layout === layout && r.verdict === 'yes').map((r) => r.instances);
    const upTo = held.length ? Math.max(...held).toLocaleString('en-US') : 'none of the sizes';
    if (loss === undefined) {
      console.log(`${LABEL[layout]}: fresh at every size tried (up to ${upTo}); its loss point is above them`);
      continue;
    }
    console.log(`${LABEL[layout]}: fresh up to ${upTo}, loses freshness at ${loss.toLocaleString('en-US')} instances`);
    if (best !== undefined) console.log(`  hmgate holds ${(best / loss).toFixed(1)}× the instances at which ${LABEL[layout]} loses freshness (target ≥ 10×)`);
  }
  console.log(`load average after: ${loadText()}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(`bench/scale failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  },
);
