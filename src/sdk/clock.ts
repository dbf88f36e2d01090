/**
 * The one source of time. Every time decision in hmgate reads an injected Clock, so rules run the
 * same in the daemon (RealClock) and in tests and simulations (VirtualClock) that advance without
 * sleeping. Times are milliseconds since the Unix epoch.
 */
export interface Timer {
  /** When the timer is due, in clock milliseconds. */
  readonly due: number;
}

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(timer: Timer | undefined): void;
  /** Resolves after `ms` of this clock's time. */
  sleep(ms: number): Promise<void>;
}

/** Node clamps longer delays to 1 ms, so longer timers are chained in chunks of at most this. */
const MAX_NODE_DELAY_MS = 2 ** 31 - 1;

/** Negative and NaN delays run as soon as possible, as with Node's own timers. */
function normalizeDelay(ms: number): number {
  return Number.isNaN(ms) || ms < 0 ? 0 : ms;
}

class RealTimer implements Timer {
  handle: ReturnType<typeof setTimeout> | undefined;
  constructor(readonly due: number) {}
}

/** Wall-clock time. Timers stay ref'd: a pending expiry or retry is a reason to keep running. */
export class RealClock implements Clock {
  now(): number {
    return Date.now();
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const timer = new RealTimer(Date.now() + normalizeDelay(ms));
    this.arm(timer, fn);
    return timer;
  }

  clearTimeout(timer: Timer | undefined): void {
    if (timer instanceof RealTimer && timer.handle !== undefined) {
      globalThis.clearTimeout(timer.handle);
      timer.handle = undefined;
    }
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.setTimeout(resolve, ms);
    });
  }

  private arm(timer: RealTimer, fn: () => void): void {
    const remaining = timer.due - Date.now();
    if (remaining > MAX_NODE_DELAY_MS) {
      timer.handle = globalThis.setTimeout(() => this.arm(timer, fn), MAX_NODE_DELAY_MS);
    } else {
      timer.handle = globalThis.setTimeout(
        () => {
          timer.handle = undefined;
          fn();
        },
        Math.max(0, remaining),
      );
    }
  }
}

interface VirtualTimer extends Timer {
  readonly due: number;
  readonly seq: number;
  readonly fn: () => void;
  /** Position in the heap; -1 once fired or cleared. */
  index: number;
}

/** How many macrotask turns advanceAsync yields after each timer so promise chains can settle. */
const ASYNC_FLUSH_ROUNDS = 5;

function flushAsync(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Time that moves only when a test says so. Timers fire in due order, ties in the order they were
 * set, with now() equal to the timer's due time, so a scenario that spans hours runs in
 * microseconds and always in the same order.
 */
export class VirtualClock implements Clock {
  private current: number;
  private seq = 0;
  /** Binary min-heap ordered by (due, seq); each timer knows its index so clearTimeout is O(log n). */
  private readonly heap: VirtualTimer[] = [];
  private advancing = false;

  constructor(startMs = 0) {
    if (!Number.isFinite(startMs)) throw new RangeError(`VirtualClock: start time must be finite, got ${startMs}`);
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const timer: VirtualTimer = { due: this.current + normalizeDelay(ms), seq: this.seq++, fn, index: this.heap.length };
    this.heap.push(timer);
    this.siftUp(timer.index);
    return timer;
  }

  clearTimeout(timer: Timer | undefined): void {
    if (timer === undefined) return;
    const t = timer as VirtualTimer;
    if (typeof t.index !== 'number' || t.index < 0 || this.heap[t.index] !== t) return;
    this.removeAt(t.index);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.setTimeout(resolve, ms);
    });
  }

  /** Timers set and neither fired nor cleared. */
  pendingTimers(): number {
    return this.heap.length;
  }

  /** Due time of the next timer, if any. */
  nextDue(): number | undefined {
    return this.heap[0]?.due;
  }

  advance(ms: number): void {
    this.advanceTo(this.current + this.checkDelta(ms));
  }

  /**
   * Fire every timer due up to `target`, including ones set by callbacks within the window. A
   * callback that throws stops the advance there (now() stays at that timer's due time).
   */
  advanceTo(target: number): void {
    this.checkTarget(target);
    this.advancing = true;
    try {
      for (let timer = this.popDue(target); timer !== undefined; timer = this.popDue(target)) {
        this.current = timer.due;
        timer.fn();
      }
      this.current = target;
    } finally {
      this.advancing = false;
    }
  }

  /**
   * Like advance, but lets promise chains run after each timer (and before the first), so a
   * sleep() continuation or an async handler can set its next timer before later ones fire.
   */
  async advanceAsync(ms: number): Promise<void> {
    await this.advanceToAsync(this.current + this.checkDelta(ms));
  }

  async advanceToAsync(target: number): Promise<void> {
    this.checkTarget(target);
    this.advancing = true;
    try {
      await this.flush();
      for (let timer = this.popDue(target); timer !== undefined; timer = this.popDue(target)) {
        this.current = timer.due;
        timer.fn();
        await this.flush();
      }
      this.current = target;
    } finally {
      this.advancing = false;
    }
  }

  private async flush(): Promise<void> {
    for (let i = 0; i < ASYNC_FLUSH_ROUNDS; i++) await flushAsync();
  }

  private checkDelta(ms: number): number {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`VirtualClock: cannot advance by ${ms} ms`);
    return ms;
  }

  private checkTarget(target: number): void {
    // A nested advance would fire timers out of order relative to the outer one.
    if (this.advancing) throw new Error('VirtualClock: advance called while an advance is in progress');
    if (!Number.isFinite(target) || target < this.current) {
      throw new RangeError(`VirtualClock: cannot move time from ${this.current} to ${target}`);
    }
  }

  private popDue(target: number): VirtualTimer | undefined {
    const first = this.heap[0];
    if (first === undefined || first.due > target) return undefined;
    this.removeAt(0);
    return first;
  }

  private before(a: VirtualTimer, b: VirtualTimer): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq);
  }

  private removeAt(i: number): void {
    const removed = this.heap[i]!;
    const last = this.heap.pop()!;
    removed.index = -1;
    if (last === removed) return;
    this.heap[i] = last;
    last.index = i;
    this.siftUp(i);
    this.siftDown(last.index);
  }

  private swap(i: number, j: number): void {
    const a = this.heap[i]!;
    const b = this.heap[j]!;
    this.heap[i] = b;
    this.heap[j] = a;
    a.index = j;
    b.index = i;
  }

  private siftUp(i: number): void {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(this.heap[i]!, this.heap[parent]!)) return;
      this.swap(i, parent);
      i = parent;
    }
  }

  private siftDown(i: number): void {
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < this.heap.length && this.before(this.heap[left]!, this.heap[smallest]!)) smallest = left;
      if (right < this.heap.length && this.before(this.heap[right]!, this.heap[smallest]!)) smallest = right;
      if (smallest === i) return;
      this.swap(i, smallest);
      i = smallest;
    }
  }
}

/**
 * A clock whose time moves in steps of `resolutionMs`, as HM9000's did: it kept every timestamp in
 * whole Unix seconds (send_on, sent_on, freshness), so comparisons made a few milliseconds apart
 * agree. Timers of at least one step are aligned to the step grid, so a periodic task started on
 * the grid stays on it instead of drifting by its own latency; shorter timers run as asked.
 */
/** How far past a step real timers are aimed (see SteppedClock.margin). */
const REAL_TIMER_MARGIN_MS = 3;

export class SteppedClock implements Clock {
  constructor(
    private readonly inner: Clock,
    readonly resolutionMs: number,
  ) {}

  now(): number {
    return Math.floor(this.inner.now() / this.resolutionMs) * this.resolutionMs;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    if (!(ms >= this.resolutionMs)) return this.inner.setTimeout(fn, ms);
    return this.inner.setTimeout(fn, Math.max(0, this.now() + ms - this.inner.now() + this.margin));
  }

  /**
   * Node's timers can fire a millisecond before they are due; one aimed exactly at a step would
   * then read the step before. Real timers are aimed a little past it (virtual ones are exact).
   */
  private get margin(): number {
    return this.inner instanceof RealClock ? REAL_TIMER_MARGIN_MS : 0;
  }

  clearTimeout(timer: Timer | undefined): void {
    this.inner.clearTimeout(timer);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.setTimeout(resolve, ms);
    });
  }
}
