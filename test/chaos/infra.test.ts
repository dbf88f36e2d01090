/**
 * Chaos: faults of what the daemons stand on — etcd restarted, nats-server restarted, and etcd
 * stalled so the leader's saves fall behind. Three `hmgate run` daemons on etcd share one cluster;
 * each fault begins from a whole foundation with a fresh leader and a recorder of its own.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { allStarted, expectClean, expectTakeover, until } from './checks.js';
import { ACTUAL_TTL, HB, LEASE_MS, SETTLE, SIZE, publishRows, row, sharedCluster, sleep, type FaultRow } from './harness.js';

const rows: FaultRow[] = [];
const TIMEOUT = 4 * LEASE_MS + 80 * HB + 30_000;
/** A restarted etcd or nats-server, a new election, a freshness window, the grace period, slack. */
const TO_START = LEASE_MS + 20 * HB + 15_000;

afterAll(() => publishRows('infra', rows));

describe('on a shared cluster', () => {
  const cluster = sharedCluster(TIMEOUT);

  it(
    '3. etcd restart: every vanished instance is started exactly once afterwards, nothing else is sent',
    async () => {
      const c = cluster();
      await c.freshLeader();
      const gone = c.pick(SIZE.vanish);
      const t = c.mark(`instances ${gone.join(', ')} vanish; etcd restarts`);
      for (const g of gone) c.recorder.vanish(g);
      await c.etcd.restart();
      c.mark('etcd answers again');
      await until(c, allStarted(c), 'a start for every vanished instance', TO_START);
      await sleep(SETTLE);
      const takeover = c.takeover(t);
      rows.push(row('3. etcd restart (instances vanish meanwhile)', c, takeover));
      expectClean(c);
      expectTakeover(c, takeover, LEASE_MS + ACTUAL_TTL + 6 * HB + 5_000);
    },
    TIMEOUT,
  );

  it(
    '4. nats-server restart: every vanished instance is started exactly once afterwards, nothing else is sent',
    async () => {
      const c = cluster();
      await c.freshLeader();
      const gone = c.pick(SIZE.vanish);
      const t = c.mark(`instances ${gone.join(', ')} vanish; nats-server restarts`);
      for (const g of gone) c.recorder.vanish(g);
      await c.nats.restart();
      c.mark('nats-server answers again');
      await until(c, allStarted(c), 'a start for every vanished instance', TO_START);
      await sleep(SETTLE);
      const takeover = c.takeover(t);
      rows.push(row('4. nats-server restart (instances vanish meanwhile)', c, takeover));
      expectClean(c);
      expectTakeover(c, takeover, LEASE_MS + ACTUAL_TTL + 6 * HB + 5_000);
    },
    TIMEOUT,
  );

  it(
    '9. saves fall behind (etcd stalled): actual state is not called fresh, no start on the stale picture',
    async () => {
      const c = cluster();
      await c.freshLeader();
      const f = c.sim.foundation;
      const [back, ...gone] = c.pick(1 + SIZE.vanish);
      // `back` vanishes and is heard missing; its start waits out the grace period (3 hb). Then etcd
      // stalls and `back` runs again, brought back out of band: the stored picture says it is missing,
      // the foundation says it runs. A start for it would be a start on stale state.
      c.mark(`instance ${back} vanishes`);
      c.recorder.vanish(back!);
      await sleep(1.5 * HB);
      const t = c.mark(`etcd stalls (SIGSTOP); instance ${back} runs again (out of band); instances ${gone.join(', ')} vanish`);
      c.etcd.pause();
      const a = Math.floor(back! / f.o.instancesPerApp);
      f.start(f.desiredApp(a).id, f.desiredApp(a).version, back! % f.o.instancesPerApp, Date.now());
      c.recorder.restored(back!);
      for (const g of gone) c.recorder.vanish(g);
      await sleep(5 * HB);
      const resumed = c.mark('etcd resumes (SIGCONT)');
      c.etcd.resume();
      await until(c, allStarted(c), 'a start for every instance that vanished during the stall', TO_START);
      await sleep(SETTLE);
      const takeover = c.takeover(resumed);
      rows.push(row('9. saves fall behind: etcd stalled (SIGSTOP) for 5 heartbeats', c, takeover));

      // Past freshness.max_ingest_lag (1 hb) and a heartbeat of slack, no daemon that says it leads
      // calls actual state fresh, and it says why: INGEST_BEHIND or the store.
      const window = c.samples.filter((s) => s.ok && s.at >= t + 2 * HB && s.at < resumed);
      expect(window.length, `no daemon answered /v1/status while etcd was stalled\n${c.story()}`).toBeGreaterThan(0);
      const wrong = window.filter((s) => s.leader && (s.actualFresh || !/INGEST_BEHIND|etcd|store/i.test(`${s.actualReason} ${s.problems.join(' ')}`)));
      expect(
        wrong.map(
          (s) =>
            `+${((s.at - c.t0) / 1000).toFixed(2)}s ${s.daemon}: leader, actual fresh ${s.actualFresh}, reason ${JSON.stringify(s.actualReason)}, problems ${s.problems.join(',')}`,
        ),
        `a leader called actual state fresh, or did not say why not, while its saves could not reach etcd\n${c.story()}`,
      ).toEqual([]);
      const during = c.recorder.between(t, resumed);
      expect(during.length, `orders sent while etcd was stalled:\n${c.recorder.format(during, c.t0)}\n${c.story()}`).toBe(0);
      expectClean(c);
      expectTakeover(c, takeover, LEASE_MS + ACTUAL_TTL + 6 * HB + 5_000);
    },
    TIMEOUT,
  );
});
