/**
 * The evacuator (HM9000 §10): a DEA that shuts down or evacuates reports each instance it stops
 * on droplet.exited; for those hmgate writes an immediate, verification-skipping EVACUATING start
 * so the instance comes back elsewhere. It overwrites a pending start for the same index (the
 * analyzer never does) and does not check freshness — the dispatcher still does before sending.
 */
import { Type } from '@sinclair/typebox';
import { Counter, type Registry } from 'prom-client';
import { Duration } from '../../src/config/schema.js';
import { errorText } from '../../src/log.js';
import { makeDecoder } from '../../src/messages/decode.js';
import { DropletExitedMessage } from '../../src/messages/schemas.js';
import { DropReporter } from '../../src/pipeline/intake.js';
import { newMessageId } from '../../src/pipeline/pending.js';
import { definePlugin, type Stage, type StageContext, type StageHealth } from '../../src/pipeline/plugin.js';
import type { PendingStart } from '../../src/pipeline/store.js';

export const EVACUATING_PRIORITY = 2.0;
const EVACUATION_REASONS = new Set(['DEA_SHUTDOWN', 'DEA_EVACUATION']);

export const EvacuatorOptions = Type.Object(
  {
    subject: Type.String({ default: 'droplet.exited', description: 'Where agents report stopped instances.' }),
    grace_period: Duration({ default: '3hb', description: 'keep_alive of the start once sent (HM9000 grace_period_in_heartbeats).' }),
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
  private lastError: string | null = null;
  /** Writes in flight, so stop() does not cut one off. */
  private pending = new Set<Promise<void>>();

  constructor(
    private readonly options: { subject: string; grace_period: number },
    private readonly ctx: StageContext,
  ) {
    this.drops = new DropReporter(ctx.metrics, ctx.logger, ctx.clock);
    this.exits = exitsCounter(ctx.metrics);
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
      skipVerification: true,
      reason: 'EVACUATING',
    };
    const write = this.ctx.store.putPendingStarts([start]).then(
      () => {
        this.lastError = null;
        this.ctx.logger.info(
          { app: exit.droplet, version: exit.version, index: exit.index, instance: exit.instance, exit_reason: exit.reason, reason: 'EVACUATING', message_id: start.messageId },
          'Scheduling start message for droplet.exited message',
        );
      },
      (err: unknown) => {
        this.lastError = `could not save the EVACUATING start for ${exit.droplet}/${exit.index}: ${errorText(err)}`;
        this.ctx.logger.error({ app: exit.droplet, index: exit.index, error: errorText(err) }, this.lastError);
      },
    );
    this.pending.add(write);
    void write.finally(() => this.pending.delete(write));
    return write;
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
  description: 'Schedules an immediate EVACUATING start for each instance a shutting-down or evacuating agent reports on droplet.exited (HM9000 evacuator).',
  optionsSchema: EvacuatorOptions,
  create: (options, ctx) => new Evacuator(options, ctx),
});
