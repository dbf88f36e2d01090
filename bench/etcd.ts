/**
 * bench/etcd: the etcd store's write volume in steady state, against what the same etcd sustains.
 *
 * A real single-member etcd; 10 000 simulated agents × 100 instances heartbeating every 10 s, fed
 * straight to the etcd store's saveHeartbeats (no NATS): the agents are spread evenly over the
 * heartbeat period and saved in one batch per sync interval (1 s), as the `heartbeat` source
 * does, each save followed by a bump of the actual freshness marker when it took less than the
 * save deadline. Every heartbeat, 1 % of all instances change state (chosen at random, so about
 * 63 % of the agents report a changed instance set each heartbeat).
 *
 * Measured, after the first full heartbeat period (every agent written once):
 *   - etcd writes per second: the store's own counters (puts, transactions) and etcd's
 *     etcd_debugging_mvcc_put_total / etcd_mvcc_put_total from /metrics;
 *   - whether actual freshness holds: isActualFresh on the marker, checked every second;
 *   - then, in the same run, the put rate this etcd sustains: a bounded burst (time and count) of
 *     single puts of values the size of an agent record, from a few concurrent clients.
 * Prints the figures and the ratio steady-state puts/s ÷ sustained puts/s (target ≤ 10 %).
 * Figures, not a test.
 *
 *   npm run bench:etcd
 *   node dist/bench/etcd.js [steady-seconds] [agents] [instances-per-agent] [burst-seconds]
 */
import { Etcd3 } from 'etcd3';
import { EtcdStore } from '../plugins/etcd-store/etcd-store.js';
import { RealClock } from '../src/pipeline/clock.js';
import { isActualFresh } from '../src/pipeline/freshness.js';
import type { AgentHeartbeat, InstanceHeartbeat } from '../src/pipeline/store.js';
import { startEtcd, type EtcdHandle } from '../test/helpers/etcd.js';

const STEADY_S = Number(process.argv[2] ?? 35);
const AGENTS = Number(process.argv[3] ?? 10_000);
const PER_AGENT = Number(process.argv[4] ?? 100);
const BURST_S = Number(process.argv[5] ?? 10);
const HB_MS = 10_000;
/** The hm9000 preset: sync_interval 1000ms (= save_deadline), heartbeat_ttl 3hb, actual_ttl 3hb. */
const SYNC_MS = 1_000;
const SAVE_DEADLINE_MS = SYNC_MS;
const HEARTBEAT_TTL_MS = 3 * HB_MS;
const ACTUAL_TTL_MS = 3 * HB_MS;
const CHANGE_FRACTION = 0.01;
const BURST_CLIENTS = 8;
const BURST_MAX_PUTS = 200_000;
const BURST_KEYS = 10_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function etcdPuts(endpoint: string): Promise<number> {
  const text = await (await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  for (const name of ['etcd_mvcc_put_total', 'etcd_debugging_mvcc_put_total']) {
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
    if (m) return Number(m[1]);
  }
  throw new Error('no etcd put counter in /metrics');
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

async function main(): Promise<void> {
  let etcd: EtcdHandle | undefined;
  let store: EtcdStore | undefined;
  try {
    etcd = await startEtcd();
    console.log(`etcd ${etcd.endpoint}; ${AGENTS} agents × ${PER_AGENT} instances, heartbeat ${HB_MS / 1000}s, ${CHANGE_FRACTION * 100}% of instances change state per heartbeat`);
    // As plugins/etcd-store/index.ts builds it, on the real clock.
    store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/bench', timeoutMs: 5_000 }, new RealClock(), {
      onListenerError: (err) => console.error('listener error', err),
    });
    await store.start();

    const agents = makeAgents();
    const slots = HB_MS / SYNC_MS;
    const perSlot = Math.ceil(AGENTS / slots);
    const changesPerHb = Math.round(AGENTS * PER_AGENT * CHANGE_FRACTION);
    const changesPerSlot = Math.round(changesPerHb / slots);

    let saves = 0;
    let slowSaves = 0;
    let failedSaves = 0;
    let maxSaveMs = 0;
    let freshChecks = 0;
    let freshOk = 0;
    let firstFreshAt: number | null = null;
    let lapsesAfterFresh = 0;
    let valueBytes = 0;
    let valueCount = 0;

    const start = Date.now();
    const warmupEnd = start + HB_MS; // every agent written once
    const end = warmupEnd + STEADY_S * 1000;
    let at0: { t: number; puts: number; txns: number; etcdPuts: number } | undefined;

    for (let tick = 0; ; tick++) {
      const due = start + tick * SYNC_MS;
      if (due >= end) break;
      const wait = due - Date.now();
      if (wait > 0) await sleep(wait);
      if (!at0 && Date.now() >= warmupEnd) {
        at0 = { t: Date.now(), puts: store.stats.puts, txns: store.stats.txns, etcdPuts: await etcdPuts(etcd.endpoint) };
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
      const t0 = Date.now();
      try {
        await store.saveHeartbeats(batch, HEARTBEAT_TTL_MS);
        const took = Date.now() - t0;
        saves++;
        maxSaveMs = Math.max(maxSaveMs, took);
        if (took < SAVE_DEADLINE_MS) await store.bumpFreshness('actual', ACTUAL_TTL_MS);
        else slowSaves++;
      } catch (err) {
        failedSaves++;
        console.error(`save failed: ${String(err)}`);
        await store.revokeFreshness('actual').catch(() => undefined);
      }
      const now = Date.now();
      const fresh = isActualFresh(await store.getFreshness('actual'), now, ACTUAL_TTL_MS);
      freshChecks++;
      if (fresh) {
        freshOk++;
        firstFreshAt ??= now;
      } else if (firstFreshAt !== null) lapsesAfterFresh++;
    }
    const behindS = (Date.now() - end) / 1000;
    const at1 = { t: Date.now(), puts: store.stats.puts, txns: store.stats.txns, etcdPuts: await etcdPuts(etcd.endpoint) };
    // The size of the agent values as etcd holds them.
    const reader = new Etcd3({ hosts: [etcd.endpoint] });
    const sample = await reader.getAll().prefix('/bench/agents/').limit(100).buffers();
    reader.close();
    for (const v of Object.values(sample)) {
      valueBytes += v.length;
      valueCount++;
    }
    await store.stop();
    store = undefined;

    const steadyS = (at1.t - at0!.t) / 1000;
    const storePutsPerS = (at1.puts - at0!.puts) / steadyS;
    const storeTxnsPerS = (at1.txns - at0!.txns) / steadyS;
    const etcdPutsPerS = (at1.etcdPuts - at0!.etcdPuts) / steadyS;
    const agentBytes = Math.round(valueBytes / Math.max(1, valueCount));

    // The sustained put rate of this etcd: single puts of an agent-record-sized value.
    const value = 'x'.repeat(agentBytes);
    const clients = Array.from({ length: BURST_CLIENTS }, () => new Etcd3({ hosts: [etcd!.endpoint] }));
    const burstPuts0 = await etcdPuts(etcd.endpoint);
    const burstStart = Date.now();
    const burstEnd = burstStart + BURST_S * 1000;
    let issued = 0;
    await Promise.all(
      clients.map(async (c, ci) => {
        for (let n = 0; Date.now() < burstEnd && issued < BURST_MAX_PUTS; n++) {
          issued++;
          await c.put(`/burst/${(ci * 100_003 + n) % BURST_KEYS}`).value(value);
        }
      }),
    );
    const burstS = (Date.now() - burstStart) / 1000;
    const burstEtcdPuts = (await etcdPuts(etcd.endpoint)) - burstPuts0;
    for (const c of clients) c.close();
    const sustained = burstEtcdPuts / burstS;

    // For comparison: the same values in transactions (as the store batches them: ≤ 128 puts, ≤ 1 MB).
    const perTxn = Math.max(1, Math.min(128, Math.floor(1_000_000 / agentBytes)));
    const txnClients = clients.slice(0, 4).map(() => new Etcd3({ hosts: [etcd!.endpoint] }));
    const txnPuts0 = await etcdPuts(etcd.endpoint);
    const txnStart = Date.now();
    const txnEnd = txnStart + BURST_S * 1000;
    let txnIssued = 0;
    await Promise.all(
      txnClients.map(async (c, ci) => {
        for (let n = 0; Date.now() < txnEnd && txnIssued < BURST_MAX_PUTS; n++) {
          txnIssued += perTxn;
          const ops = Array.from({ length: perTxn }, (_, k) => c.put(`/burst-txn/${(ci * 100_003 + n * perTxn + k) % BURST_KEYS}`).value(value));
          await c.if(`/burst-txn/none`, 'Version', '==', 0).then(...ops).commit();
        }
      }),
    );
    const txnS = (Date.now() - txnStart) / 1000;
    const txnBurstPuts = (await etcdPuts(etcd.endpoint)) - txnPuts0;
    for (const c of txnClients) c.close();
    const sustainedTxn = txnBurstPuts / txnS;

    const r = (x: number, d = 1) => x.toFixed(d);
    console.log('');
    console.log(`steady state (${r(steadyS)}s after a ${HB_MS / 1000}s warm-up, ${changesPerHb} instance changes per heartbeat):`);
    console.log(`  store puts/s            ${r(storePutsPerS)}   (transactions/s ${r(storeTxnsPerS)})`);
    console.log(`  etcd mvcc puts/s        ${r(etcdPutsPerS)}   (etcd /metrics)`);
    console.log(`  agent value size        ${agentBytes} bytes (mean of 100 keys); ≈ ${r((etcdPutsPerS * agentBytes) / 1e6, 2)} MB/s written`);
    console.log(`  saves ${saves} (one per ${SYNC_MS}ms slot; the run ended ${r(Math.max(0, behindS))}s behind schedule), failed ${failedSaves}, slower than save_deadline ${slowSaves}, max save ${maxSaveMs}ms`);
    console.log(
      `  actual freshness: fresh ${freshOk}/${freshChecks} checks; first fresh ${firstFreshAt === null ? 'never' : `${r((firstFreshAt - start) / 1000)}s after start`} (window ${ACTUAL_TTL_MS / 1000}s); lapses after that ${lapsesAfterFresh}`,
    );
    console.log(`sustained (${BURST_CLIENTS} clients, single puts of ${agentBytes} bytes, ${r(burstS)}s): ${r(sustained)} puts/s (${burstEtcdPuts} puts)`);
    console.log(`sustained (4 clients, transactions of ${perTxn} such puts, ${r(txnS)}s): ${r(sustainedTxn)} puts/s (${txnBurstPuts} puts)`);
    console.log(`ratio steady/sustained: ${r((100 * etcdPutsPerS) / sustained, 2)} % of single puts, ${r((100 * etcdPutsPerS) / sustainedTxn, 2)} % of batched puts (target ≤ 10 %)`);
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
