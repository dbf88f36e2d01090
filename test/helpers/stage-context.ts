/**
 * A StageContext for unit tests of a single plugin on a virtual clock: the real memory store, a
 * recording logger, a fresh metrics registry, and an in-process bus (subjects routed in memory,
 * `*`/`>` wildcards as in NATS) so no server is needed when time is virtual.
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { MemoryStore } from '../../plugins/memory-store/memory-store.js';
import type { Bus, BusMessage, SubscribeOptions } from '../../src/pipeline/bus.js';
import { VirtualClock } from '../../src/pipeline/clock.js';
import { FreshnessBoard } from '../../src/pipeline/freshness.js';
import type { PluginKind, StageContext } from '../../src/pipeline/plugin.js';

function matches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length || (p[i] !== '*' && p[i] !== s[i])) return false;
  }
  return p.length === s.length;
}

export class InProcessBus implements Bus {
  connected = true;
  readonly published: { subject: string; data: string; reply?: string }[] = [];
  private readonly subs = new Set<{ subject: string; handler: (m: BusMessage) => void }>();

  subscribe(subject: string, handler: (msg: BusMessage) => void, _opts?: SubscribeOptions): () => void {
    const s = { subject, handler };
    this.subs.add(s);
    return () => this.subs.delete(s);
  }

  publish(subject: string, data: string | Uint8Array, reply?: string): void {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    this.published.push({ subject, data: new TextDecoder().decode(bytes), reply });
    for (const s of [...this.subs]) if (matches(s.subject, subject)) s.handler({ subject, data: bytes, reply });
  }

  async request(subject: string, data: string | Uint8Array, timeoutMs: number): Promise<BusMessage> {
    const inbox = `_INBOX.${Math.random().toString(36).slice(2)}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error('request timed out'));
      }, timeoutMs);
      const off = this.subscribe(inbox, (m) => {
        clearTimeout(timer);
        off();
        resolve(m);
      });
      this.publish(subject, data, inbox);
    });
  }

  async flush(): Promise<void> {}
}

export interface TestContext {
  ctx: StageContext;
  clock: VirtualClock;
  store: MemoryStore;
  bus: InProcessBus;
  metrics: Registry;
  logs: Record<string, unknown>[];
}

export function makeStageContext(opts: { id?: string; kind?: PluginKind; heartbeatMs?: number; startMs?: number; configDir?: string } = {}): TestContext {
  const clock = new VirtualClock(opts.startMs ?? 1_700_000_000_000);
  const store = new MemoryStore(clock);
  const bus = new InProcessBus();
  const metrics = new Registry();
  const logs: Record<string, unknown>[] = [];
  const heartbeatMs = opts.heartbeatMs ?? 10_000;
  const logger = pino({ level: 'debug', base: { foundation: 'test' } }, { write: (s: string) => void logs.push(JSON.parse(s)) }).child({ component: opts.id ?? 'stage' });
  const ctx: StageContext = {
    id: opts.id ?? 'stage',
    kind: opts.kind ?? 'source',
    foundation: 'test',
    logger,
    clock,
    heartbeatMs,
    configDir: opts.configDir ?? process.cwd(),
    metrics,
    bus,
    store,
    freshness: new FreshnessBoard(() => clock.now(), 3 * heartbeatMs, 12 * heartbeatMs),
  };
  return { ctx, clock, store, bus, metrics, logs };
}
