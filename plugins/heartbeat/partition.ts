/**
 * The cc_partition filter (cc_partition_filter, as the Ruby HM's older design did): messages and
 * heartbeat entries of another partition are left out, counted as dropped (other_cc_partition),
 * logged once per sender and value, and named as a problem in /v1/status while they keep arriving
 * (for heartbeat_ttl after the last one). Without a partition to keep, everything passes.
 */
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';
import type { Clock } from '../../src/sdk/index.js';

/** Distinct (sender, partition) pairs remembered for the once-only log line. */
const MAX_PARTITION_NOTICES = 10_000;

export interface PartitionFilterOptions {
  /** The stage id, for the option key in advice. */
  stageId: string;
  /** The key that sets the partition kept: the top-level cc_partition when the stage took it from there; default sources.<stageId>.cc_partition. */
  key?: string;
  /** How long the problem is named after the last message of another partition. */
  heartbeatTtl: number;
  clock: Clock;
  logger: Logger;
  dropped: Counter<'subject' | 'reason'>;
}

export class PartitionFilter {
  private readonly notices = new Set<string>();
  /** The last message of another cc_partition left out, and when. */
  private lastForeign: { theirs: string | null; at: number } | undefined;

  constructor(
    /** The partition kept; undefined keeps all. */
    readonly mine: string | undefined,
    private readonly o: PartitionFilterOptions,
  ) {}

  /** Whether a message (an exit, an update) of this cc_partition passes; one that does not is counted and named. */
  passes(subject: string, theirs: string | undefined): boolean {
    const mine = this.mine;
    if (mine === undefined || theirs === mine) return true;
    this.o.dropped.inc({ subject, reason: 'other_cc_partition' });
    this.lastForeign = { theirs: theirs ?? null, at: this.o.clock.now() };
    const key = `${subject}\u0000${theirs ?? ''}`;
    if (!this.notices.has(key) && this.notices.size < MAX_PARTITION_NOTICES) {
      this.notices.add(key);
      const what = theirs === undefined ? 'without a cc_partition' : `of cc_partition ${JSON.stringify(theirs)}`;
      const fix = theirs === undefined ? this.keepUnpartitioned() : `set ${this.key()}: ${theirs}`;
      this.o.logger.warn(
        { subject, cc_partition: theirs ?? null, kept_cc_partition: mine },
        `${subject} messages ${what} are ignored, this stage keeps only ${JSON.stringify(mine)}: ${fix}`,
      );
    }
    return false;
  }

  /** An agent's heartbeat entry of another partition was left out: named, not counted (see leftOut). */
  entryLeftOut(agent: string, theirs: string | undefined): void {
    this.lastForeign = { theirs: theirs ?? null, at: this.o.clock.now() };
    const key = theirs === undefined ? `${agent}\u0000` : `${agent}\u0000=${theirs}`;
    if (this.notices.has(key) || this.notices.size >= MAX_PARTITION_NOTICES) return;
    this.notices.add(key);
    const mine = JSON.stringify(this.mine);
    const text =
      theirs === undefined
        ? `agent ${agent} heartbeats instances without a cc_partition, this stage keeps only ${mine}: ${this.keepUnpartitioned()}`
        : `agent ${agent} heartbeats instances of cc_partition ${JSON.stringify(theirs)}, this stage keeps only ${mine}: set ${this.key()}: ${theirs}`;
    this.o.logger.warn({ agent, cc_partition: theirs ?? null, kept_cc_partition: this.mine }, text);
  }

  /** Counts the entries of one heartbeat left out; one increment however many. */
  leftOut(subject: string, entries: number): void {
    if (entries > 0) this.o.dropped.inc({ subject, reason: 'other_cc_partition' }, entries);
  }

  /** Messages of another cc_partition in words, while they arrived within heartbeat_ttl. */
  notice(): string | null {
    const f = this.lastForeign;
    if (f === undefined || this.o.clock.now() - f.at >= this.o.heartbeatTtl) return null;
    const mine = JSON.stringify(this.mine);
    return f.theirs === null
      ? `agents report instances without a cc_partition but this daemon is on ${mine}: their heartbeats, exits and updates are ignored; ${this.keepUnpartitioned()}`
      : `agents report cc_partition ${JSON.stringify(f.theirs)} but this daemon is on ${mine}: their heartbeats, exits and updates are ignored; set ${this.key()}: ${f.theirs}`;
  }

  private key(): string {
    return this.o.key ?? `sources.${this.o.stageId}.cc_partition`;
  }

  /** A message without a cc_partition matches no partition: only switching the filter off keeps it. */
  private keepUnpartitioned(): string {
    return `set sources.${this.o.stageId}.cc_partition_filter: false to keep them`;
  }
}
