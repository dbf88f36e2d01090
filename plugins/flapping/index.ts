/**
 * Crashes and flapping, the Ruby Health Manager's way (docs/ruby-hm.md#crashes-and-flapping,
 * #exits, #crashes-in-the-older-design).
 *
 * A CRASHED exit counts a crash on the instance's record (looked up with the message's version):
 * the count starts again at 1 when the previous crash is older than `flapping_timeout`, and once
 * it exceeds `flapping_death` the record is FLAPPING. A crash that does not flap is restarted
 * through the priority queue at once (low priority); a flapping one gets a delayed restart that
 * doubles with each crash — min_restart_delay << (crashes − flapping_death − 1), capped, with
 * noise — sent straight out with `flapping: true` when its timer fires, until the count exceeds
 * `giveup_crash_number`, after which the instance is left alone. A FLAPPING index found missing
 * by the missing-instances policy (event `missing`) goes through the same policy, silently. An app
 * update cancels pending delayed restarts.
 *
 * The restart request is built when it is sent, with the app's live version; the crash lookup
 * uses the exit message's version (docs/ruby-hm.md#crash-accounting). Exits are marked down by droplet-records, which must
 * come before this stage in the policies list.
 */
import { Type } from '@sinclair/typebox';
import {
  definePlugin,
  counted,
  shortDuration,
  type Droplet,
  Duration,
  type EventDecision,
  type EventEnv,
  type EventInput,
  type EventPolicyStage,
  type ExitEvent,
  getInstance,
  type InstanceRecord,
  peekInstance,
  type StageContext,
  startRequest,
} from '../../src/sdk/index.js';

export const FlappingOptions = Type.Object(
  {
    flapping_timeout: Duration({
      default: '500s',
      description: 'A crash more than this after the previous one starts the crash count again (Ruby HM intervals.flapping_timeout).',
    }),
    flapping_death: Type.Integer({
      minimum: 0,
      default: 1,
      description: 'An instance is FLAPPING once its crash count is above this (Ruby HM intervals.flapping_death).',
    }),
    min_restart_delay: Duration({
      default: '60s',
      description: 'Delay of the first delayed restart of a flapping instance; doubled for each further crash (Ruby HM intervals.min_restart_delay).',
    }),
    max_restart_delay: Duration({ default: '480s', description: 'Largest delayed-restart delay (Ruby HM intervals.max_restart_delay).' }),
    delay_time_noise: Duration({
      default: '5s',
      description:
        'Each delay is moved by a uniform random amount in [-noise, +noise) (Ruby HM intervals.delay_time_noise: 5 in its code, 10 in its shipped YAML).',
    }),
    giveup_crash_number: Type.Integer({
      default: 4,
      description:
        'A flapping instance whose crash count is above this is not restarted any more; 0 or less: never give up (Ruby HM intervals.giveup_crash_number).',
    }),
    crash_count_reset: Type.Unsafe<'gap-between-crashes' | 'age-of-last-crash'>({
      type: 'string',
      enum: ['gap-between-crashes', 'age-of-last-crash'],
      default: 'gap-between-crashes',
      description:
        "When the crash count starts again. gap-between-crashes: this crash's agent timestamp is more than flapping_timeout after the previous crash's (Ruby HM). age-of-last-crash: the previous crash's agent timestamp is more than flapping_timeout before this daemon's now (the older Ruby HM).",
    }),
    pending_restart: Type.Unsafe<'per-instance' | 'per-index'>({
      type: 'string',
      enum: ['per-instance', 'per-index'],
      default: 'per-instance',
      description:
        'Where a pending delayed restart is remembered. per-instance: on the instance record; an app update cancels those of indices 0..instances, both included (Ruby HM). per-index: per index of the app, whatever the version; an app update cancels them all (the older Ruby HM).',
    }),
    crash_fills_guid: Type.Boolean({
      default: false,
      description:
        "A CRASHED exit gives the exited guid to a record that has none yet (the older Ruby HM); otherwise the record's guid comes from running heartbeats only (Ruby HM).",
    }),
    crash_priority: Type.Integer({
      default: 1,
      description: 'Queue priority of the restart of a crash that does not flap (Ruby HM LOW_PRIORITY); the queue takes higher first.',
    }),
  },
  { additionalProperties: false },
);

export interface FlappingConfig {
  flapping_timeout: number;
  flapping_death: number;
  min_restart_delay: number;
  max_restart_delay: number;
  delay_time_noise: number;
  giveup_crash_number: number;
  crash_count_reset: 'gap-between-crashes' | 'age-of-last-crash';
  pending_restart: 'per-instance' | 'per-index';
  crash_fills_guid: boolean;
  crash_priority: number;
}

/** The Ruby HM's code defaults (constants.rb), in milliseconds. */
export const DEFAULT_FLAPPING: FlappingConfig = {
  flapping_timeout: 500_000,
  flapping_death: 1,
  min_restart_delay: 60_000,
  max_restart_delay: 480_000,
  delay_time_noise: 5_000,
  giveup_crash_number: 4,
  crash_count_reset: 'gap-between-crashes',
  pending_restart: 'per-instance',
  crash_fills_guid: false,
  crash_priority: 1,
};

/**
 * Counts one crash at agent time `ts` (seconds) on `inst`, which becomes CRASHED, or FLAPPING above
 * flapping_death (docs/ruby-hm.md#crash-accounting; #crashes-in-the-older-design for
 * age-of-last-crash). `nowMs` is only read by the age-of-last-crash rule.
 */
export function countCrash(
  inst: InstanceRecord,
  ts: number,
  nowMs: number,
  o: Pick<FlappingConfig, 'flapping_timeout' | 'flapping_death' | 'crash_count_reset'>,
): void {
  inst.state = 'CRASHED';
  const last = inst.lastCrashTimestamp;
  const reset =
    o.crash_count_reset === 'gap-between-crashes'
      ? last !== null && (ts - last) * 1000 > o.flapping_timeout
      : last !== null && last > 0 && (Math.floor(nowMs / 1000) - last) * 1000 > o.flapping_timeout;
  if (reset) inst.crashCount = 0;
  inst.crashCount += 1;
  inst.lastCrashTimestamp = ts;
  if (inst.crashCount > o.flapping_death) inst.state = 'FLAPPING';
}

/**
 * docs/ruby-hm.md#flapping-back-off: min(max_restart_delay, min_restart_delay << (crash_count −
 * flapping_death − 1)) plus 2 × (random − 0.5) × delay_time_noise, in ms; never below 0 (a timer cannot fire in the past).
 */
export function flappingDelay(
  crashCount: number,
  random: number,
  o: Pick<FlappingConfig, 'flapping_death' | 'min_restart_delay' | 'max_restart_delay' | 'delay_time_noise'>,
): number {
  const shift = crashCount - o.flapping_death - 1;
  const grown = o.min_restart_delay === 0 ? 0 : o.min_restart_delay * 2 ** shift;
  const delay = Math.min(o.max_restart_delay, grown);
  return Math.max(0, delay + 2 * (random - 0.5) * o.delay_time_noise);
}

/** `giveup_restarting?`: a positive giveup_crash_number exceeded. */
export function givenUp(crashCount: number, giveupCrashNumber: number): boolean {
  return giveupCrashNumber > 0 && crashCount > giveupCrashNumber;
}

export class Flapping implements EventPolicyStage {
  readonly events = ['exit', 'missing', 'timer', 'updated'] as const;
  private seq = 0;

  constructor(
    private readonly o: FlappingConfig,
    private readonly ctx: Pick<StageContext, 'id' | 'logger'>,
  ) {}

  handle(input: EventInput): EventDecision[] {
    const { event, now, env } = input;
    const d = input.droplet as Droplet;
    switch (event.kind) {
      case 'exit':
        return event.reason === 'CRASHED' ? this.crashed(d, event, now, env) : [];
      case 'missing': {
        // Raised for FLAPPING indices found missing; anything else is the missing policy's own start.
        const inst = getInstance(d, event.index, event.version);
        return inst.state === 'FLAPPING' ? this.flappingPolicy(d, inst, event.chatty, env) : [];
      }
      case 'timer':
        return this.fire(d, event.id, event.data);
      case 'updated':
        return this.cancelAll(d);
      default:
        return [];
    }
  }

  /**
   * A CRASHED exit (docs/ruby-hm.md#exits, #crash-accounting): count the crash, then restart it
   * (queued low) or apply the flapping policy.
   */
  private crashed(d: Droplet, exit: ExitEvent, now: number, env: EventEnv): EventDecision[] {
    const ts = exit.crashTimestamp;
    if (typeof ts !== 'number' || !Number.isFinite(ts)) {
      // The Ruby HM failed on the missing field before counting anything.
      this.ctx.logger.warn({ app: d.id, index: exit.index, instance: exit.instance }, 'CRASHED exit without crash_timestamp: crash not counted');
      return [];
    }
    const inst = getInstance(d, exit.index, exit.version, exit.instance);
    if (this.o.crash_fills_guid && inst.guid === null) inst.guid = exit.instance;
    if (inst.guid !== exit.instance)
      this.ctx.logger.warn({ app: d.id, index: exit.index }, `unexpected instance_id: ${exit.instance}, desired: ${String(inst.guid)}`);
    countCrash(inst, ts, now, this.o);
    // Keyed by the record's guid, as the Ruby HM did (the exit's when the record never had one).
    d.crashes.set(inst.guid ?? exit.instance, { timestampMs: now, crashTimestamp: ts });

    if (inst.state === 'FLAPPING') return this.flappingPolicy(d, inst, true, env);
    return [
      {
        kind: 'request',
        request: startRequest(d, exit.index),
        delivery: { queue: this.o.crash_priority },
        reason: 'CRASHED',
        log: 'instance crashed',
        facts: { index: exit.index, instance: exit.instance, exit_version: exit.version, crash_count: inst.crashCount, crash_timestamp: ts },
      },
    ];
  }

  private pendingId(d: Droplet, inst: InstanceRecord): string | null {
    return this.o.pending_restart === 'per-index' ? (d.pendingRestarts.get(inst.index) ?? null) : inst.pendingRestart;
  }

  /** `execute_flapping_policy` (docs/ruby-hm.md#flapping-back-off): nothing while a restart is pending or after giving up; else a timer. */
  private flappingPolicy(d: Droplet, inst: InstanceRecord, chatty: boolean, env: EventEnv): EventDecision[] {
    if (this.pendingId(d, inst) !== null) return [];
    if (givenUp(inst.crashCount, this.o.giveup_crash_number)) {
      if (chatty)
        this.ctx.logger.info({ app: d.id, index: inst.index, crash_count: inst.crashCount }, `given up on restarting: app_id=${d.id} index=${inst.index}`);
      return [];
    }
    const delayMs = flappingDelay(inst.crashCount, env.random(), this.o);
    const id = `${this.ctx.id}:${d.id}:${inst.index}:${++this.seq}`;
    if (this.o.pending_restart === 'per-index') d.pendingRestarts.set(inst.index, id);
    else inst.pendingRestart = id;
    this.ctx.logger.info(
      { app: d.id, index: inst.index, version: inst.version, crash_count: inst.crashCount, delay_ms: Math.round(delayMs), timer: id },
      `flapping instance: restart of index ${inst.index} in ${(delayMs / 1000).toFixed(1)}s`,
    );
    return [{ kind: 'timer', id, delayMs, data: { index: inst.index, version: inst.version } }];
  }

  /** The delayed restart is due: unmark it and send a flapping START, built now. */
  private fire(d: Droplet, id: string, data: Record<string, unknown>): EventDecision[] {
    const index = data.index;
    if (typeof index !== 'number') return [];
    const version = (data.version ?? null) as string | null;
    const inst = peekInstance(d, index, version); // gone if the record was pruned meanwhile: the restart still goes out
    if (this.o.pending_restart === 'per-index') {
      if (d.pendingRestarts.get(index) === id) d.pendingRestarts.delete(index);
    } else if (inst?.pendingRestart === id) {
      inst.pendingRestart = null;
    }
    return [
      {
        kind: 'request',
        request: startRequest(d, index, true),
        delivery: 'now',
        reason: 'FLAPPING',
        log: 'delayed restart of a flapping instance',
        facts: { index, crash_count: inst?.crashCount ?? null },
      },
    ];
  }

  /**
   * Cancels pending delayed restarts: indices 0..instances inclusive, or all with per-index
   * (docs/ruby-hm.md#app-updates, #the-older-design).
   */
  private cancelAll(d: Droplet): EventDecision[] {
    const out: EventDecision[] = [];
    if (this.o.pending_restart === 'per-index') {
      for (const id of d.pendingRestarts.values()) out.push({ kind: 'cancel-timer', id });
      d.pendingRestarts.clear();
    } else {
      for (let i = 0; i <= d.numInstances; i++) {
        const inst = getInstance(d, i); // the Ruby HM's scan creates the records it reads
        if (inst.pendingRestart === null) continue;
        out.push({ kind: 'cancel-timer', id: inst.pendingRestart });
        inst.pendingRestart = null;
      }
    }
    if (out.length > 0) this.ctx.logger.info({ app: d.id, cancelled: out.length }, 'app updated: pending delayed restarts cancelled');
    return out;
  }
}

export default definePlugin({
  name: 'flapping',
  kind: 'policy',
  family: 'ruby-hm',
  description:
    'Counts crashes per instance and restarts them the Ruby HM way: a single crash at once (queued), a flapping instance after a doubling delay with noise, up to a give-up count (docs/ruby-hm.md#flapping-back-off).',
  optionsSchema: FlappingOptions,
  create: (options, ctx): EventPolicyStage => new Flapping(options, ctx),
  summary: (o) => {
    const giveup = Number(o.giveup_crash_number);
    return `flapping: FLAPPING above ${counted(Number(o.flapping_death), 'crash', 'crashes')}, count reset after ${shortDuration(Number(o.flapping_timeout))} (${String(o.crash_count_reset)}), restarts after ${shortDuration(Number(o.min_restart_delay))} doubling up to ${shortDuration(Number(o.max_restart_delay))} ±${shortDuration(Number(o.delay_time_noise))}, ${giveup > 0 ? `gives up above ${counted(giveup, 'crash', 'crashes')}` : 'never gives up'}`;
  },
});
