/**
 * The engine's event path (events.ts): keeps the per-app records, hands each event to the policies
 * that declare it in config order, and carries out their decisions — starts into the priority
 * queue (drained every dispatch.queue.interval) or out at once, stops out at once, timers armed on
 * the run loop, records forgotten, desired state refreshed. The periodic analysis walks the records
 * in insertion order, a slice per tick, while desired state is available.
 *
 * Periodic work first runs one period after start (the Ruby HM armed its timers at its scheduler's
 * first run), and the queue drain is set up before the analysis so that, when both are due at the
 * same moment, the drain goes first — as it did there.
 */
import type { Logger } from 'pino';
import { errorText } from '../../log.js';
import type { Clock, Timer } from '../../sdk/clock.js';
import { DropletRegistry, setDesiredState, type Droplet, type DropletRequest } from '../../sdk/droplets.js';
import {
  isAppEvent,
  type AppEvent,
  type EventDecision,
  type EventEnv,
  type EventHub,
  type EventKind,
  type EventPolicyStage,
  type PolicyEvent,
} from '../../sdk/events.js';
import type { RequestOrder } from '../../sdk/orders.js';
import { newMessageId } from '../../sdk/pending-messages.js';
import { counted } from '../../sdk/summary.js';
import { dedupeKey, RequestQueue, type DedupeRule } from './request-queue.js';

export interface EventRunnerOptions {
  clock: Clock;
  logger: Logger;
  /** Event policies in config order. */
  policies: { id: string; stage: EventPolicyStage }[];
  /** Sends one order through every sink; throws if a sink failed. */
  send(order: RequestOrder): Promise<void>;
  /** Called for each order sent (or, in shadow mode, that would have been). */
  onSent?(order: RequestOrder): void;
  /** Called for each decision held back, with why. */
  onSuppressed?(order: RequestOrder, why: 'shadow' | 'not_fresh' | 'send_failed', detail: string): void;
  /** Called for each decision taken (for the audit). */
  onDecided?(order: RequestOrder, delivery: 'queued' | 'now' | 'duplicate', facts: Record<string, unknown>): void;
  shadow: boolean;
  /** With the freshness gate on: whether sending is allowed now. */
  mayAct(): boolean;
  isLeader(): boolean;
  /** The last bulk exchange succeeded. */
  desiredAvailable(): boolean;
  busConnected(): boolean;
  /** Injectable for reproducible jitter. */
  random?: () => number;
  analyzeEveryMs: number;
  /** Records per analysis tick; 0 = all. */
  analysisSlice: number;
  runLoopMs: number;
  /** The clock below the engine clock's step (which counts whole seconds), for policy timers. */
  timerClock?: Clock;
  queue: { intervalMs: number; batchSize: number; dedupe: DedupeRule };
  /** Asks every desired-state source to fetch again now. */
  refreshDesired(): void;
}

interface QueuedStart {
  order: RequestOrder;
}

/** A timer set this soon after a run-loop tick (timer latency) counts as set by that tick. */
const RUN_LOOP_SLACK_MS = 50;

/** Raised events nest (a policy raising an event another raises…); this bounds a mistake. */
const MAX_RAISE_DEPTH = 8;

export class EventRunner {
  readonly droplets = new DropletRegistry();
  readonly queue = new RequestQueue<QueuedStart>();
  private readonly kinds = new Set<EventKind>();
  private readonly timers = new Map<string, { timer: Timer; policy: string }>();
  private readonly periodicTasks: { ms: number; task: () => void; due: number }[] = [];
  private periodicTimer: Timer | undefined;
  private sliceStart = 0;
  private passStartedAt = 0;
  private startedAt = 0;
  private running = false;
  /** Sends go out one after another, in decision order. */
  private sending: Promise<void> = Promise.resolve();
  private readonly random: () => number;
  private readonly env: EventEnv;
  readonly stats = { events: 0, policyErrors: 0, queued: 0, deduplicated: 0, sent: 0, failed: 0 };

  constructor(private readonly o: EventRunnerOptions) {
    for (const p of o.policies) for (const k of p.stage.events) this.kinds.add(k);
    this.random = o.random ?? Math.random;
    const runner = this.o;
    this.env = {
      get desiredAvailable() {
        return runner.desiredAvailable();
      },
      get busConnected() {
        return runner.busConnected();
      },
      random: this.random,
    };
  }

  get active(): boolean {
    return this.o.policies.length > 0;
  }

  /** What stages see as ctx.events. */
  readonly hub: EventHub = {
    emit: (event) => this.emit(event),
    // Desired apps always update the records, when there are event policies at all.
    wants: (kind) => this.kinds.has(kind) || (kind === 'desired' && this.active),
    droplets: this.droplets,
  };

  start(): void {
    if (!this.active || this.running) return;
    this.running = true;
    this.startedAt = this.o.clock.now();
    this.every(this.o.queue.intervalMs, () => this.drain());
    if (this.kinds.has('analyze')) this.every(this.o.analyzeEveryMs, () => this.analyzeTick());
    for (const p of this.o.policies) {
      if (p.stage.events.includes('sweep') && p.stage.everyMs && p.stage.everyMs > 0) this.every(p.stage.everyMs, () => this.sweep(p));
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.o.clock.clearTimeout(this.periodicTimer);
    this.periodicTimer = undefined;
    this.periodicTasks.length = 0;
    for (const { timer } of this.timers.values()) (this.o.timerClock ?? this.o.clock).clearTimeout(timer);
    this.timers.clear();
    await this.sending;
  }

  /**
   * A periodic task, first run one period after start, each period from the previous due time.
   * Tasks due at the same moment run in the order they were added (one timer serves them all), so
   * the queue drain set up first goes before the analysis, whatever the periods.
   */
  private every(ms: number, task: () => void): void {
    this.periodicTasks.push({ ms, task, due: this.o.clock.now() + ms });
    this.armPeriodic();
  }

  private armPeriodic(): void {
    if (this.periodicTimer) this.o.clock.clearTimeout(this.periodicTimer);
    if (!this.running || this.periodicTasks.length === 0) return;
    const next = Math.min(...this.periodicTasks.map((t) => t.due));
    this.periodicTimer = this.o.clock.setTimeout(
      () => {
        this.periodicTimer = undefined;
        if (!this.running) return;
        const due = Math.min(...this.periodicTasks.map((t) => t.due));
        for (const t of this.periodicTasks) {
          if (t.due > due) continue;
          t.due += t.ms;
          this.guard('periodic task', t.task);
        }
        this.armPeriodic();
      },
      Math.max(0, next - this.o.clock.now()),
    );
  }

  private guard(what: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.o.logger.error({ error: errorText(err) }, `${what} failed: ${errorText(err)}`);
    }
  }

  emit(event: PolicyEvent): void {
    if (!this.active || !this.o.isLeader()) return;
    this.stats.events++;
    const now = this.o.clock.now();
    if (event.kind === 'desired') setDesiredState(this.droplets.get(event.app.guid, now), event.app, now);
    if (isAppEvent(event)) this.handleAppEvent(event, this.droplets.get(event.app, now), now);
    else this.dispatchEvent(event, undefined, now, null, 0);
  }

  private handleAppEvent(event: AppEvent, droplet: Droplet, now: number, only: string | null = null): void {
    const forget = this.dispatchEvent(event, droplet, now, only, 0);
    if (forget) this.droplets.delete(droplet.id);
  }

  /** Runs the declaring policies; returns whether one asked to forget the record. */
  private dispatchEvent(event: PolicyEvent, droplet: Droplet | undefined, now: number, only: string | null, depth: number): boolean {
    let forget = false;
    if (droplet) droplet.nowMs = now;
    const env = this.env;
    for (const p of this.o.policies) {
      if (only !== null && p.id !== only) continue;
      if (!p.stage.events.includes(event.kind)) continue;
      let decisions: EventDecision[];
      try {
        decisions = p.stage.handle({ event, droplet, now, env } as Parameters<EventPolicyStage['handle']>[0]);
      } catch (err) {
        this.stats.policyErrors++;
        this.o.logger.error(
          { policy: p.id, event: event.kind, app: droplet?.id, error: errorText(err) },
          `policy "${p.id}" failed on ${event.kind}: ${errorText(err)}`,
        );
        continue;
      }
      for (const d of decisions) {
        if (d.kind === 'forget' && d.apps) for (const app of d.apps) this.droplets.delete(app);
        else if (d.kind === 'forget') forget = true;
        else if (d.kind === 'raise') {
          if (depth >= MAX_RAISE_DEPTH || !droplet) {
            this.o.logger.error({ policy: p.id, event: d.event.kind }, `policy "${p.id}" raised ${d.event.kind} too deep; ignored`);
            continue;
          }
          forget = this.dispatchEvent(d.event, droplet, now, null, depth + 1) || forget;
        } else this.apply(d, p.id, droplet, now);
      }
    }
    return forget;
  }

  private apply(d: Exclude<EventDecision, { kind: 'forget' } | { kind: 'raise' }>, policy: string, droplet: Droplet | undefined, now: number): void {
    switch (d.kind) {
      case 'request':
        this.request(d.request, d.reason, d.log, d.facts ?? {}, d.request.op === 'STOP' ? 'now' : d.delivery);
        return;
      case 'timer':
        if (!droplet) return;
        this.setTimer(d.id, d.delayMs, d.data, policy, droplet.id, now);
        return;
      case 'cancel-timer': {
        const t = this.timers.get(d.id);
        if (t) (this.o.timerClock ?? this.o.clock).clearTimeout(t.timer);
        this.timers.delete(d.id);
        return;
      }
      case 'refresh-desired':
        this.o.refreshDesired();
        return;
    }
  }

  private request(request: DropletRequest, reason: string, log: string, facts: Record<string, unknown>, delivery: { queue: number } | 'now'): void {
    const order: RequestOrder = { action: 'request', messageId: newMessageId(), app: request.droplet, reason, request };
    const what =
      request.op === 'START' ? `indices ${JSON.stringify(request.indices)}` : `instances ${JSON.stringify((request.instances ?? []).map((i) => i.instance))}`;
    if (delivery === 'now') {
      this.o.logger.info(
        { decision: request.op.toLowerCase(), reason, app: request.droplet, version: request.version, ...facts, message_id: order.messageId },
        `${request.op} ${what} now: ${log}`,
      );
      this.o.onDecided?.(order, 'now', facts);
      this.deliver(order);
      return;
    }
    order.priority = delivery.queue;
    if (!this.queue.insert({ order }, delivery.queue, dedupeKey(request, this.o.queue.dedupe))) {
      this.stats.deduplicated++;
      this.o.logger.debug({ reason, app: request.droplet, ...facts }, `${request.op} ${what} already queued: ${log}`);
      return;
    }
    this.stats.queued++;
    this.o.logger.info(
      {
        decision: 'start',
        reason,
        app: request.droplet,
        version: request.version,
        priority: delivery.queue,
        ...facts,
        message_id: order.messageId,
        queue_length: this.queue.size,
      },
      `Queued ${request.op} ${what}: ${log}`,
    );
    this.o.onDecided?.(order, 'queued', facts);
  }

  /**
   * Drops every queued start, each audited as held back with `detail`: they were decided on a
   * state a freshness guard has found wrong (most agents silent at once, ingest behind), and
   * sending them once it releases would start instances that are back. The policies decide again
   * on the state as it is then. Returns how many were dropped.
   */
  discardQueued(detail: string): number {
    const dropped = this.queue.drain();
    for (const { order } of dropped) this.o.onSuppressed?.(order, 'not_fresh', detail);
    return dropped.length;
  }

  /** Every queue interval: up to batch_size queued starts, highest priority first. */
  private drain(): void {
    if (this.queue.size === 0) return;
    if (!this.o.mayAct()) return; // held in the queue until state is fresh again
    for (let n = 0; n < this.o.queue.batchSize; n++) {
      const next = this.queue.remove();
      if (!next) break;
      this.deliver(next.item.order);
    }
  }

  private deliver(order: RequestOrder): void {
    if (this.o.shadow) {
      this.o.onSuppressed?.(order, 'shadow', 'shadow mode: would have been sent');
      this.o.onSent?.(order);
      return;
    }
    if (!this.o.mayAct()) {
      this.o.onSuppressed?.(order, 'not_fresh', 'state is not fresh: not sent');
      return;
    }
    this.sending = this.sending.then(async () => {
      try {
        await this.o.send(order);
        this.stats.sent++;
        this.o.onSent?.(order);
      } catch (err) {
        // The Ruby HM published fire-and-forget: a failed send is not retried, it is reported.
        this.stats.failed++;
        this.o.onSuppressed?.(order, 'send_failed', errorText(err));
        this.o.logger.warn({ app: order.app, reason: order.reason, error: errorText(err) }, `${order.request.op} for ${order.app} not sent: ${errorText(err)}`);
      }
    });
  }

  /** A policy timer, armed at the next run-loop tick (0: at once), then due after its delay. */
  private setTimer(id: string, delayMs: number, data: Record<string, unknown>, policy: string, app: string, now: number): void {
    // Policy timers run on the precise clock (the engine's clock counts whole seconds, and its
    // timers snap to them): armed by the next run of the run loop, which runs every runLoopMs from
    // start; a timer set by work of a run-loop tick itself (the analysis is in phase with it) is
    // armed by that run.
    const clock = this.o.timerClock ?? this.o.clock;
    const old = this.timers.get(id);
    if (old) clock.clearTimeout(old.timer);
    const loop = this.o.runLoopMs;
    const precise = this.o.timerClock ? clock.now() : now;
    const phase = loop > 0 ? (((precise - this.startedAt) % loop) + loop) % loop : 0;
    const armIn = phase <= RUN_LOOP_SLACK_MS ? 0 : loop - phase;
    const fire = () => {
      this.timers.delete(id);
      const droplet = this.droplets.peek(app);
      if (!droplet) return; // the record was forgotten meanwhile
      this.guard(`timer ${id}`, () => this.handleAppEvent({ kind: 'timer', app, id, data }, droplet, this.o.clock.now(), policy));
    };
    const entry = { timer: clock.setTimeout(() => (entry.timer = clock.setTimeout(fire, delayMs)), armIn), policy };
    this.timers.set(id, entry);
  }

  /** One analysis tick: the next slice of records, in insertion order. */
  private analyzeTick(): void {
    if (!this.o.desiredAvailable()) {
      this.o.logger.warn('Droplet analysis interrupted. Desired state is not available');
      return;
    }
    const now = this.o.clock.now();
    if (this.sliceStart === 0) {
      this.passStartedAt = now;
      this.dispatchEvent({ kind: 'pass', phase: 'start' }, undefined, now, null, 0);
    }
    const n = this.o.analysisSlice;
    const slice = n > 0 ? this.droplets.slice(this.sliceStart, n) : [...this.droplets.values()];
    for (const d of slice) this.handleAppEvent({ kind: 'analyze', app: d.id }, d, now);
    this.sliceStart += n;
    if (n === 0 || slice.length < n) {
      this.sliceStart = 0;
      const durationMs = now - this.passStartedAt;
      this.dispatchEvent({ kind: 'pass', phase: 'done', durationMs }, undefined, now, null, 0);
      this.o.logger.debug({ droplets: this.droplets.size, duration_ms: durationMs }, 'analysis pass done');
    }
  }

  private sweep(p: { id: string }): void {
    const now = this.o.clock.now();
    const before = this.droplets.size;
    for (const d of [...this.droplets.values()]) this.handleAppEvent({ kind: 'sweep', app: d.id }, d, now, p.id);
    const after = this.droplets.size;
    if (after !== before) this.o.logger.info({ policy: p.id, before, after }, `${p.id}: ${before - after} of ${counted(before, 'app record')} forgotten`);
  }
}
