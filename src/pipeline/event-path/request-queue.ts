/**
 * The queue of starts decided by event policies: highest priority first, first in first out among
 * equal priorities, and an entry is not queued while one with the same key is (the first insert
 * wins, its priority is never raised). This is the priority set the Ruby HM drained in batches.
 */
import type { DropletRequest } from '../../sdk/droplets.js';

export type DedupeRule = 'payload' | 'op-version-indices';

/** The identity of a request: the whole payload but last_updated, or app/op/version/indices. */
export function dedupeKey(r: DropletRequest, rule: DedupeRule): string {
  if (rule === 'op-version-indices') return JSON.stringify([r.droplet, r.op, r.version, r.indices ?? null]);
  return JSON.stringify([r.droplet, r.op, r.version, r.indices ?? null, r.running, r.flapping ?? null, r.instances ?? null]);
}

export class RequestQueue<T> {
  private readonly buckets = new Map<number, T[]>();
  /** Priorities with a non-empty bucket, highest first. */
  private priorities: number[] = [];
  private readonly keys = new Map<T, string>();
  private readonly queued = new Set<string>();

  get size(): number {
    return this.keys.size;
  }

  /** Queues `item` unless an entry with `key` is queued; returns whether it was queued. */
  insert(item: T, priority: number, key: string): boolean {
    if (this.queued.has(key)) return false;
    this.queued.add(key);
    this.keys.set(item, key);
    let bucket = this.buckets.get(priority);
    if (!bucket) {
      bucket = [];
      this.buckets.set(priority, bucket);
      this.priorities.push(priority);
      this.priorities.sort((a, b) => b - a);
    }
    bucket.push(item);
    return true;
  }

  /** Takes the next entry: the oldest of the highest priority. */
  remove(): { item: T; priority: number } | undefined {
    const priority = this.priorities[0];
    if (priority === undefined) return undefined;
    const bucket = this.buckets.get(priority)!;
    const item = bucket.shift()!;
    if (bucket.length === 0) {
      this.buckets.delete(priority);
      this.priorities.shift();
    }
    this.queued.delete(this.keys.get(item)!);
    this.keys.delete(item);
    return { item, priority };
  }

  /** Takes every entry, in the order they would be taken. */
  drain(): T[] {
    const all = this.list().map((e) => e.item);
    this.buckets.clear();
    this.priorities = [];
    this.keys.clear();
    this.queued.clear();
    return all;
  }

  /** The queued entries in the order they would be taken (for status and dumps). */
  list(): { item: T; priority: number }[] {
    return this.priorities.flatMap((p) => this.buckets.get(p)!.map((item) => ({ item, priority: p })));
  }
}
