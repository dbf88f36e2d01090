/**
 * etcd for bench/scale, as an operator runs it under write load: auto-compaction (history older
 * than a minute is dropped, so a store rewriting its keys does not grow etcd without end), a
 * backend quota above the 2 GB default, and requests up to 64 MiB (the default 1.5 MiB refuses
 * the one-transaction replace of a large desired state). Otherwise as test/helpers/etcd.ts: one member on free
 * loopback ports, a temporary data dir, stopped (and the dir removed) at the end.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, ManagedProcess, resolveBinary } from '../test/helpers/ports.js';

export interface BenchEtcd {
  endpoint: string;
  pid: number;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';

export async function startBenchEtcd(): Promise<BenchEtcd> {
  const dataDir = await mkdtemp(join(tmpdir(), 'hmgate-scale-etcd-'));
  const [clientPort, peerPort] = [await freePort(HOST), await freePort(HOST)];
  const client = `http://${HOST}:${clientPort}`;
  const peer = `http://${HOST}:${peerPort}`;
  const bin = resolveBinary('etcd', 'ETCD_BIN', ['/usr/bin/etcd', '/usr/local/bin/etcd']);
  const proc = new ManagedProcess(
    `etcd on ${client}`,
    bin,
    [
      '--name',
      'scale',
      '--data-dir',
      dataDir,
      '--listen-client-urls',
      client,
      '--advertise-client-urls',
      client,
      '--listen-peer-urls',
      peer,
      '--initial-advertise-peer-urls',
      peer,
      '--initial-cluster',
      `scale=${peer}`,
      '--initial-cluster-state',
      'new',
      '--log-level',
      'error',
      '--logger',
      'zap',
      '--auto-compaction-mode',
      'periodic',
      '--auto-compaction-retention',
      '1m',
      '--quota-backend-bytes',
      String(8 * 1024 ** 3),
      // The desired state of 100 000 apps is about 13 MB, replaced in one transaction.
      '--max-request-bytes',
      String(64 * 1024 ** 2),
    ],
    { orphanPaths: [dataDir] },
  );
  try {
    await proc.waitUntilReady(async () => {
      const res = await fetch(`${client}/health`, { signal: AbortSignal.timeout(1_000) });
      return res.ok && ((await res.json()) as { health?: string }).health === 'true';
    }, 15_000);
  } catch (err) {
    await rm(dataDir, { recursive: true, force: true });
    throw err;
  }
  let stopping: Promise<void> | undefined;
  return {
    endpoint: client,
    pid: proc.pid,
    stop: () =>
      (stopping ??= (async () => {
        await proc.stop(5_000);
        await rm(dataDir, { recursive: true, force: true });
      })()),
  };
}
