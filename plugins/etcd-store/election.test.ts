/**
 * Leader election on a real etcd (one per file), with 2 s leases: one of two candidates leads, a
 * resignation hands over at once, a leader that cannot reach etcd steps down within its TTL, and a
 * leader that vanishes without resigning is replaced once its lease expires.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEtcdClient } from './client.js';
import { startEtcd, waitFor, type EtcdHandle } from '../../test/helpers/index.js';
import { AlwaysLeader } from '../../src/pipeline/leadership/always-leader.js';
import type { Leadership } from '../../src/sdk/leadership.js';
import { LeaderElection } from './election.js';

const TTL_SECONDS = 2;
const quiet = { info() {}, warn() {}, debug() {} };

let etcd: EtcdHandle;
let seq = 0;
const clients: Etcd3[] = [];
const elections: LeaderElection[] = [];

beforeAll(async () => {
  etcd = await startEtcd();
});

afterAll(async () => {
  await etcd?.stop();
});

afterEach(async () => {
  if (etcd.paused) etcd.resume();
  await Promise.all(elections.splice(0).map((e) => e.stop()));
  for (const c of clients.splice(0)) c.close();
});

interface Candidate {
  id: string;
  client: Etcd3;
  election: LeaderElection;
  changes: boolean[];
}

function candidates(n: number): Candidate[] {
  const name = `hmgate-test-${++seq}`;
  return Array.from({ length: n }, (_, i) => {
    const client = createEtcdClient({ endpoints: [etcd.endpoint], timeoutMs: 1_000 });
    clients.push(client);
    const id = `daemon-${i + 1}`;
    const election = new LeaderElection(client, { name, ttlSeconds: TTL_SECONDS, id, logger: quiet });
    elections.push(election);
    const changes: boolean[] = [];
    election.onChange((v) => changes.push(v));
    return { id, client, election, changes };
  });
}

async function oneLeader(cs: Candidate[], timeoutMs = 10_000): Promise<Candidate> {
  return waitFor(
    () => {
      const leaders = cs.filter((c) => c.election.isLeader);
      return leaders.length === 1 ? leaders[0] : undefined;
    },
    { timeoutMs, intervalMs: 20, what: 'exactly one leader' },
  );
}

describe('LeaderElection', () => {
  it('elects exactly one of two candidates, and both observe who it is', async () => {
    const cs = candidates(2);
    for (const c of cs) c.election.start();
    const leader = await oneLeader(cs);
    await waitFor(() => cs.every((c) => c.election.leaderId() === leader.id), { what: 'both to observe the leader' });
    // It stays that way.
    await new Promise((r) => setTimeout(r, 1_500));
    expect(cs.filter((c) => c.election.isLeader)).toEqual([leader]);
    expect(leader.changes).toEqual([true]);
    expect(cs.find((c) => c !== leader)!.changes).toEqual([]);
  });

  it('hands over at once when the leader resigns', async () => {
    const cs = candidates(2);
    for (const c of cs) c.election.start();
    const leader = await oneLeader(cs);
    const other = cs.find((c) => c !== leader)!;
    const t0 = Date.now();
    await leader.election.resign();
    expect(leader.election.isLeader).toBe(false);
    expect(leader.changes).toEqual([true, false]);
    await waitFor(() => other.election.isLeader, { intervalMs: 10, what: 'the other to lead' });
    expect(Date.now() - t0).toBeLessThan(1_000);
    await waitFor(() => other.election.leaderId() === other.id && leader.election.leaderId() === other.id, { what: 'the new leader observed' });
  });

  it('a leader that cannot reach etcd steps down within the TTL; once etcd is back someone leads', async () => {
    const cs = candidates(2);
    for (const c of cs) c.election.start();
    const leader = await oneLeader(cs);
    etcd.pause();
    const t0 = Date.now();
    await waitFor(() => !leader.election.isLeader, { timeoutMs: TTL_SECONDS * 1000 + 1_000, intervalMs: 20, what: 'the leader to report the loss' });
    expect(Date.now() - t0).toBeLessThanOrEqual(TTL_SECONDS * 1000 + 1_000);
    await waitFor(() => leader.changes.at(-1) === false, { timeoutMs: 500, what: 'onChange(false)' });
    expect(cs.some((c) => c.election.isLeader)).toBe(false);
    etcd.resume();
    const next = await oneLeader(cs, 15_000);
    expect(next.changes.at(-1)).toBe(true);
  });

  it('replaces a leader that vanished without resigning once its lease expires', async () => {
    const cs = candidates(2);
    for (const c of cs) c.election.start();
    const leader = await oneLeader(cs);
    const other = cs.find((c) => c !== leader)!;
    const t0 = Date.now();
    // A crashed process: its connection closes, nothing resigns.
    leader.client.close();
    // Within the lease TTL, plus etcd's expiry sweep (every 500 ms) and a busy machine's delays;
    // the takeover times themselves are measured by the chaos suite (npm run chaos).
    await waitFor(() => other.election.isLeader, { timeoutMs: TTL_SECONDS * 1000 + 2_000, intervalMs: 20, what: 'the other to lead' });
    expect(Date.now() - t0).toBeLessThanOrEqual(TTL_SECONDS * 1000 + 2_000);
    expect(leader.election.isLeader).toBe(false);
  });

  it('while etcd does not answer, says why once, not at every retry, and leads once it answers', async () => {
    const warned: string[] = [];
    const logger = { info() {}, debug() {}, warn: (_o: object, msg?: string) => void warned.push(msg ?? '') };
    const client = createEtcdClient({ endpoints: [etcd.endpoint], timeoutMs: 300 });
    clients.push(client);
    const election = new LeaderElection(client, { name: `hmgate-test-${++seq}`, ttlSeconds: TTL_SECONDS, id: 'solo', logger });
    elections.push(election);
    etcd.pause();
    election.start();
    // Retries back off from 250 ms: several within 4 s.
    await new Promise((r) => setTimeout(r, 4_000));
    const retries = warned.filter((m) => /campaigning again/.test(m));
    expect(retries, retries.join('\n')).toHaveLength(1);
    etcd.resume();
    await waitFor(() => election.isLeader, { timeoutMs: 15_000, intervalMs: 50, what: 'leading once etcd answers' });
  });

  it('rejects a TTL etcd cannot have', () => {
    const client = createEtcdClient({ endpoints: [etcd.endpoint], timeoutMs: 1_000 });
    clients.push(client);
    expect(() => new LeaderElection(client, { name: 'x', ttlSeconds: 0.5, id: 'a', logger: quiet })).toThrow(/ttlSeconds/);
  });
});

describe('AlwaysLeader', () => {
  it('leads from the start until it resigns, and reports both', async () => {
    const l = new AlwaysLeader('solo');
    const changes: boolean[] = [];
    l.onChange((v) => changes.push(v));
    l.start();
    expect(l.isLeader).toBe(true);
    expect(l.leaderId()).toBe('solo');
    await l.resign();
    expect(l.isLeader).toBe(false);
    expect(l.leaderId()).toBeNull();
    l.start();
    expect(changes).toEqual([false, true]);
  });

  it('keeps leading when told it is not eligible: alone, there is nobody to hand over to', () => {
    // Told through the Leadership interface, as the daemon tells it.
    const l: Leadership = new AlwaysLeader('solo');
    l.start();
    l.setEligible(false, 'not connected to NATS');
    expect(l.isLeader).toBe(true);
    expect(l.candidacy()).toEqual({ candidate: true, why: null });
  });
});

describe('LeaderElection eligibility', () => {
  it('an ineligible candidate does not campaign, even when it started first and the leader resigns', async () => {
    const [unfit, fit1, fit2] = candidates(3);
    unfit!.election.setEligible(false, 'not connected to NATS');
    unfit!.election.start();
    await new Promise((r) => setTimeout(r, 500));
    fit1!.election.start();
    fit2!.election.start();
    const leader = await oneLeader([unfit!, fit1!, fit2!]);
    expect(leader).not.toBe(unfit);
    expect(unfit!.election.candidacy()).toEqual({ candidate: false, why: 'not connected to NATS' });
    expect(fit1!.election.candidacy()).toEqual({ candidate: true, why: null });
    const other = leader === fit1 ? fit2! : fit1!;
    await leader.election.resign();
    await waitFor(() => other.election.isLeader, { intervalMs: 10, what: 'the other fit candidate to lead' });
    await new Promise((r) => setTimeout(r, 300));
    expect(unfit!.changes).toEqual([]);
    expect(unfit!.election.leaderId()).toBe(other.id);
  });

  it('a leader made ineligible resigns at once; eligible again, it campaigns behind the new leader', async () => {
    const cs = candidates(2);
    for (const c of cs) c.election.start();
    const leader = await oneLeader(cs);
    const other = cs.find((c) => c !== leader)!;
    const t0 = Date.now();
    leader.election.setEligible(false, 'not connected to NATS for 2s');
    expect(leader.election.isLeader).toBe(false);
    expect(leader.changes).toEqual([true, false]);
    await waitFor(() => other.election.isLeader, { intervalMs: 10, what: 'the other to lead' });
    expect(Date.now() - t0).toBeLessThan(1_000);
    leader.election.setEligible(true);
    expect(leader.election.candidacy().candidate).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    expect(leader.election.isLeader).toBe(false);
    await other.election.resign();
    await waitFor(() => leader.election.isLeader, { intervalMs: 10, what: 'the first to lead again' });
  });
});
