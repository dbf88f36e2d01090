/**
 * What `hmgate doctor` checks for a heartbeat stage. Heartbeats: listen on the stage's subject for 3
 * heartbeat intervals (less once every agent has had time to heartbeat once) and keep what the
 * later checks need: agents, instances by cc_partition, and the apps heartbeating. cc_partition
 * (when the stage keeps only one: cc_partition_filter): do the agents heartbeat instances of it? If
 * none of the instances heard is of the configured partition, every desired instance would look
 * missing — both values are named, and the key to set.
 */
import type { NatsConnection } from 'nats';
import {
  counted,
  fail,
  humanMs,
  makeProblem,
  optionKey,
  pass,
  skip,
  type CheckResult,
  type DoctorFindings,
  type DoctorInput,
  type HeartbeatSample,
} from '../../src/sdk/index.js';
import type { HeartbeatStageOptions } from './heartbeat.js';

export async function heartbeatDoctor(input: DoctorInput<HeartbeatStageOptions>): Promise<DoctorFindings> {
  const { options, heartbeatMs } = input;
  const heard = input.nats
    ? await sampleHeartbeats(input.nats, String(options.subject ?? 'dea.heartbeat'), heartbeatsWindow(heartbeatMs), heartbeatMs)
    : undefined;
  const results = [checkHeartbeats(input.path, options, heard, heartbeatMs)];
  const partition = checkPartition(input.path, options, heard);
  if (partition) results.push(partition);
  return { results, heartbeats: heard ?? null };
}

interface Droplet {
  droplet?: unknown;
  cc_partition?: unknown;
}

/** Listens for up to `windowMs`; stops early once every agent had an interval to heartbeat once. */
async function sampleHeartbeats(nc: NatsConnection, subject: string, windowMs: number, heartbeatMs: number): Promise<HeartbeatSample> {
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

function heartbeatsWindow(heartbeatMs: number): number {
  return 3 * heartbeatMs;
}

function checkHeartbeats(path: string, options: HeartbeatStageOptions, sample: HeartbeatSample | undefined, heartbeatMs: number): CheckResult {
  const subject = String(options.subject ?? 'dea.heartbeat');
  const what = `heartbeats on ${subject}`;
  if (!sample) return skip('heartbeats', what, 'NATS is not reachable');
  if (sample.heartbeats === 0) {
    if (options.http_listener !== undefined) {
      return skip(
        'heartbeats',
        what,
        `none on NATS within ${humanMs(3 * heartbeatMs)}; heartbeats over HTTPS (http_listener) cannot be heard from here: see /v1/status of the daemon`,
      );
    }
    return fail('heartbeats', makeProblem('NO_HEARTBEATS', { stage: path, subject, window: `3 heartbeat intervals (${humanMs(3 * heartbeatMs)})` }));
  }
  return pass(
    'heartbeats',
    what,
    `${counted(sample.agents.size, 'agent')} heartbeating ${counted(sample.instances, 'instance')} of ${counted(sample.apps.size, 'app')}`,
  );
}

const name = (p: string | null) => (p === null ? '(none)' : JSON.stringify(p));

function checkPartition(path: string, options: HeartbeatStageOptions, sample: HeartbeatSample | undefined): CheckResult | undefined {
  if (options.cc_partition_filter !== true) return undefined; // nothing is left out
  const mine = typeof options.cc_partition === 'string' ? options.cc_partition : 'default';
  const subject = String(options.subject ?? 'dea.heartbeat');
  const what = `cc_partition of the heartbeats on ${subject}`;
  if (!sample || sample.instances === 0) return skip('cc_partition', what, 'no instance heartbeating to compare');
  const ours = sample.partitions.get(mine) ?? 0;
  const others = [...sample.partitions.entries()].filter(([p]) => p !== mine).sort((a, b) => b[1] - a[1]);
  if (ours === 0) {
    const theirs = others[0]![0];
    // Named by the key that changes it: the top-level cc_partition when the stage took it from there.
    const key = optionKey(options, path, 'cc_partition');
    return fail('cc_partition', makeProblem('CC_PARTITION_MISMATCH', { stage: path, subject, theirs, mine, key }));
  }
  const also = others.length ? `; also heard, and left out: ${others.map(([p, n]) => `${name(p)} (${n})`).join(', ')}` : '';
  return pass('cc_partition', what, `${ours} instance(s) of cc_partition ${name(mine)}${also}`);
}
