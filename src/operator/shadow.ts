/**
 * Shadowing a running health manager (dispatch.mode: shadow): hmgate sends nothing, listens to the
 * other health manager's start/stop subjects, and pairs each request it would have sent with an
 * equal one from the other side within a window. Each request ends as matched, only ours or only
 * theirs, so an operator can switch over on evidence rather than hope.
 *
 * Two requests are equal when they go to the same subject with the same body, fields that differ
 * by nature (HM9000's message_id) left out and keys compared in any order.
 */
import type { Logger } from 'pino';

export type ShadowOutcome = 'matched' | 'only_ours' | 'only_theirs';

export interface ShadowEntry {
  at: string;
  outcome: ShadowOutcome;
  subject: string;
  body: unknown;
  /** For matched: how much later the second of the pair came (ms). */
  lag_ms?: number;
}

interface Waiting {
  at: number;
  key: string;
  subject: string;
  body: unknown;
}

/** Fields that differ between two health managers making the same decision. */
const VOLATILE_FIELDS = new Set(['message_id']);

/** Recent outcomes kept for GET /v1/shadow. */
const RECENT = 200;

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) if (!VOLATILE_FIELDS.has(k)) out[k] = canonical((value as Record<string, unknown>)[k]);
    return out;
  }
  return value;
}

export class ShadowComparer {
  private readonly ours: Waiting[] = [];
  private readonly theirs: Waiting[] = [];
  private readonly recent: ShadowEntry[] = [];
  readonly counts: Record<ShadowOutcome, number> = { matched: 0, only_ours: 0, only_theirs: 0 };
  /** Bodies on watched subjects that were not JSON. */
  unreadable = 0;

  constructor(
    readonly windowMs: number,
    private readonly logger: Logger,
    private readonly now: () => number,
  ) {}

  /** A request hmgate would have sent. */
  addOurs(subject: string, body: string): void {
    this.add(this.ours, this.theirs, subject, body, 'ours');
  }

  /** A request the other health manager sent. */
  addTheirs(subject: string, body: string): void {
    this.add(this.theirs, this.ours, subject, body, 'theirs');
  }

  private add(mine: Waiting[], other: Waiting[], subject: string, raw: string, side: 'ours' | 'theirs'): void {
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      this.unreadable++;
      this.logger.warn({ subject, side }, `shadow: a request on ${subject} is not JSON; not compared`);
      return;
    }
    const now = this.now();
    this.expire(now);
    const key = `${subject} ${JSON.stringify(canonical(body))}`;
    const i = other.findIndex((w) => w.key === key);
    if (i >= 0) {
      const [pair] = other.splice(i, 1);
      this.settle({ at: new Date(now).toISOString(), outcome: 'matched', subject, body, lag_ms: now - pair!.at });
      return;
    }
    mine.push({ at: now, key, subject, body });
  }

  /** Requests left unpaired for longer than the window are settled as one-sided. */
  expire(now = this.now()): void {
    for (const [list, outcome] of [
      [this.ours, 'only_ours'],
      [this.theirs, 'only_theirs'],
    ] as const) {
      while (list.length > 0 && now - list[0]!.at > this.windowMs) {
        const w = list.shift()!;
        this.settle({ at: new Date(w.at).toISOString(), outcome, subject: w.subject, body: w.body });
      }
    }
  }

  private settle(e: ShadowEntry): void {
    this.counts[e.outcome]++;
    this.recent.push(e);
    if (this.recent.length > RECENT) this.recent.shift();
    const who = e.outcome === 'matched' ? 'both sent' : e.outcome === 'only_ours' ? 'only hmgate would have sent' : 'only the other health manager sent';
    const log = e.outcome === 'matched' ? this.logger.info.bind(this.logger) : this.logger.warn.bind(this.logger);
    log({ shadow: e.outcome, subject: e.subject, body: e.body, ...(e.lag_ms !== undefined ? { lag_ms: e.lag_ms } : {}) }, `shadow: ${who} ${e.subject}`);
  }

  summary(): {
    window_ms: number;
    counts: Record<ShadowOutcome, number>;
    waiting: { ours: number; theirs: number };
    unreadable: number;
    recent: ShadowEntry[];
  } {
    this.expire();
    return {
      window_ms: this.windowMs,
      counts: { ...this.counts },
      waiting: { ours: this.ours.length, theirs: this.theirs.length },
      unreadable: this.unreadable,
      recent: [...this.recent].reverse(),
    };
  }
}
