/**
 * Chaos: faults of what the daemons are told — a Cloud Controller that answers 500 or hangs beyond
 * the desired TTL, and agents that fall silent while dea.advertise carries garbage and busy
 * adverts. Three `hmgate run` daemons on etcd share one cluster; each fault begins from a whole
 * foundation with a fresh leader and a recorder of its own.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { agentGuid, appGuid } from '../../src/sim/live-foundation.js';
import { allStarted, expectClean, expectTakeover, until } from './checks.js';
import { ACTUAL_TTL, DESIRED_TTL, GRACE, HB, HEARTBEAT_TTL, LEASE_MS, SETTLE, SIZE, publishRows, row, sharedCluster, sleep, type FaultRow } from './harness.js';

const rows: FaultRow[] = [];
const TIMEOUT = 4 * LEASE_MS + 100 * HB + 30_000;
const TO_START = LEASE_MS + 20 * HB + 15_000;

afterAll(() => publishRows('inputs', rows));

describe('on a shared cluster', () => {
  const cluster = sharedCluster(TIMEOUT);

  for (const [n, fault, words] of [
    ['5a', '500', 'the CC answers 500'],
    ['5b', 'hang', 'the CC hangs'],
  ] as const) {
    it(
      `${n}. ${words} beyond the desired TTL: no action on stale desired state; one start per vanished instance once it answers`,
      async () => {
        const c = cluster();
        await c.freshLeader();
        c.mark(`${words} (bulk API)`);
        c.cc.setFault(fault);
        // Desired state goes stale within its TTL (12 hb) of the last complete fetch.
        await until(
          c,
          async () => {
            const l = await c.leaderNow();
            return (await l.status()).desired.fresh === false;
          },
          'the leader calling desired state stale',
          DESIRED_TTL + 12 * HB + 5_000,
        );
        const stale = c.mark('desired state stale');
        const gone = c.pick(SIZE.vanish);
        c.mark(`instances ${gone.join(', ')} vanish`);
        for (const g of gone) c.recorder.vanish(g);
        // Well past the missing grace period: a daemon acting on the stale desired state would start them now.
        await sleep(GRACE + 4 * HB);
        const back = c.mark('the CC answers again');
        c.cc.setFault('none');
        await until(c, allStarted(c), 'a start for every vanished instance', TO_START);
        await sleep(SETTLE);
        const takeover = c.takeover(back);
        rows.push(row(`${n}. CC bulk API ${fault === '500' ? 'answers 500' : 'hangs'} beyond the desired TTL (instances vanish meanwhile)`, c, takeover));
        const during = c.recorder.between(stale, back);
        expect(during.length, `orders sent on stale desired state:\n${c.recorder.format(during, c.t0)}\n${c.story()}`).toBe(0);
        expectClean(c);
        // From the CC's return: the next poll (6 hb), its fetch, slack.
        expectTakeover(c, takeover, 12 * HB + 5_000);
      },
      TIMEOUT,
    );
  }

  it(
    '6. agents silent beyond the heartbeat TTL while garbage and busy adverts arrive: 0 starts meanwhile, starts resume after',
    async () => {
      const c = cluster();
      await c.freshLeader();
      const f = c.sim.foundation;
      const all = Array.from({ length: SIZE.agents }, (_, d) => d);
      const t = c.mark('every agent falls silent; garbage and busy adverts on dea.advertise');
      c.sim.silence(all);
      // Busy: each agent advertises the apps it runs (app_id_to_count not empty), as a DEA does.
      const busy = all.map((d) => {
        const counts: Record<string, number> = {};
        for (let g = d; g < f.instances; g += SIZE.agents) {
          const app = appGuid(Math.floor(g / f.o.instancesPerApp));
          counts[app] = (counts[app] ?? 0) + 1;
        }
        return JSON.stringify({
          id: agentGuid(d),
          stacks: ['lucid64'],
          available_memory: 4096,
          available_disk: 8192,
          app_id_to_count: counts,
          placement_properties: { zone: 'default' },
        });
      });
      const garbage = Uint8Array.from([0xde, 0xad, 0xbe, 0xef]);
      const end = t + HEARTBEAT_TTL + GRACE + 6 * HB;
      for (let round = 0; Date.now() < end && round < 1_000; round++) {
        await c.publish('dea.advertise', garbage);
        for (const b of busy) await c.publish('dea.advertise', b);
        await sleep(HB / 2);
      }
      const back = c.mark('the agents heartbeat again');
      c.sim.unsilence();
      const silentStarts = c.recorder.between(t, back, 'start');

      // Starts resume: once a leader is fresh again, a vanished instance is started, once.
      await c.freshLeader();
      const gone = c.pick(SIZE.vanish);
      c.mark(`instances ${gone.join(', ')} vanish`);
      for (const g of gone) c.recorder.vanish(g);
      await until(c, allStarted(c), 'a start for every vanished instance', TO_START);
      await sleep(SETTLE);
      const takeover = c.takeover(back);
      rows.push(row('6. agents silent beyond the heartbeat TTL; garbage (4 bytes) and busy adverts on dea.advertise', c, takeover));

      expect(silentStarts.length, `starts while every agent was silent:\n${c.recorder.format(silentStarts, c.t0)}\n${c.story()}`).toBe(0);
      // The adverts did not keep actual state fresh: past the freshness TTL and a heartbeat, every
      // daemon that says it leads calls it not fresh.
      const window = c.samples.filter((s) => s.ok && s.leader && s.at >= t + ACTUAL_TTL + 2 * HB && s.at < back);
      expect(window.length, `no leader answered /v1/status while the agents were silent\n${c.story()}`).toBeGreaterThan(0);
      const fresh = window.filter((s) => s.actualFresh);
      expect(fresh.length, `a leader called actual state fresh on adverts alone (${fresh.length} of ${window.length} samples)\n${c.story()}`).toBe(0);
      // The garbage was dropped and counted.
      let dropped = 0;
      for (const d of c.daemons) {
        const text = await d.metrics().catch(() => '');
        for (const line of text.split('\n'))
          if (line.startsWith('hmgate_dropped_messages_total{') && line.includes('subject="dea.advertise"')) dropped += Number(line.split(' ').pop());
      }
      expect(dropped, 'hmgate_dropped_messages_total{subject="dea.advertise"} on the daemons').toBeGreaterThan(0);
      expectClean(c);
      expectTakeover(c, takeover, ACTUAL_TTL + 4 * HB + 3_000);
    },
    TIMEOUT,
  );
});
