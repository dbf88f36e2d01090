/**
 * bench/etcd: the etcd store's write volume in steady state, against what the same etcd sustains.
 *
 * A real single-member etcd; 10 000 simulated agents × 100 instances heartbeating every 10 s, fed
 * straight to the etcd store's saveHeartbeats (no NATS): the agents are spread evenly over the
 * heartbeat period and saved in one batch per sync interval (1 s), as the `heartbeat` source
 * does, each save followed by a bump of the actual freshness marker when it took less than the
 * save deadline. Every heartbeat, 1 % of all instances change state (chosen at random, so about
 * 63 % of the agents report a changed instance each heartbeat).
 *
 * Measured in the steady state, once every agent has been saved once (the first heartbeat period),
 * over one record period (8 × heartbeat_ttl = 240 s): every agent record is rewritten once in it,
 * at its agent's phase, so the periodic compaction is in the figure at its long-run rate:
 *   - keys and bytes written per second, as etcd counts them in /metrics (etcd_mvcc_put_total,
 *     etcd_debugging_mvcc_total_put_size_in_bytes: key + value of every put, the deletes, the WAL
 *     bytes), and as the store counts them;
 *   - whether actual freshness holds (isActualFresh, checked after every save) and how many saves
 *     took longer than the save deadline (each such save skips a freshness bump).
 * Then, in the same run, what this etcd sustains, counted the same way:
 *   - the same writes: every transaction the store sent in the steady state (recorded from its
 *     client: keys, value sizes, deletes, leases), replayed in random order under another prefix
 *     by 8 concurrent clients as fast as etcd takes them;
 *   - for reference, single puts (no transactions) from 8 clients of values the size of an agent
 *     record, and of an agent delta.
 * A watch of the written prefix is open in every burst, as the store's is in the steady state.
 * Prints the figures and the ratios steady ÷ sustained (target ≤ 10 %). Figures, not a test.
 *
 *   npm run bench:etcd
 *   node dist/bench/etcd.js [steady-seconds] [agents] [instances-per-agent] [burst-seconds]
 */
import { Etcd3, type IRequestOp, type ITxnRequest } from 'etcd3';
import { EtcdStore, recordPeriodMs } from '../plugins/etcd-store/etcd-store.js';
import { RealClock } from '../src/sdk/clock.js';
import { isActualFresh } from '../src/sdk/freshness.js';
import type { AgentHeartbeat, InstanceHeartbeat } from '../src/sdk/state.js';
import { startEtcd, type EtcdHandle } from '../test/helpers/etcd.js';

const HB_MS = 10_000;
/** The hm9000 preset: sync_interval 1000ms (= save_deadline), heartbeat_ttl 3hb, actual_ttl 3hb. */
const SYNC_MS = 1_000;
const SAVE_DEADLINE_MS = SYNC_MS;
const HEARTBEAT_TTL_MS = 3 * HB_MS;
const ACTUAL_TTL_MS = 3 * HB_MS;
/** One period of the agent records: each is rewritten (its delta folded in) once in it. */
const DEFAULT_STEADY_S = recordPeriodMs(HEARTBEAT_TTL_MS) / 1000;

const STEADY_S = Number(process.argv[2] ?? DEFAULT_STEADY_S);
const AGENTS = Number(process.argv[3] ?? 10_000);
const PER_AGENT = Number(process.argv[4] ?? 100);
const BURST_S = Number(process.argv[5] ?? 10);
const CHANGE_FRACTION = 0.01;
const BURST_CLIENTS = 8;
const BURST_KEYS = 10_000;
const PREFIX = '/bench';
const REPLAY_PREFIX = '/replay';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface EtcdCounters {
  t: number;
  puts: number;
  putBytes: number;
  deletes: number;
  walBytes: number;
  txns: number;
}

async function counters(endpoint: string): Promise<EtcdCounters> {
  const text = await (await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const read = (...names: string[]): number => {
    for (const name of names) {
      const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
      if (m) return Number(m[1]);
    }
    throw new Error(`none of ${names.join(', ')} in etcd's /metrics`);
  };
  return {
    t: Date.now(),
    puts: read('etcd_mvcc_put_total', 'etcd_debugging_mvcc_put_total'),
    putBytes: read('etcd_debugging_mvcc_total_put_size_in_bytes'),
    deletes: read('etcd_mvcc_delete_total', 'etcd_debugging_mvcc_delete_total'),
    walBytes: read('etcd_disk_wal_write_bytes_total'),
    txns: read('etcd_mvcc_txn_total', 'etcd_debugging_mvcc_txn_total'),
  };
}

interface Rates {
  seconds: number;
  puts: number;
  putBytes: number;
  deletes: number;
  walBytes: number;
  txns: number;
}

function rates(a: EtcdCounters, b: EtcdCounters): Rates {
  const s = (b.t - a.t) / 1000;
  return {
    seconds: s,
    puts: (b.puts - a.puts) / s,
    putBytes: (b.putBytes - a.putBytes) / s,
    deletes: (b.deletes - a.deletes) / s,
    walBytes: (b.walBytes - a.walBytes) / s,
    txns: (b.txns - a.txns) / s,
  };
}

/** A write transaction as the store sent it: what it put (key, value size, on a lease or not) and deleted. */
interface RecordedTxn {
  puts: { key: string; bytes: number; leased: boolean }[];
  deletes: string[];
}

function makeAgents(): { hb: AgentHeartbeat; instances: InstanceHeartbeat[] }[] {
  const out: { hb: AgentHeartbeat; instances: InstanceHeartbeat[] }[] = [];
  for (let a = 0; a < AGENTS; a++) {
    const agent = `dea-${String(a).padStart(5, '0')}-0b5c7a1e`;
    const instances: InstanceHeartbeat[] = [];
    for (let i = 0; i < PER_AGENT; i++) {
      instances.push({
        app: `app-${(a * PER_AGENT + i) % 50_000}-9f0e2d4c-5b6a-4f1e-8d2c-1a3b5c7d9e0f`,
        version: 'v-3c1e7a52-91d8-4b2f',
        instance: `inst-${a}-${i}-6e8a0c2f4b`,
        index: i % 10,
        state: 'RUNNING',
        stateTimestamp: 1_700_000_000,
        agent,
        ccPartition: 'default',
      });
    }
    out.push({ hb: { agent, instances }, instances });
  }
  return out;
}

/** Runs `worker` on `clients` concurrent clients for `seconds`, between two reads of etcd's counters. */
/**
 * Runs `worker` on BURST_CLIENTS concurrent clients for `seconds`, between two reads of etcd's
 * counters, with a watch of `watched` open meanwhile (etcd sends every change to the store's watch
 * in the steady state too).
 */
async function burst(endpoint: string, seconds: number, watched: string, worker: (c: Etcd3, until: number) => Promise<void>): Promise<Rates> {
  const clients = Array.from({ length: BURST_CLIENTS }, () => new Etcd3({ hosts: [endpoint] }));
  const watchClient = new Etcd3({ hosts: [endpoint] });
  try {
    const watcher = await watchClient.watch().prefix(watched).create();
    let events = 0;
    watcher.on('data', (res) => (events += res.events.length));
    const a = await counters(endpoint);
    const until = Date.now() + seconds * 1000;
    await Promise.all(clients.map((c) => worker(c, until)));
    const rated = rates(a, await counters(endpoint));
    await watcher.cancel();
    if (events === 0) throw new Error(`the watch of ${watched} saw nothing`);
    return rated;
  } finally {
    for (const c of clients) c.close();
    watchClient.close();
  }
}

async function main(): Promise<void> {
  let etcd: EtcdHandle | undefined;
  let store: EtcdStore | undefined;
  try {
    etcd = await startEtcd();
    const endpoint = etcd.endpoint;
    console.log(
      `etcd ${endpoint}; ${AGENTS} agents × ${PER_AGENT} instances, heartbeat ${HB_MS / 1000}s, ${CHANGE_FRACTION * 100}% of instances change state per heartbeat; steady window ${STEADY_S}s`,
    );
    // As plugins/etcd-store/index.ts builds it, on the real clock.
    store = new EtcdStore({ endpoints: [endpoint], prefix: PREFIX, timeoutMs: 5_000 }, new RealClock(), {
      onListenerError: (err) => console.error('listener error', err),
    });
    await store.start();

    // Record the shape of every write transaction the store sends in the steady state, to replay it.
    const recorded: RecordedTxn[] = [];
    const txnMs: number[] = [];
    let recording = false;
    const kv = store.client.kv;
    const txn = kv.txn.bind(kv);
    kv.txn = (req: ITxnRequest, options) => {
      const t0 = Date.now();
      const timed = (res: Awaited<ReturnType<typeof txn>>) => {
        if (recording) txnMs.push(Date.now() - t0);
        return res;
      };
      if (recording) {
        const r: RecordedTxn = { puts: [], deletes: [] };
        for (const op of req.success ?? []) {
          const put = op.request_put;
          if (put) r.puts.push({ key: String(put.key), bytes: put.value?.length ?? 0, leased: Boolean(put.lease && put.lease !== '0') });
          else if (op.request_delete_range) r.deletes.push(String(op.request_delete_range.key));
        }
        if (r.puts.length + r.deletes.length > 0) recorded.push(r);
      }
      return txn(req, options).then(timed);
    };

    const agents = makeAgents();
    const slots = HB_MS / SYNC_MS;
    const perSlot = Math.ceil(AGENTS / slots);
    const changesPerHb = Math.round(AGENTS * PER_AGENT * CHANGE_FRACTION);
    const changesPerSlot = Math.round(changesPerHb / slots);

    const all = { saves: 0, slow: 0, failed: 0, maxMs: 0 };
    const steady = { saves: 0, slow: 0, failed: 0, maxMs: 0, freshChecks: 0, freshOk: 0 };
    let firstFreshAt: number | null = null;
    let lapsesAfterFresh = 0;
    const saveMs: number[] = [];
    const slowAt: string[] = [];

    const start = Date.now();
    // The window starts once every agent was saved (a slow first save delays that) and lasts STEADY_S.
    let end = Infinity;
    let warmupS = 0;
    type StoreCounts = { etcd: EtcdCounters; puts: number; putBytes: number; deletes: number; txns: number; records: number; deltas: number; expired: number };
    const storeCounts = async (): Promise<StoreCounts> => {
      const s = store!.stats;
      return {
        etcd: await counters(endpoint),
        puts: s.puts,
        putBytes: s.putBytes,
        deletes: s.deletes,
        txns: s.txns,
        records: s.recordPuts,
        deltas: s.deltaPuts,
        expired: s.expiredDeletes,
      };
    };
    let at0: StoreCounts | undefined;

    for (let tick = 0; ; tick++) {
      const due = start + tick * SYNC_MS;
      if (due >= end) break;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      if (!at0 && tick === slots) {
        at0 = await storeCounts();
        warmupS = (at0.etcd.t - start) / 1000;
        end = at0.etcd.t + STEADY_S * 1000;
        recording = true;
      }
      // 1 % of all instances per heartbeat, spread over the slots: change the state of random ones.
      for (let c = 0; c < changesPerSlot; c++) {
        const ag = agents[Math.floor(Math.random() * AGENTS)]!;
        const i = Math.floor(Math.random() * PER_AGENT);
        const old = ag.instances[i]!;
        const next = [...ag.instances];
        next[i] = { ...old, state: old.state === 'RUNNING' ? 'CRASHED' : 'RUNNING', stateTimestamp: old.stateTimestamp + 1 };
        ag.instances = next;
        ag.hb = { agent: ag.hb.agent, instances: next };
      }
      // The agents whose heartbeat falls in this slot, saved in one batch.
      const slot = tick % slots;
      const batch = agents.slice(slot * perSlot, Math.min(AGENTS, (slot + 1) * perSlot)).map((a) => a.hb);
      const inSteady = at0 !== undefined;
      const t0 = Date.now();
      try {
        await store.saveHeartbeats(batch, HEARTBEAT_TTL_MS);
        const took = Date.now() - t0;
        for (const s of inSteady ? [all, steady] : [all]) {
          s.saves++;
          s.maxMs = Math.max(s.maxMs, took);
          if (took >= SAVE_DEADLINE_MS) s.slow++;
        }
        if (inSteady) {
          saveMs.push(took);
          if (took >= SAVE_DEADLINE_MS) slowAt.push(`${Math.round((t0 - at0!.etcd.t) / 1000)}s:${took}ms`);
        }
        if (took < SAVE_DEADLINE_MS) await store.bumpFreshness('actual', ACTUAL_TTL_MS);
      } catch (err) {
        all.failed++;
        if (inSteady) steady.failed++;
        console.error(`save failed: ${String(err)}`);
        await store.revokeFreshness('actual').catch(() => undefined);
      }
      const now = Date.now();
      const fresh = isActualFresh(await store.getFreshness('actual'), now, ACTUAL_TTL_MS);
      if (inSteady) {
        steady.freshChecks++;
        if (fresh) steady.freshOk++;
      }
      if (fresh) firstFreshAt ??= now;
      else if (firstFreshAt !== null) lapsesAfterFresh++;
    }
    recording = false;
    const behindS = (Date.now() - end) / 1000;
    const at1 = await storeCounts();
    const steadyRates = rates(at0!.etcd, at1.etcd);
    await store.stop();
    store = undefined;
    const steadyS = steadyRates.seconds;
    const storeRates = {
      puts: (at1.puts - at0!.puts) / steadyS,
      putBytes: (at1.putBytes - at0!.putBytes) / steadyS,
      deletes: (at1.deletes - at0!.deletes) / steadyS,
      txns: (at1.txns - at0!.txns) / steadyS,
      records: (at1.records - at0!.records) / steadyS,
      deltas: (at1.deltas - at0!.deltas) / steadyS,
      expired: (at1.expired - at0!.expired) / steadyS,
    };
    // The agent keys as etcd holds them at the end (paged: all of them exceed a gRPC message).
    const reader = new Etcd3({ hosts: [endpoint] });
    let recordBytes = 0;
    let records = 0;
    let deltaBytes = 0;
    let deltas = 0;
    const from = `${PREFIX}/agents/`;
    const rangeEnd = Buffer.from(`${PREFIX}/agents0`);
    for (let key = Buffer.from(from); ;) {
      const page = await reader.kv.range({ key, range_end: rangeEnd, limit: 200 });
      for (const kv of page.kvs) {
        if (kv.key.toString().endsWith('/d')) {
          deltaBytes += kv.value.length;
          deltas++;
        } else {
          recordBytes += kv.value.length;
          records++;
        }
      }
      if (!page.more || page.kvs.length === 0) break;
      key = Buffer.concat([page.kvs[page.kvs.length - 1]!.key, Buffer.from([0])]);
    }
    reader.close();
    const recordSize = Math.round(recordBytes / Math.max(1, records));

    // Sustained, the same writes: the recorded transactions replayed as fast as etcd takes them.
    const leaseClient = new Etcd3({ hosts: [endpoint] });
    const replayLease = (await leaseClient.leaseClient.leaseGrant({ TTL: 3_600 })).ID;
    leaseClient.close();
    const values = new Map<number, Buffer>();
    const valueOf = (n: number) => values.get(n) ?? (values.set(n, Buffer.alloc(n, 'x')), values.get(n)!);
    const replayKey = (key: string) => Buffer.from(REPLAY_PREFIX + key.slice(PREFIX.length));
    // In random order, so the part replayed within the burst is a sample of the whole window.
    for (let i = recorded.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [recorded[i], recorded[j]] = [recorded[j]!, recorded[i]!];
    }
    const replayOps: IRequestOp[][] = recorded.map((r) => [
      ...r.puts.map((p) => ({ request_put: { key: replayKey(p.key), value: valueOf(p.bytes), ...(p.leased ? { lease: replayLease } : {}) } })),
      ...r.deletes.map((k) => ({ request_delete_range: { key: replayKey(k) } })),
    ]);
    let next = 0;
    const replay =
      replayOps.length === 0
        ? undefined
        : await burst(endpoint, BURST_S, `${REPLAY_PREFIX}/`, async (c, until) => {
            while (Date.now() < until) {
              const ops = replayOps[next++ % replayOps.length]!;
              await c.kv.txn({ compare: [], success: ops, failure: [] });
            }
          });

    // References: single puts (no transactions) of values the size of an agent record, and of a delta.
    const singlePuts = async (size: number): Promise<Rates> => {
      const value = 'x'.repeat(size);
      let n = 0;
      return burst(endpoint, BURST_S, '/burst/', async (c, until) => {
        while (Date.now() < until) await c.put(`/burst/${n++ % BURST_KEYS}`).value(value);
      });
    };
    const single = await singlePuts(recordSize);
    const deltaSize = Math.round(deltaBytes / Math.max(1, deltas));
    const singleSmall = deltas > 0 ? await singlePuts(deltaSize) : undefined;

    const r = (x: number, d = 1) => x.toFixed(d);
    const mb = (x: number) => `${(x / 1e6).toFixed(2)} MB/s`;
    const pct = (a: number, b: number) => `${((100 * a) / b).toFixed(1)} %`;
    const quantile = (xs: number[]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      return (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
    };
    const p = quantile(saveMs);
    const pt = quantile(txnMs);
    console.log('');
    console.log(
      `steady state (${r(steadyS)}s after a ${r(warmupS)}s warm-up that saved every agent once, ${changesPerHb} instance changes per heartbeat), as etcd counts it:`,
    );
    console.log(`  keys put/s              ${r(steadyRates.puts)}   (deleted/s ${r(steadyRates.deletes)}, transactions/s ${r(steadyRates.txns)})`);
    console.log(`  bytes put/s             ${mb(steadyRates.putBytes)}   (key + value; WAL ${mb(steadyRates.walBytes)})`);
    console.log(
      `  as the store counts it  ${r(storeRates.puts)} keys put/s, ${mb(storeRates.putBytes)}, ${r(storeRates.deletes)} deleted/s, ${r(storeRates.txns)} transactions/s`,
    );
    console.log(
      `    agent records put/s ${r(storeRates.records)}, agent deltas put/s ${r(storeRates.deltas)}, expired-record deletes/s ${r(storeRates.expired)}`,
    );
    console.log(
      `  agent keys at the end   ${records} records of ${recordSize} bytes (mean), ${deltas} deltas of ${Math.round(deltaBytes / Math.max(1, deltas))} bytes (mean)`,
    );
    console.log(
      `  saves in the window ${steady.saves}: failed ${steady.failed}, slower than save_deadline ${steady.slow}; save ms p50 ${p(0.5)}, p99 ${p(0.99)}, max ${steady.maxMs} (whole run incl. warm-up: ${all.saves} saves, ${all.slow} slow, max ${all.maxMs}ms; ended ${r(Math.max(0, behindS))}s behind schedule)`,
    );
    if (slowAt.length > 0) console.log(`  slow saves (time into the window: duration): ${slowAt.join(' ')}`);
    console.log(`  etcd transaction latency in the window: p50 ${pt(0.5)}ms, p99 ${pt(0.99)}ms, max ${pt(1)}ms (${txnMs.length} transactions)`);
    console.log(
      `  actual freshness: fresh ${steady.freshOk}/${steady.freshChecks} checks in the window; first fresh ${firstFreshAt === null ? 'never' : `${r((firstFreshAt - start) / 1000)}s after start`} (window ${ACTUAL_TTL_MS / 1000}s); lapses after that ${lapsesAfterFresh}`,
    );
    if (replay) {
      console.log(
        `sustained, the same writes (${recorded.length} recorded transactions replayed by ${BURST_CLIENTS} clients, ${r(replay.seconds)}s): ${r(replay.puts)} keys put/s, ${mb(replay.putBytes)} (deleted/s ${r(replay.deletes)}, transactions/s ${r(replay.txns)}, WAL ${mb(replay.walBytes)})`,
      );
    }
    console.log(
      `sustained, single puts of ${recordSize} bytes (${BURST_CLIENTS} clients, ${r(single.seconds)}s): ${r(single.puts)} puts/s, ${mb(single.putBytes)}`,
    );
    if (singleSmall)
      console.log(
        `sustained, single puts of ${deltaSize} bytes (${BURST_CLIENTS} clients, ${r(singleSmall.seconds)}s): ${r(singleSmall.puts)} puts/s, ${mb(singleSmall.putBytes)}`,
      );
    if (replay) {
      console.log(
        `ratio steady/sustained (same writes): ${pct(steadyRates.puts, replay.puts)} of keys/s, ${pct(steadyRates.putBytes, replay.putBytes)} of bytes/s, ${pct(steadyRates.txns, replay.txns)} of transactions/s (target ≤ 10 %)`,
      );
    }
    console.log(
      `ratio steady/single puts: ${pct(steadyRates.putBytes, single.putBytes)} of the bytes/s of record-sized puts, ${pct(steadyRates.puts, (singleSmall ?? single).puts)} of the keys/s of ${singleSmall ? 'delta' : 'record'}-sized puts`,
    );
  } finally {
    await store?.stop().catch(() => undefined);
    await etcd?.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
