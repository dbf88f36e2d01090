/**
 * The Ruby Health Manager's instance records (docs/ruby-hm.md#instance-records, #heartbeats, #exits,
 * #app-updates, #heartbeats-in-the-older-design, #the-older-design): what every heartbeat entry, exit
 * and app update does to the app's record, and the duplicate-guid stops the heartbeat path sends at
 * once (#duplicate-guids).
 *
 * Two designs, chosen by options:
 * - `duplicates: guid-stream` (the Ruby HM at its last commit): each running beat appends its guid
 *   to the record's stream; when the last three running beats at one version/index came from two
 *   guids, the one that is not the latest is stopped. Non-running beats take their guid out of the
 *   stream, so start-then-crash cycles and evacuations stop nothing.
 * - `duplicates: instance-mismatch` (the older design): a running beat from another guid than the
 *   RUNNING record's is stopped at once, and the record is not refreshed by it.
 *
 * Crash accounting on exits is the flapping policy's (plugins/flapping); restarts of evacuated
 * instances are exit-restarts'. This stage must come before both in the policies list: they read
 * the state it leaves (an exit marks the record DOWN first, then the crash is counted).
 */
import { Type } from '@sinclair/typebox';
import {
  definePlugin,
  type Droplet,
  type EventDecision,
  type EventInput,
  type EventPolicyStage,
  type ExitEvent,
  type ExtraInstance,
  getInstance,
  type InstanceHeartbeat,
  type InstanceRecord,
  type StageContext,
  stopRequest,
} from '../../src/sdk/index.js';

export const DropletRecordsOptions = Type.Object(
  {
    duplicates: Type.Unsafe<'guid-stream' | 'instance-mismatch'>({
      type: 'string',
      enum: ['guid-stream', 'instance-mismatch'],
      default: 'guid-stream',
      description:
        'How two guids heartbeating at one version/index are found. guid-stream: from the last 3 running beats, stop the guid that is not the latest (Ruby HM; non-running beats and exits take their guid out of the stream). instance-mismatch: a running beat whose record is RUNNING under another guid is stopped on every beat, and does not refresh the record (the older Ruby HM).',
    }),
    heartbeat_stop_list: Type.Unsafe<'cleared-per-beat' | 'kept-until-analysis'>({
      type: 'string',
      enum: ['cleared-per-beat', 'kept-until-analysis'],
      default: 'cleared-per-beat',
      description:
        "The app's list of stops to send. cleared-per-beat: emptied before each heartbeat entry, so an entry sends only its own duplicate stop (Ruby HM). kept-until-analysis: kept until the app's next analysis, so every entry re-sends what piled up, duplicates included (the older Ruby HM).",
    }),
    exit_markdown: Type.Unsafe<'state-and-time' | 'state-only'>({
      type: 'string',
      enum: ['state-and-time', 'state-only'],
      default: 'state-and-time',
      description:
        'What an exit does to the record when its guid matches. state-and-time: state DOWN, state time = now, guid out of the stream (Ruby HM). state-only: state DOWN only (the older Ruby HM).',
    }),
  },
  { additionalProperties: false },
);

export interface DropletRecordsConfig {
  duplicates: 'guid-stream' | 'instance-mismatch';
  heartbeat_stop_list: 'cleared-per-beat' | 'kept-until-analysis';
  exit_markdown: 'state-and-time' | 'state-only';
}

export const DEFAULT_DROPLET_RECORDS: DropletRecordsConfig = {
  duplicates: 'guid-stream',
  heartbeat_stop_list: 'cleared-per-beat',
  exit_markdown: 'state-and-time',
};

/** Exit reasons after which the app's missing check waits a grace again (`reset_missing_indices`). */
export const RESETTING_EXIT_REASONS: ReadonlySet<string> = new Set(['STOPPED', 'DEA_SHUTDOWN', 'DEA_EVACUATION']);

/** HM time in whole seconds (the Ruby HM's clock was `Time.now.to_i`). */
export const hmSeconds = (nowMs: number): number => Math.floor(nowMs / 1000);

const isRunningState = (state: string): boolean => state === 'STARTING' || state === 'RUNNING';

/**
 * `extra_instance_guid_to_prune` (docs/ruby-hm.md#duplicate-guids): with three or more recent running beats, keeps the last
 * three; if the first two of those differ, the first guid that is not the record's (the latest
 * running one) is to be stopped.
 */
export function extraInstanceGuidToPrune(inst: InstanceRecord): string | null {
  if (inst.guidStream.length < 3) return null;
  inst.guidStream = inst.guidStream.slice(-3);
  if (inst.guidStream[0] === inst.guidStream[1]) return null;
  return inst.guidStream.find((g) => g !== inst.guid) ?? null;
}

function removeGuid(inst: InstanceRecord, guid: string): void {
  inst.guidStream = inst.guidStream.filter((g) => g !== guid);
}

/** Adds a stop to the app's list: one per guid in the guid-stream design (a map there), appended in the other. */
function addExtra(d: Droplet, extra: ExtraInstance, o: DropletRecordsConfig): void {
  if (o.duplicates === 'guid-stream') {
    const at = d.extraInstances.findIndex((e) => e.instance === extra.instance);
    if (at >= 0) {
      d.extraInstances[at] = extra;
      return;
    }
  }
  d.extraInstances.push(extra);
}

/**
 * One heartbeat entry applied to the app's record: docs/ruby-hm.md#heartbeats (guid-stream) or
 * #heartbeats-in-the-older-design (instance-mismatch).
 */
export function receiveHeartbeat(d: Droplet, beat: InstanceHeartbeat, nowMs: number, o: DropletRecordsConfig): void {
  if (o.heartbeat_stop_list === 'cleared-per-beat') d.extraInstances = [];
  const inst = getInstance(d, beat.index, beat.version);
  const running = isRunningState(beat.state);
  if (o.duplicates === 'guid-stream') {
    if (running) {
      inst.guidStream.push(beat.instance);
      refresh(inst, beat, nowMs);
    } else {
      removeGuid(inst, beat.instance);
    }
    const prune = extraInstanceGuidToPrune(inst);
    if (prune !== null) addExtra(d, { instance: prune, version: beat.version, reason: `Instance mismatch, pruning: ${prune}` }, o);
  } else if (running) {
    if (inst.state === 'RUNNING' && inst.guid !== beat.instance) {
      addExtra(d, { instance: beat.instance, version: beat.version, reason: `Instance mismatch, actual: ${beat.instance}, desired: ${String(inst.guid)}` }, o);
    } else {
      refresh(inst, beat, nowMs);
    }
  }
  if (beat.state === 'CRASHED') d.crashes.set(beat.instance, { timestampMs: nowMs, crashTimestamp: beat.stateTimestamp });
}

function refresh(inst: InstanceRecord, beat: InstanceHeartbeat, nowMs: number): void {
  inst.lastHeartbeatMs = nowMs;
  inst.guid = beat.instance;
  inst.state = beat.state as InstanceRecord['state'];
  inst.stateTimestamp = beat.stateTimestamp;
}

/**
 * docs/ruby-hm.md#exits (step 3; #the-older-design for state-only): the exited instance's record
 * (looked up, and created, with the message's version) goes DOWN if its guid is the exited one; STOPPED and DEA_* exits restart the app's
 * missing-check grace. Returns whether the record was marked down.
 */
export function applyExit(d: Droplet, exit: ExitEvent, nowMs: number, o: DropletRecordsConfig): boolean {
  const inst = getInstance(d, exit.index, exit.version);
  let marked = false;
  if (inst.guid !== null && inst.guid === exit.instance) {
    if (o.exit_markdown === 'state-and-time') {
      removeGuid(inst, inst.guid);
      inst.stateTimestamp = hmSeconds(nowMs);
    }
    inst.state = 'DOWN';
    marked = true;
  }
  if (RESETTING_EXIT_REASONS.has(exit.reason)) d.resetTimestampMs = nowMs;
  return marked;
}

/** docs/ruby-hm.md#app-updates: the grace restarts and extras/missing wait for the next bulk appearance. */
export function applyUpdated(d: Droplet, nowMs: number): void {
  d.resetTimestampMs = nowMs;
  d.desiredUpdateRequired = true;
}

/** The log reason of a heartbeat-path stop: DUPLICATE, unless analysis extras are in the list too. */
function stopReason(list: readonly ExtraInstance[]): string {
  return list.every((e) => e.reason.startsWith('Instance mismatch')) ? 'DUPLICATE' : 'EXTRA';
}

/**
 * `on_extra_instances` on the heartbeat path (docs/ruby-hm.md#heartbeats, step 6): nothing if the list is empty; held back (logged)
 * while the app waits for its desired state; otherwise one STOP carrying the whole list, at once.
 */
export function extraInstancesStop(d: Droplet, ctx: Pick<StageContext, 'logger'> | undefined): EventDecision[] {
  const list = d.extraInstances;
  if (list.length === 0) return [];
  const extra = list.map((e) => ({ instance: e.instance, version: e.version, reason: e.reason }));
  if (d.desiredUpdateRequired) {
    ctx?.logger.info({ app: d.id, extra }, 'extra instances ignored: the app waits for its desired state');
    return [];
  }
  return [
    {
      kind: 'request',
      request: stopRequest(d, list),
      delivery: 'now',
      reason: stopReason(list),
      log: list.length === 1 ? list[0]!.reason : `${list.length} instances to stop`,
      facts: { extra },
    },
  ];
}

export class DropletRecords implements EventPolicyStage {
  readonly events = ['heartbeat', 'exit', 'updated'] as const;

  constructor(
    private readonly o: DropletRecordsConfig,
    private readonly ctx?: Pick<StageContext, 'logger'>,
  ) {}

  handle(input: EventInput): EventDecision[] {
    const { event, now } = input;
    const d = input.droplet as Droplet;
    switch (event.kind) {
      case 'heartbeat':
        receiveHeartbeat(d, event.beat, now, this.o);
        return extraInstancesStop(d, this.ctx);
      case 'exit': {
        const marked = applyExit(d, event, now, this.o);
        this.ctx?.logger.debug(
          { app: d.id, version: event.version, index: event.index, instance: event.instance, reason: event.reason, marked_down: marked },
          `instance exited: ${event.reason}`,
        );
        return [];
      }
      case 'updated':
        applyUpdated(d, now);
        return [{ kind: 'refresh-desired' }];
      default:
        return [];
    }
  }
}

export default definePlugin({
  name: 'droplet-records',
  kind: 'policy',
  family: 'ruby-hm',
  description:
    "Keeps the Ruby HM's per-app instance records from heartbeats, exits and app updates, and stops a second guid heartbeating at one index at once (docs/ruby-hm.md#duplicate-guids).",
  optionsSchema: DropletRecordsOptions,
  create: (options, ctx): EventPolicyStage => new DropletRecords(options, ctx),
  summary: (o) =>
    `droplet-records: instance records from heartbeats and exits; duplicates by ${String(o.duplicates)}, stop list ${String(o.heartbeat_stop_list)}, exit mark-down ${String(o.exit_markdown)}`,
});
