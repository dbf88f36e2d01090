/**
 * Problems that are consequences of the store failing are shown as the store's: a desired state
 * or heartbeats not saved because etcd is unreachable are not the CC's or the agents' fault. Each
 * stage is given its built-in plugin's definition, as the engine does.
 */
import { describe, expect, it } from 'vitest';
import bulkApiPlugin from '../../plugins/bulk-api/index.js';
import etcdPlugin from '../../plugins/etcd-store/index.js';
import heartbeatPlugin from '../../plugins/heartbeat/index.js';
import { deriveProblems, type ProblemFacts, type StageFacts } from '../../src/operator/problems.js';
import type { PluginDefinition } from '../../src/sdk/index.js';

const ETCD = 'http://127.0.0.1:2379';
const UNREACHABLE = `etcd at ${ETCD} is unreachable while reading the state: 14 UNAVAILABLE: No connection established`;

const BUILTIN: Record<string, PluginDefinition> = { 'bulk-api': bulkApiPlugin, etcd: etcdPlugin, heartbeat: heartbeatPlugin };

function stage(id: string, section: string, plugin: string, options: Record<string, unknown> = {}, health: Partial<StageFacts> = {}): StageFacts {
  const definition = BUILTIN[plugin];
  return { id, section, plugin, ...(definition ? { definition } : {}), options, healthy: true, last_error: null, ...health };
}

function facts(
  stages: { store?: Partial<StageFacts>; heartbeats?: Partial<StageFacts>; desired?: Partial<StageFacts> } = {},
  over: Partial<ProblemFacts> = {},
): ProblemFacts {
  return {
    uptimeMs: 60_000,
    heartbeatMs: 1000,
    actualTtlMs: 3000,
    servers: ['nats://127.0.0.1:4222'],
    stages: [
      stage('store', 'store', 'etcd', { endpoints: [ETCD] }, stages.store),
      stage('bus', 'bus', 'nats'),
      stage('heartbeats', 'sources', 'heartbeat', { subject: 'dea.heartbeat', sync_interval: 100 }, stages.heartbeats),
      stage('desired', 'sources', 'bulk-api', { url: 'https://cc.example.com' }, stages.desired),
    ],
    actual: { fresh: true, reason: null },
    desired: { fresh: true, reason: null },
    // The store's view while etcd is down: no agent has been saved.
    state: { desiredApps: 0, liveInstances: 0, heartbeatingApps: 0, desiredHeartbeating: false, agents: 0 },
    listeners: [],
    ...over,
  };
}

const codes = (f: ProblemFacts) => deriveProblems(f).map((p) => p.code);

describe('problems while the store fails', () => {
  it('etcd unreachable: ETCD_UNREACHABLE alone, not CC_BAD_ANSWER for the desired state it could not save, nor NO_HEARTBEATS', () => {
    const f = facts({
      store: { healthy: false, last_error: `cannot read the state yet: ${UNREACHABLE}` },
      heartbeats: { healthy: false, last_error: `saving heartbeats to the store failed: ${UNREACHABLE}` },
      desired: { healthy: false, last_error: `Failed to sync desired state to the store: ${UNREACHABLE}` },
    });
    const problems = deriveProblems(f);
    expect(problems.map((p) => p.code)).toEqual(['ETCD_UNREACHABLE']);
    expect(problems[0]!.message).toContain(`etcd at ${ETCD}: not reachable (cannot read the state yet: etcd at`);
    expect(problems[0]!.fix).toContain('`store.endpoints`');
  });

  it("the store healthy but a desired-state write failing: the write is named as the store's, with what was not saved", () => {
    const problems = deriveProblems(
      facts({
        desired: {
          healthy: false,
          last_error: `Failed to sync desired state to the store: ${UNREACHABLE.replace('reading the state', 'replacing the desired state')}`,
        },
      }),
    );
    expect(problems.map((p) => p.code)).toEqual(['ETCD_UNREACHABLE']);
    expect(problems[0]!.message).toBe(
      `etcd at ${ETCD}: not reachable (desired state not saved: etcd at ${ETCD} is unreachable while replacing the desired state: 14 UNAVAILABLE: No connection established)`,
    );
  });

  it('heartbeats not saved: no NO_HEARTBEATS beside the store problem', () => {
    const f = facts({ heartbeats: { healthy: false, last_error: `saving heartbeats to the store failed: ${UNREACHABLE}` } });
    expect(codes(f)).toEqual(['ETCD_UNREACHABLE']);
  });

  it('a record too large for etcd: ETCD_REQUEST_TOO_LARGE naming the agent and both limits, not ETCD_UNREACHABLE', () => {
    const error = `saving heartbeats to the store failed: agent "dea-7" is too large for etcd at ${ETCD}: its record is 2500000 bytes, more than one etcd request may carry (1572864 bytes, max_request_bytes / etcd's --max-request-bytes): its heartbeats are not saved`;
    const problems = deriveProblems(
      facts(
        { heartbeats: { healthy: false, last_error: error } },
        { state: { desiredApps: 1, liveInstances: 3, heartbeatingApps: 1, desiredHeartbeating: true } },
      ),
    );
    expect(problems.map((p) => p.code)).toEqual(['ETCD_REQUEST_TOO_LARGE']);
    expect(problems[0]!.message).toContain('agent "dea-7" is too large');
    expect(problems[0]!.fix).toContain('`store.max_request_bytes`');
  });

  it("with the store fine, no heartbeats at all is still NO_HEARTBEATS, and a CC failure still the CC's", () => {
    expect(codes(facts())).toEqual(['NO_HEARTBEATS']);
    const f = facts({ desired: { healthy: false, last_error: 'CC bulk API at https://cc.example.com answered 500 on page 1 (CF-ServerError)' } });
    expect(codes(f)).toEqual(['CC_BAD_ANSWER', 'NO_HEARTBEATS']);
  });
});
