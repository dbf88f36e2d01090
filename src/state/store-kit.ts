/**
 * Pieces both stores are built from: a copy-on-write map (snapshots cost a reference), a heap of
 * TTL deadlines driving one clock timer, the argument checks every Store method makes, and
 * grouping of instances per app.
 */
import type { Clock, Timer } from '../sdk/clock.js';
import { appKey, type AppKey } from '../sdk/app-key.js';
import { type FreshnessKind, type InstanceHeartbeat } from '../sdk/state.js';

/** A Map handed out by reference (view()) and cloned on the first write after that. */
export class CowMap<K, V> {
  private map = new Map<K, V>();
  private shared = false;

  get(key: K): V | undefined {
    return this.map.get(key);
  }

  has(key: K): boolean {
    return this.map.has(key);
  }

  get size(): number {
    return this.map.size;
  }

  values(): IterableIterator<V> {
    return this.map.values();
  }

  set(key: K, value: V): void {
    this.own().set(key, value);
  }

  delete(key: K): boolean {
    return this.map.has(key) && this.own().delete(key);
  }

  view(): ReadonlyMap<K, V> {
    this.shared = true;
    return this.map;
  }

  private own(): Map<K, V> {
    if (this.shared) {
      this.map = new Map(this.map);
      this.shared = false;
    }
    return this.map;
  }
}

export type Deadline<T> = T & { due: number; seq: number };

/**
 * TTL deadlines in (due, seq) order. A renewal pushes a new entry and leaves the old one to be
 * discarded when it comes up, which is cheaper than finding it.
 */
export class DeadlineHeap<T extends object> {
  private readonly heap: Deadline<T>[] = [];
  private seq = 0;

  peek(): Deadline<T> | undefined {
    return this.heap[0];
  }

  push(target: T, due: number): void {
    const h = this.heap;
    h.push({ ...target, due, seq: this.seq++ });
    for (let i = h.length - 1; i > 0;) {
      const up = (i - 1) >> 1;
      if (!earlier(h[i]!, h[up]!)) break;
      [h[i], h[up]] = [h[up]!, h[i]!];
      i = up;
    }
  }

  pop(): Deadline<T> | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined || top === last) return top;
    h[0] = last;
    for (let i = 0; ;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < h.length && earlier(h[l]!, h[m]!)) m = l;
      if (r < h.length && earlier(h[r]!, h[m]!)) m = r;
      if (m === i) break;
      [h[i], h[m]] = [h[m]!, h[i]!];
      i = m;
    }
    return top;
  }
}

function earlier(a: { due: number; seq: number }, b: { due: number; seq: number }): boolean {
  return a.due < b.due || (a.due === b.due && a.seq < b.seq);
}

/**
 * One clock timer, aimed at the earliest deadline: TTLs expire on the injected clock without a
 * timer per record. Aiming again at the same deadline keeps the timer that is there.
 */
export class DeadlineTimer {
  private timer: Timer | undefined;
  private aimedAt: number | undefined;

  constructor(
    private readonly clock: Clock,
    private readonly onDue: () => void,
  ) {}

  /** Fires onDue at `due`; undefined cancels. */
  aim(due: number | undefined): void {
    if (due === undefined) return this.cancel();
    if (this.timer !== undefined && this.aimedAt === due) return;
    this.cancel();
    this.aimedAt = due;
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      this.aimedAt = undefined;
      this.onDue();
    }, due - this.clock.now());
  }

  cancel(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
    this.aimedAt = undefined;
  }
}

// --- argument checks: a write that fails them throws and changes nothing ---

export function checkTtl(op: string, ttlMs: number): void {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw new Error(`${op}: ttlMs must be a finite number of milliseconds > 0, got ${String(ttlMs)}`);
  }
}

export function checkString(op: string, what: string, value: unknown): void {
  if (typeof value !== 'string' || value === '') {
    throw new Error(`${op}: ${what} must be a non-empty string, got ${JSON.stringify(value)}`);
  }
}

export function checkArray(op: string, what: string, value: unknown): void {
  if (!Array.isArray(value)) throw new Error(`${op}: ${what} must be an array`);
}

export function checkFreshnessKind(op: string, which: unknown): asserts which is FreshnessKind {
  if (which !== 'actual' && which !== 'desired') {
    throw new Error(`${op}: freshness kind must be "actual" or "desired", got ${JSON.stringify(which)}`);
  }
}

export function groupByApp(instances: readonly InstanceHeartbeat[]): Map<AppKey, InstanceHeartbeat[]> {
  const byApp = new Map<AppKey, InstanceHeartbeat[]>();
  for (const hb of instances) {
    const key = appKey(hb.app, hb.version);
    const list = byApp.get(key);
    if (list) list.push(hb);
    else byApp.set(key, [hb]);
  }
  return byApp;
}

/** The app of a crash-count key (`guid,version/index`). */
export function crashApp(key: string): string {
  return key.slice(0, key.lastIndexOf('/'));
}
