/**
 * Event-triggered policies. Besides the periodic analysis of HM9000, the Ruby Health Manager
 * reacts to single messages: a heartbeat (duplicate-guid stops), an exit (crash and evacuation
 * starts), an app update. A policy declares the events it handles; the engine hands it, per event,
 * the app's record (droplets.ts), the event, the time and a few facts, and the policy returns its
 * decisions. Rules stay pure functions of their input: the only state they touch is the record
 * they are given, which the engine owns and keeps (the Ruby HM's per-app memory).
 *
 * Sources raise events with `ctx.emit(event)`; only the leader handles them.
 */
import type { Droplet, DropletRegistry, DropletRequest } from './droplets.js';
import { hasMethods, type Stage } from './stage.js';
import type { DesiredApp, InstanceHeartbeat } from './state.js';

/** An instance exit (`droplet.exited`). */
export interface ExitEvent {
  kind: 'exit';
  app: string;
  version: string;
  instance: string;
  index: number;
  /** CRASHED | DEA_SHUTDOWN | DEA_EVACUATION | STOPPED | … */
  reason: string;
  /** The agent's crash time in seconds (CRASHED only). */
  crashTimestamp?: number;
}

/**
 * The events policies can declare. App events carry the app guid; the engine routes them to that
 * app's record (creating it) and runs the declaring policies in config order.
 */
export type AppEvent =
  /** One heartbeat entry (one instance of one agent's heartbeat), in message order. */
  | { kind: 'heartbeat'; app: string; agent: string; beat: InstanceHeartbeat }
  | ExitEvent
  /** `droplet.updated`: the app changed in the Cloud Controller. */
  | { kind: 'updated'; app: string }
  /** The app's turn in the (possibly sliced) analysis pass. */
  | { kind: 'analyze'; app: string }
  /** A timer this policy asked for (decision `timer`) is due. */
  | { kind: 'timer'; app: string; id: string; data: Record<string, unknown> }
  /**
   * Raised by a policy (decision `raise`) and handled at once by the policies that declare it, e.g.
   * an instance found missing that is FLAPPING goes to the flapping policy.
   */
  | { kind: 'missing'; app: string; index: number; version: string | null; chatty: boolean }
  /** The policy's periodic sweep (`every`), once per app record. */
  | { kind: 'sweep'; app: string };

export type AppEventKind = AppEvent['kind'];

/** Events about the whole foundation, not one app (no record is handed over). */
export type FoundationEvent =
  /** A complete heartbeat message arrived (counted once, before any per-entry event). */
  | { kind: 'heartbeat-message'; agent: string; entries: number; accepted: number }
  /** One app as the bulk API reported it, while a walk pages (the engine applies it to the record first). */
  | { kind: 'desired'; app: DesiredApp }
  /**
   * A bulk walk began or completed (a walk that fails raises no `done`). `seen`, on `done` only when
   * the source forgets unseen apps (bulk-api forget_unseen), lists every app guid that walk
   * reported: the records of all other apps are to be forgotten. `users`: the CC's user count from
   * /bulk/counts, when asked (the Ruby HM's varz total_users).
   */
  | { kind: 'walk'; phase: 'start' | 'done'; seen?: readonly string[]; users?: number }
  /** An analysis pass began (first slice) or completed (last slice). */
  | { kind: 'pass'; phase: 'start' | 'done'; durationMs?: number };

export type PolicyEvent = AppEvent | FoundationEvent;
export type EventKind = PolicyEvent['kind'];

/** Facts about the daemon a rule may depend on. */
export interface EventEnv {
  /** The last bulk exchange succeeded (the Ruby HM's `desired_state.available?`). */
  desiredAvailable: boolean;
  /** The message bus is connected. */
  busConnected: boolean;
  /** A uniform random number in [0, 1): injectable, so jitter is reproducible in tests. */
  random(): number;
}

export interface EventInput<E extends PolicyEvent = PolicyEvent> {
  event: E;
  /** The app's record for app events; undefined for foundation events. The policy may change it. */
  droplet: E extends AppEvent ? Droplet : undefined;
  now: number;
  env: EventEnv;
}

/** Where a start goes: the priority queue (drained in batches) or straight out. */
export type Delivery = { queue: number } | 'now';

export type EventDecision =
  | {
      kind: 'request';
      request: DropletRequest;
      /** Starts: queued with a priority, or sent at once. Stops are always sent at once. */
      delivery: Delivery;
      /** MISSING, CRASHED, EVACUATING, FLAPPING, EXTRA, DUPLICATE, STOPPED, EXTRA_APP, … */
      reason: string;
      /** One sentence for the log. */
      log: string;
      facts?: Record<string, unknown>;
    }
  /**
   * Run this policy again for the app after `delayMs`, armed at the next scheduler run loop (as the
   * Ruby HM's one-shot timers are). `id` is the policy's own, for cancelling.
   */
  | { kind: 'timer'; id: string; delayMs: number; data: Record<string, unknown> }
  | { kind: 'cancel-timer'; id: string }
  /**
   * Drop the app's record (garbage collection), or with `apps` (from a foundation event) those
   * apps' records; a record comes back on the next event that names its app.
   */
  | { kind: 'forget'; apps?: readonly string[] }
  /** Ask the desired-state sources to fetch everything again now (`droplet.updated`). */
  | { kind: 'refresh-desired' }
  /** Hand an app event to the policies that declare it, at once (before the next policy runs). */
  | { kind: 'raise'; event: AppEvent };

export interface EventPolicyStage extends Stage {
  /** The events this policy handles. */
  readonly events: readonly EventKind[];
  /** With 'sweep' among the events: how often (ms) every app record is swept. */
  readonly everyMs?: number;
  handle(input: EventInput): EventDecision[];
}

/**
 * A reporter on the event path: sees the events it declares after every policy has handled them
 * (so per-app figures are taken once an app's analysis is over), and decides nothing.
 */
export interface EventObserverStage extends Stage {
  readonly events: readonly EventKind[];
  observe(input: EventInput): void;
}

export function isEventObserver(stage: Stage): stage is EventObserverStage {
  return Array.isArray((stage as Partial<EventObserverStage>).events) && hasMethods(stage, 'observe');
}

export function isEventPolicy(stage: Stage): stage is EventPolicyStage {
  return Array.isArray((stage as Partial<EventPolicyStage>).events) && hasMethods(stage, 'handle');
}

export function isAppEvent(event: PolicyEvent): event is AppEvent {
  return 'app' in event && typeof (event as { app: unknown }).app === 'string';
}

/** What stages get in their context for events: raising them, and reading the records. */
export interface EventHub {
  /** Raise an event; ignored on a standby and when no policy handles its kind. */
  emit(event: PolicyEvent): void;
  /** Whether any policy handles this kind (so a source can skip building events nobody reads). */
  wants(kind: EventKind): boolean;
  /** The app records (live; a reader that must not create records uses peek). */
  readonly droplets: DropletRegistry;
}
