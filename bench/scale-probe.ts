/**
 * What bench/scale reads while a run goes on, all from outside the daemon: Prometheus text
 * (the daemon's /metrics, etcd's /metrics), /proc of a process, and the ingest lag — a watch on
 * the store's keys in etcd that notes when each restarted instance's guid (which carries the time
 * the simulator built its first heartbeat) is first stored.
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type Watcher } from 'etcd3';
import { PROBE_GUID } from '../src/sim/live-foundation.js';
import { LagHistogram } from '../src/sim/live.js';

/** Sum of every series of `name` (any labels), or undefined when absent. */
export function promValue(text: string, name: string, labelFilter?: (labels: string) => boolean): number | undefined {
  let sum: number | undefined;
  const re = new RegExp(`^${name}(\\{[^}]*\\})? ([-+0-9.eE]+|NaN|[+-]Inf)$`, 'gm');
  for (const m of text.matchAll(re)) {
    if (labelFilter && !labelFilter(m[1] ?? '')) continue;
    sum = (sum ?? 0) + Number(m[2]);
  }
  return sum;
}

/** The cumulative count of a histogram bucket `le`. */
export function promBucket(text: string, name: string, le: string): number | undefined {
  return promValue(text, `${name}_bucket`, (labels) => labels.includes(`le="${le}"`));
}

export async function fetchText(url: string, timeoutMs = 10_000, headers: Record<string, string> = {}): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url} answered ${res.status}`);
  return text;
}

export interface ProcSample {
  /** utime + stime, in seconds. */
  cpuS: number;
  rssMb: number;
  hwmMb: number;
}

const CLK_TCK = 100;

export function procSample(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cpuS = (Number(f[11]) + Number(f[12])) / CLK_TCK;
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { cpuS, rssMb: kb('VmRSS') / 1024, hwmMb: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** Share of one core used between two samples, in %. */
export function cpuPercent(a: ProcSample | undefined, b: ProcSample | undefined, seconds: number): number | undefined {
  if (!a || !b || seconds <= 0) return undefined;
  return (100 * (b.cpuS - a.cpuS)) / seconds;
}

/** Lag in whole ms up to 10 minutes; later goes in the last bucket. */
const LAG_BUCKETS = 600_001;

/**
 * Ingest lag: for each restarted instance whose heartbeat was built after the watch began, the
 * time from then until a key holding its guid was first written (the watch's arrival time).
 */
export class LagWatcher {
  private readonly lags = new LagHistogram(LAG_BUCKETS);
  private readonly seen = new Map<string, number>();
  private watcher: Watcher | undefined;
  private readonly client: Etcd3;
  private since = Infinity;
  events = 0;

  constructor(endpoint: string) {
    this.client = new Etcd3({ hosts: [endpoint], grpcOptions: { 'grpc.max_receive_message_length': 64 * 1024 * 1024 } });
  }

  async start(prefix: string): Promise<void> {
    this.since = Date.now();
    this.watcher = await this.client.watch().prefix(prefix).create();
    this.watcher.on('put', (kv) => this.scan(`${kv.key.toString('latin1')} ${kv.value.toString('latin1')}`));
    this.watcher.on('error', () => undefined);
  }

  private scan(text: string): void {
    const now = Date.now();
    this.events++;
    for (const m of text.matchAll(PROBE_GUID)) {
      const built = Number(m[1]);
      if (built < this.since || this.seen.has(m[0])) continue;
      this.seen.set(m[0], built);
      this.lags.add(now - built);
    }
    // Bounded: forget guids built more than 10 minutes ago.
    if (this.seen.size > 200_000) for (const [g, t] of this.seen) if (t < now - 600_000) this.seen.delete(g);
  }

  /** Restarted instances seen stored. */
  get n(): number {
    return this.lags.n;
  }

  quantile(q: number): number | undefined {
    return this.lags.n === 0 ? undefined : this.lags.quantile(q);
  }

  async stop(): Promise<void> {
    await this.watcher?.cancel().catch(() => undefined);
    this.client.close();
  }
}

/**
 * The daemon's freshness markers as its store keeps them in etcd (`<prefix>actual`, `<prefix>desired`:
 * {"timestamp","expiresAt"}), judged by HM9000's rule as src/pipeline/freshness.ts does: actual is
 * fresh when its marker lives and its streak is at least the TTL old, desired when its marker lives.
 * Read from etcd, so watching costs the daemon nothing (its /v1/status walks the whole state).
 */
export class FreshnessMarkers {
  private readonly client: Etcd3;

  constructor(
    endpoint: string,
    private readonly prefix: string,
    private readonly actualTtlMs: number,
  ) {
    this.client = new Etcd3({ hosts: [endpoint], defaultCallOptions: () => ({ deadline: Date.now() + 5_000 }) });
  }

  async verdict(): Promise<{ actual: boolean; desired: boolean }> {
    const now = Date.now();
    const read = async (which: string) => {
      const text = await this.client.get(this.prefix + which).string();
      if (text === null) return undefined;
      const v = JSON.parse(text) as { timestamp?: unknown; expiresAt?: unknown };
      return typeof v.timestamp === 'number' && typeof v.expiresAt === 'number' ? { timestamp: v.timestamp, expiresAt: v.expiresAt } : undefined;
    };
    const [a, d] = await Promise.all([read('actual'), read('desired')]);
    return { actual: a !== undefined && a.expiresAt > now && now - a.timestamp >= this.actualTtlMs, desired: d !== undefined && d.expiresAt > now };
  }

  close(): void {
    this.client.close();
  }
}
