/**
 * TTL deadlines: a heap of what expires when, driving one clock timer aimed at the earliest.
 */
import type { Clock, Timer } from '../sdk/clock.js';

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
