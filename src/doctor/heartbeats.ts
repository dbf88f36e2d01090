/**
 * Heartbeats: listen on the heartbeat stage's subject for 3 heartbeat intervals (less once every
 * agent has had time to heartbeat once) and keep what the later checks need: agents, instances by
 * cc_partition, and the apps heartbeating.
 */
import type { NatsConnection } from 'nats';
import type { ResolvedStage } from '../config/load.js';
import { makeProblem } from '../operator/problem-codes.js';
import { humanMs } from '../operator/problems.js';
import { fail, pass, skip, stagePath, type CheckResult } from './result.js';

export interface HeartbeatSample {
  subject: string;
  windowMs: number;
  heartbeats: number;
  agents: Set<string>;
  instances: number;
  /** Instances per cc_partition; null for instances without one. */
  partitions: Map<string | null, number>;
  /** Guids of every app with an instance heartbeating. */
  apps: Set<string>;
  /** How long it listened. */
  listenedMs: number;
}

interface Droplet {
  droplet?: unknown;
  cc_partition?: unknown;
}

/** Listens for up to `windowMs`; stops early once every agent had an interval to heartbeat once. */
export async function sampleHeartbeats(nc: NatsConnection, subject: string, windowMs: number, heartbeatMs: number): Promise<HeartbeatSample> {
  const sample: HeartbeatSample = { subject, windowMs, heartbeats: 0, agents: new Set(), instances: 0, partitions: new Map(), apps: new Set(), listenedMs: 0 };
  // The last heartbeat of each agent: an agent heard twice counts once.
  const last = new Map<string, Droplet[]>();
  const started = Date.now();
  const decoder = new TextDecoder();
  await new Promise<void>((resolve) => {
    let timer = setTimeout(done, windowMs);
    const sub = nc.subscribe(subject, {
      callback: (_err, msg) => {
        let doc: { dea?: unknown; droplets?: unknown };
        try {
          doc = JSON.parse(decoder.decode(msg.data)) as typeof doc;
        } catch {
          return;
        }
        if (typeof doc !== 'object' || doc === null) return;
        if (sample.heartbeats++ === 0) {
          // Every agent heartbeats once per interval: one more interval after the first is enough.
          clearTimeout(timer);
          timer = setTimeout(done, Math.min(Math.max(0, started + windowMs - Date.now()), Math.round(heartbeatMs * 1.2) + 50));
        }
        const droplets = Array.isArray(doc.droplets) ? (doc.droplets as unknown[]).filter((d): d is Droplet => typeof d === 'object' && d !== null) : [];
        last.set(typeof doc.dea === 'string' ? doc.dea : `(unnamed ${sample.heartbeats})`, droplets);
      },
    });
    function done(): void {
      clearTimeout(timer);
      sub.unsubscribe();
      resolve();
    }
  });
  sample.listenedMs = Date.now() - started;
  for (const [agent, droplets] of last) {
    sample.agents.add(agent);
    for (const d of droplets) {
      sample.instances++;
      const p = typeof d.cc_partition === 'string' ? d.cc_partition : null;
      sample.partitions.set(p, (sample.partitions.get(p) ?? 0) + 1);
      if (typeof d.droplet === 'string') sample.apps.add(d.droplet);
    }
  }
  return sample;
}

export function heartbeatsWindow(heartbeatMs: number): number {
  return 3 * heartbeatMs;
}

export function checkHeartbeats(stage: ResolvedStage, sample: HeartbeatSample | undefined, heartbeatMs: number): CheckResult {
  const subject = String(stage.options.subject ?? 'dea.heartbeat');
  const what = `heartbeats on ${subject}`;
  if (!sample) return skip('heartbeats', what, 'NATS is not reachable');
  if (sample.heartbeats === 0) {
    if (stage.options.http_listener !== undefined) {
      return skip(
        'heartbeats',
        what,
        `none on NATS within ${humanMs(3 * heartbeatMs)}; heartbeats over HTTPS (http_listener) cannot be heard from here: see /v1/status of the daemon`,
      );
    }
    return fail(
      'heartbeats',
      makeProblem('NO_HEARTBEATS', { stage: stagePath(stage), subject, window: `3 heartbeat intervals (${humanMs(3 * heartbeatMs)})` }),
    );
  }
  return pass('heartbeats', what, `${sample.agents.size} agent(s) heartbeating ${sample.instances} instance(s) of ${sample.apps.size} app(s)`);
}
