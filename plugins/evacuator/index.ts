/**
 * The evacuator (docs/hm9000.md#evacuator; HM9000 `evacuator/evacuator.go`): a DEA that shuts down
 * or evacuates reports each instance it stops
 * on droplet.exited; for those hmgate writes an immediate EVACUATING start so the instance comes
 * back elsewhere. It overwrites a pending start for the same index (the analyzer never does); the
 * dispatcher still checks freshness before sending.
 *
 * HM9000 wrote the start without any check. hmgate first verifies it against the store (verify.ts):
 * the app desired and STARTED, the index within the desired count, the index not already running
 * or starting elsewhere, desired state fresh. A start that fails is not written; it is counted and
 * logged with why. `verify: false` restores HM9000's unverified start.
 */
import { Type } from '@sinclair/typebox';
import { Counter, type Registry } from 'prom-client';
import {
  definePlugin,
  shortDuration,
  DropletExitedMessage,
  DropReporter,
  Duration,
  errorText,
  LogLimiter,
  makeSchemaDecoder as makeDecoder,
  newMessageId,
  type PendingStart,
  type Stage,
  type StageContext,
  type StageHealth,
  suppressedOrdersCounter,
} from '../../src/sdk/index.js';
import { verifyEvacuationStart, type Refusal } from './verify.js';

export const EVACUATING_PRIORITY = 2.0;
const EVACUATION_REASONS = new Set(['DEA_SHUTDOWN', 'DEA_EVACUATION']);

export const EvacuatorOptions = Type.Object(
  {
    subject: Type.String({ default: 'droplet.exited', description: 'Where agents report stopped instances.' }),
    grace_period: Duration({ default: '3hb', description: 'keep_alive of the start once sent (HM9000 grace_period_in_heartbeats).' }),
    verify: Type.Boolean({
      default: true,
      description:
        'true: start only if desired state is fresh, the app (at that version) is desired and STARTED, the index is below the desired count, and the index is neither running nor starting on another agent nor awaiting a start already sent; anything else is counted (hmgate_orders_suppressed_total) and logged with why, not started. false: start whatever the message names, unverified (HM9000).',
    }),
  },
  { additionalProperties: false },
);

const decode = makeDecoder(DropletExitedMessage);

function exitsCounter(registry: Registry): Counter<'reason'> {
  return (
    (registry.getSingleMetric('hmgate_exits_received_total') as Counter<'reason'> | undefined) ??
    new Counter({ name: 'hmgate_exits_received_total', help: 'droplet.exited messages received, by reason', labelNames: ['reason'], registers: [registry] })
  );
}

export class Evacuator implements Stage {
  private unsubscribe: (() => void) | undefined;
  private readonly drops: DropReporter;
  private readonly exits: Counter<'reason'>;
  private readonly suppressed: Counter<'action' | 'why'>;
  /** Refusals are logged at most once per reason every 10 s: forged exits cannot flood the log. */
  private readonly refusals = new LogLimiter();
  private lastError: string | null = null;
  /** Writes in flight, so stop() does not cut one off. */
  private pending = new Set<Promise<void>>();

  constructor(
    private readonly options: { subject: string; grace_period: number; verify?: boolean },
    private readonly ctx: StageContext,
  ) {
    this.drops = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    this.exits = exitsCounter(ctx.metrics);
    this.suppressed = suppressedOrdersCounter(ctx.metrics);
  }

  start(): void {
    this.unsubscribe = this.ctx.bus.subscribe(this.options.subject, (msg) => this.receive(msg.data));
  }

  /** Handles one droplet.exited payload; returns the write it started, if any (for tests). */
  receive(data: Uint8Array | string): Promise<void> | undefined {
    const decoded = decode(data);
    if (!decoded.ok) {
      this.drops.drop(this.options.subject, decoded.reason, decoded.detail);
      return undefined;
    }
    const exit = decoded.value;
    this.exits.inc({ reason: exit.reason });
    if (!EVACUATION_REASONS.has(exit.reason) || !this.ctx.isLeader()) return undefined;
    const work = this.schedule(exit);
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
    return work;
  }

  private async schedule(exit: { droplet: string; version: string; instance?: string; index: number; reason: string }): Promise<void> {
    const facts = { app: exit.droplet, version: exit.version, index: exit.index, instance: exit.instance, exit_reason: exit.reason };
    if (this.options.verify !== false) {
      let refusal: Refusal | null;
      try {
        refusal = verifyEvacuationStart(await this.ctx.store.snapshot(), exit, this.ctx.clock.now());
      } catch (err) {
        // Unverifiable is not verified: nothing is started.
        refusal = { reason: 'store_unreadable', detail: `the store could not be read to verify the start (${errorText(err)})`, facts: {} };
      }
      if (refusal) {
        this.suppressed.inc({ action: 'start', why: 'verification' });
        const line = this.refusals.pass(refusal.reason, this.ctx.clock.now());
        if (line) {
          this.ctx.logger.warn(
            { ...facts, why: refusal.reason, detail: refusal.detail, ...refusal.facts, ...(line.heldBack ? { refused_since_last_log: line.heldBack } : {}) },
            `Not starting ${exit.droplet} index ${exit.index} for droplet.exited ${exit.reason}: ${refusal.detail}`,
          );
        }
        return;
      }
    }
    const now = this.ctx.clock.now();
    const start: PendingStart = {
      messageId: newMessageId(),
      sendOn: now,
      sentOn: 0,
      keepAlive: this.options.grace_period,
      app: exit.droplet,
      version: exit.version,
      index: exit.index,
      priority: EVACUATING_PRIORITY,
      // Verified above when asked to. The sender's own check is skipped either way: it cannot tell
      // the leaving instance, still listed RUNNING by an agent that shut down, from a live one.
      skipVerification: true,
      reason: 'EVACUATING',
    };
    try {
      await this.ctx.store.putPendingStarts([start]);
      this.lastError = null;
      this.ctx.logger.info(
        { ...facts, reason: 'EVACUATING', verified: this.options.verify !== false, message_id: start.messageId },
        'Scheduling start message for droplet.exited message',
      );
    } catch (err) {
      this.lastError = `could not save the EVACUATING start for ${exit.droplet}/${exit.index}: ${errorText(err)}`;
      this.ctx.logger.error({ app: exit.droplet, index: exit.index, error: errorText(err) }, this.lastError);
    }
  }

  health(): StageHealth {
    return { healthy: this.lastError === null, last_error: this.lastError };
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    await Promise.all(this.pending);
  }
}

export default definePlugin({
  name: 'evacuator',
  kind: 'source',
  family: 'hm9000',
  description:
    'Schedules an immediate EVACUATING start for each instance a shutting-down or evacuating agent reports on droplet.exited (HM9000 evacuator), verified against the store unless verify: false.',
  optionsSchema: EvacuatorOptions,
  create: (options, ctx) => new Evacuator(options, ctx),
  summary: (o) => `evacuator on ${String(o.subject)}, keep-alive ${shortDuration(Number(o.grace_period))}${o.verify === false ? ', starts UNVERIFIED' : ''}`,
});
