/**
 * Chaos: faults of the leader itself — killed, frozen beyond its lease, a daemon NATS refuses that
 * would otherwise win the election — and a collapse of most agents, which the leader must not
 * mistake for their instances' loss. Three `hmgate run` daemons on etcd, the live foundation
 * obeying the orders, every order judged by the recorder (see recorder.ts).
 *
 * The collapse: more than freshness.collapse.share of the agents fall silent within one heartbeat
 * TTL, in a foundation above freshness.collapse.min_agents (set low at the CI size). No start for
 * their instances while they are silent: when they return, nothing at all; when they are really
 * gone, nothing until an operator confirms the loss (POST /v1/actual/confirm-loss), then exactly
 * one start per lost instance.
 */
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { allStarted, expectClean, expectTakeover, until } from './checks.js';
import {
  ACTUAL_TTL,
  Cluster,
  GRACE,
  HB,
  HEARTBEAT_TTL,
  LEASE_MS,
  SETTLE,
  SIZE,
  publishRows,
  row,
  sharedCluster,
  sleep,
  type Daemon,
  type FaultRow,
  type Sample,
} from './harness.js';

const rows: FaultRow[] = [];
/** Per test: a fault takes a few lease periods and freshness windows at most. */
const TIMEOUT = 4 * LEASE_MS + 80 * HB + 30_000;
/** Time to a start once a new leader leads: its freshness window, the missing grace period, slack. */
const TO_START = LEASE_MS + 16 * HB + 10_000;
const COLLAPSE_TIMEOUT = 4 * LEASE_MS + 120 * HB + 60_000;
const collapsed = (s: Sample) => s.problems.includes('ACTUAL_COLLAPSE') || /ACTUAL_COLLAPSE/.test(s.actualReason);

afterAll(() => publishRows('leader', rows));

// Faults 1, 2 and 8 share one cluster (start-up is much of a fault's time); each begins from a
// whole foundation with a fresh leader (recover()) and a recorder of its own.
describe('on a shared cluster', () => {
  const cluster = sharedCluster(TIMEOUT, { extra: [SIZE.collapse] });

  it(
    '1. kill -9 of the leader while instances vanish: a standby takes over and starts each exactly once',
    async () => {
      const c = cluster();
      const leader = await c.freshLeader();
      const gone = c.pick(SIZE.vanish);
      const t = c.mark(`instances ${gone.join(', ')} vanish; kill -9 of the leader ${leader.name}`);
      for (const g of gone) c.recorder.vanish(g);
      leader.proc.child.kill('SIGKILL');
      await until(c, allStarted(c), 'a start for every vanished instance', TO_START);
      c.respawn(); // its replacement starts while the test settles
      await sleep(SETTLE);
      const takeover = c.takeover(t, [leader.name]);
      rows.push(row('1. kill -9 of the leader (instances vanish meanwhile)', c, takeover));
      expectClean(c);
      expectTakeover(c, takeover, LEASE_MS + ACTUAL_TTL + 4 * HB + 3_000);
    },
    TIMEOUT,
  );

  it(
    '2. SIGSTOP of the leader beyond its lease, then SIGCONT: the old leader does not act on what it saw before',
    async () => {
      const c = cluster();
      const leader = await c.freshLeader();
      const gone = c.pick(SIZE.vanish);
      c.mark(`instances ${gone.join(', ')} vanish`);
      for (const g of gone) c.recorder.vanish(g);
      // The leader hears them missing and holds their starts for the grace period (3 hb); frozen now,
      // it wakes with those starts due — on a picture that is no longer true.
      await sleep(1.5 * HB);
      const t = c.mark(`SIGSTOP of the leader ${leader.name}`);
      leader.proc.child.kill('SIGSTOP');
      await until(c, allStarted(c), 'a new leader starting every vanished instance', TO_START);
      // Frozen beyond its lease, and until the new leader's starts were carried out.
      const frozenFor = LEASE_MS + 2 * HB;
      if (Date.now() - t < frozenFor) await sleep(frozenFor - (Date.now() - t));
      const cont = c.mark(`SIGCONT of ${leader.name}`);
      leader.proc.child.kill('SIGCONT');
      await sleep(SETTLE);
      const takeover = c.takeover(t, [leader.name]);
      rows.push(row('2. SIGSTOP of the leader beyond its lease, then SIGCONT', c, takeover));
      expectClean(c);
      // Woken, it does not lead: the new leader holds the lease.
      const late = c.samplesOf(leader.name, cont + 2 * HB).filter((s) => s.leader);
      expect(late.length, `the old leader claimed leadership after SIGCONT (${late.length} samples)\n${c.story()}`).toBe(0);
      expectTakeover(c, takeover, LEASE_MS + ACTUAL_TTL + 4 * HB + 3_000);
    },
    TIMEOUT,
  );

  it(
    '8. a collapse of most agents: no starts until they return or an operator confirms the loss, then one per lost instance',
    async () => {
      const c = cluster();
      await c.freshLeader();
      const f = c.sim.foundation;
      // 60 % of the agents: more than the default share (0.55), all within one heartbeat.
      const lost = Array.from({ length: Math.ceil(SIZE.agents * 0.6) }, (_, d) => d);
      const hold = HEARTBEAT_TTL + GRACE + 4 * HB;

      // A: they fall silent and return. Their instances ran all along: any start for them is stale.
      const t1 = c.mark(`agents ${lost.join(', ')} fall silent`);
      c.sim.silence(lost);
      await sleep(hold);
      const r1 = c.mark('they heartbeat again');
      c.sim.unsilence(lost);
      const seenA = c.samples.filter((s) => s.ok && s.leader && s.at >= t1 && s.at < r1 && collapsed(s)).length;
      await c.freshLeader();
      await sleep(2 * HB);

      // B: they die — silent, their instances gone. Still no start until the operator confirms.
      const t2 = c.mark(`agents ${lost.join(', ')} die: their instances vanish`);
      for (const d of lost) for (let g = d; g < f.instances; g += SIZE.agents) c.recorder.vanish(g);
      c.sim.silence(lost);
      await sleep(hold);
      const held = c.recorder.between(t2, Date.now(), 'start');
      const seenB = c.samples.filter((s) => s.ok && s.leader && s.at >= t2 && collapsed(s)).length;
      const leader = await c.leaderNow();
      const t3 = c.mark(`the operator confirms the loss on ${leader.name}`);
      const res = await leader.api('/v1/actual/confirm-loss', { method: 'POST' });
      const confirmed = `${res.status} ${await res.text()}`;
      // The lost agents are replaced by empty ones (their VMs recreated), where the starts land.
      c.sim.unsilence(lost);
      c.mark('replacement agents (empty) heartbeat');
      let takeover: number | undefined;
      try {
        await until(c, allStarted(c), 'a start for every lost instance', LEASE_MS + 30 * HB + Math.ceil(f.instances / 60) * HB + 15_000);
        await sleep(SETTLE);
      } finally {
        takeover = c.takeover(t3);
        rows.push(row('8. collapse: 60 % of the agents silent within a heartbeat (returning, then lost and confirmed)', c, takeover));
      }

      expect(seenA, `no leader status said ACTUAL_COLLAPSE while the agents were silent\n${c.story()}`).toBeGreaterThan(0);
      expect(seenB, `no leader status said ACTUAL_COLLAPSE while the agents were lost\n${c.story()}`).toBeGreaterThan(0);
      expect(held.length, `starts before the operator confirmed the loss:\n${c.recorder.format(held, c.t0)}\n${c.story()}`).toBe(0);
      expect(res.ok, `POST /v1/actual/confirm-loss: ${confirmed}`).toBe(true);
      expectClean(c);
      expectTakeover(c, takeover, ACTUAL_TTL + 6 * HB + 3_000);
    },
    COLLAPSE_TIMEOUT,
  );
});

describe('on a cluster of its own', () => {
  let own: Cluster | undefined;
  afterEach(async () => {
    await own?.stop();
    own = undefined;
  }, TIMEOUT);

  it(
    '7. a daemon NATS refuses never leads while healthy daemons exist, even started first and after the leader resigns',
    async () => {
      const c = (own = await Cluster.start());
      const refused = await c.addDaemon('refused', { natsPassword: 'wrong-password' });
      c.mark('the daemon with wrong NATS credentials starts, alone: it would win the election');
      await sleep(LEASE_MS);
      const good = await c.addDaemons(['a', 'b']);
      c.mark('daemons a and b start');
      const refusedLed = () => c.samplesOf(refused.name).filter((s) => s.leader);
      let leader: Daemon;
      try {
        leader = await c.freshLeader(LEASE_MS + 16 * HB + 10_000, good);
      } catch (err) {
        expect(refusedLed().length, `the daemon refused by NATS led, so no healthy daemon could\n${c.story()}`).toBe(0);
        throw err;
      }
      // The leader resigns (SIGTERM): the refused daemon must not take over, the other healthy one does.
      const t = c.mark(`SIGTERM of the leader ${leader.name} (it resigns)`);
      await leader.proc.stop('SIGTERM');
      const gone = c.pick(SIZE.vanish);
      c.mark(`instances ${gone.join(', ')} vanish`);
      for (const g of gone) c.recorder.vanish(g);
      await until(c, allStarted(c), 'a start for every vanished instance after the resignation', TO_START);
      await sleep(SETTLE);
      const takeover = c.takeover(t, [leader.name, refused.name]);
      rows.push(row('7. a daemon refused by NATS (wrong credentials), started first and when the leader resigns', c, takeover));
      expect(refusedLed().length, `the daemon refused by NATS claimed leadership in ${refusedLed().length} status samples\n${c.story()}`).toBe(0);
      // The premise: NATS did refuse it, and it said so.
      const refusedSaid = c.samplesOf(refused.name).filter((s) => s.problems.includes('NATS_AUTH_REFUSED')).length;
      expect(refusedSaid, `the daemon with wrong NATS credentials never reported NATS_AUTH_REFUSED\n${c.story()}`).toBeGreaterThan(0);
      expectClean(c);
      expectTakeover(c, takeover, LEASE_MS + ACTUAL_TTL + 4 * HB + 3_000);
    },
    TIMEOUT,
  );
});
