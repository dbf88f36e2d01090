/**
 * The sync loop: heartbeats batched and saved to the store (docs/hm9000.md#heartbeats). The last
 * heartbeat of each agent waits in a pending batch; once at start, then every sync_interval, never
 * two at a time, the batch is swapped and saved with the agents' presence TTL, only state changes
 * written (saved-agents.ts). A save faster than save_deadline bumps actual freshness, a failed save
 * revokes it (docs/hm9000.md#actual-freshness). Also keeps the ingest lag the freshness guard reads,
 * and makes the freshness bumps and revokes advertises call for.
 */
import type { Logger } from 'pino';
import type { Counter, Histogram } from 'prom-client';
import { type AgentHeartbeat, type Clock, errorText, type StageContext, type Timer } from '../../src/sdk/index.js';
import type { HeartbeatEntry } from './entries.js';
import { HeartbeatIngestLag } from './ingest-lag.js';
import { heartbeatMetrics } from './metrics.js';
import { type SavedAgent, SavedAgents } from './saved-agents.js';

export interface SyncLoopOptions {
  syncInterval: number;
  /** The agents' presence TTL. */
  heartbeatTtl: number;
  /** A save that takes this long or longer does not bump actual freshness. */
  saveDeadline: number;
}

export class SyncLoop {
  /** How far behind this source is: unsaved heartbeats and the bus's delay. */
  readonly ingestLag: HeartbeatIngestLag;
  private failure: string | null = null;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly saved: Counter.Internal;
  private readonly saveFailures: Counter.Internal;
  private readonly saveDuration: Histogram.Internal<'stage'>;
  /** The last heartbeat of each agent since the last swap. */
  private pending = new Map<string, readonly HeartbeatEntry[]>();
  private readonly savedAgents: SavedAgents;
  private timer: Timer | undefined;
  private chain: Promise<void> = Promise.resolve();
  /** Freshness bumps and revokes made outside a save. */
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly opts: SyncLoopOptions,
    private readonly ctx: StageContext,
    /** Whether the source runs: the loop goes on only while it does. */
    private readonly running: () => boolean,
  ) {
    this.clock = ctx.clock;
    this.logger = ctx.logger;
    const m = heartbeatMetrics(ctx.metrics);
    this.saved = m.saved.labels(ctx.id);
    this.saveFailures = m.saveFailures.labels(ctx.id);
    this.saveDuration = m.saveDuration.labels(ctx.id);
    this.ingestLag = new HeartbeatIngestLag(() => ctx.clock.now(), ctx.bus);
    this.savedAgents = new SavedAgents(opts.heartbeatTtl, ctx.clock.now());
  }

  /** Why the last save or freshness bump failed; null once a save succeeds. */
  get storeError(): string | null {
    return this.failure;
  }

  /** An agent's heartbeat, replacing any it sent since the last swap. */
  add(agent: string, droplets: readonly HeartbeatEntry[]): void {
    this.pending.set(agent, droplets);
    this.ingestLag.accepted();
  }

  /** HM9000 runs the sync loop once at once, then on every tick. */
  start(): void {
    this.tick();
  }

  stop(): void {
    this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Saves the pending batch now, after any save under way (the loop itself goes through here). */
  syncNow(): Promise<void> {
    const run = this.chain.then(() => this.sync());
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves once no save and no freshness bump is under way. */
  async idle(): Promise<void> {
    for (;;) {
      const chain = this.chain;
      await Promise.all([chain, ...this.inflight]);
      if (chain === this.chain && this.inflight.size === 0) return;
    }
  }

  /** Bumps actual freshness in the background (idle() waits for it). */
  bumpSoon(why: string): void {
    this.track(this.bumpActual(why));
  }

  /** Revokes actual freshness in the background (idle() waits for it); the reason is already set. */
  revokeSoon(why: string): void {
    this.track(this.revokeActual(why));
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private tick(): void {
    if (!this.running()) return;
    this.ingestLag.probe();
    const started = this.clock.now();
    void this.syncNow()
      .catch((err: unknown) => this.logger.error({ error: errorText(err) }, `heartbeat sync failed unexpectedly: ${errorText(err)}`))
      .finally(() => {
        if (!this.running()) return;
        // A ticker: the period runs from the start of a sync; a late sync is followed at once.
        this.timer = this.clock.setTimeout(
          () => {
            this.timer = undefined;
            this.tick();
          },
          Math.max(0, started + this.opts.syncInterval - this.clock.now()),
        );
      });
  }

  private async sync(): Promise<void> {
    if (this.pending.size === 0) return;
    const batch = this.pending;
    this.pending = new Map();
    this.ingestLag.saving();
    try {
      await this.save(batch);
    } finally {
      this.ingestLag.saveEnded();
    }
  }

  private async save(batch: ReadonlyMap<string, readonly HeartbeatEntry[]>): Promise<void> {
    // A standby drops what it heard: the leader's own heartbeat stream makes its freshness.
    if (!this.ctx.isLeader()) return;
    const ttl = this.opts.heartbeatTtl;
    const t0 = this.clock.now();
    const heartbeats: AgentHeartbeat[] = [];
    const nextSaved: SavedAgent[] = [];
    let instanceCount = 0;
    for (const [agent, droplets] of batch) {
      const instances = this.savedAgents.instances(agent, droplets, t0);
      instanceCount += instances.length;
      heartbeats.push({ agent, instances });
      nextSaved.push({ expiresAt: t0 + ttl, droplets, instances });
    }

    try {
      await this.ctx.store.saveHeartbeats(heartbeats, ttl);
    } catch (err) {
      for (const hb of heartbeats) this.savedAgents.forget(hb.agent);
      await this.saveFailed(errorText(err));
      return;
    }
    const took = this.clock.now() - t0;
    this.saveDuration.observe(took / 1000);
    this.saved.inc(instanceCount);
    for (let i = 0; i < heartbeats.length; i++) this.savedAgents.set(heartbeats[i]!.agent, nextSaved[i]!);
    this.savedAgents.prune(t0);
    this.failure = null;
    const deadline = this.opts.saveDeadline;
    if (took < deadline) {
      await this.bumpActual('heartbeat save');
    } else {
      this.logger.warn({ took_ms: took, save_deadline_ms: deadline, agents: heartbeats.length }, `save took too long (${took}ms); not bumping freshness`);
      this.ctx.freshness.setReason('actual', `saving heartbeats took ${took}ms, not less than save_deadline (${deadline}ms): not bumping freshness`);
    }
  }

  private async saveFailed(error: string): Promise<void> {
    this.saveFailures.inc();
    this.failure = `saving heartbeats to the store failed: ${error}`;
    this.logger.error({ error }, this.failure);
    this.ctx.freshness.setReason('actual', this.failure);
    try {
      await this.ctx.store.revokeFreshness('actual');
    } catch (err) {
      this.logger.error({ error: errorText(err) }, `revoking actual freshness failed: ${errorText(err)}`);
    }
  }

  private async revokeActual(why: string): Promise<void> {
    try {
      await this.ctx.store.revokeFreshness('actual');
    } catch (err) {
      this.logger.error({ error: errorText(err), why }, `revoking actual freshness failed: ${errorText(err)}`);
    }
  }

  private async bumpActual(why: string): Promise<void> {
    try {
      await this.ctx.store.bumpFreshness('actual', this.ctx.freshness.actualTtlMs);
      this.ctx.freshness.setReason('actual', null);
    } catch (err) {
      const text = `bumping actual freshness after a ${why} failed: ${errorText(err)}`;
      this.failure = text;
      this.logger.error({ error: errorText(err) }, text);
      this.ctx.freshness.setReason('actual', text);
    }
  }
}
