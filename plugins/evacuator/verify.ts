/**
 * Whether an evacuation start asked for by a droplet.exited message still makes sense, checked
 * against the store when the message arrives. HM9000 wrote such starts without any check, so a
 * forged or stale exit started an app the Cloud Controller does not want, an index beyond its
 * count, or a second copy of an index that runs elsewhere. Pure: the caller reads the snapshot.
 */
import { appKey, counted, isDesiredFresh, startKey, type StoreSnapshot } from '../../src/sdk/index.js';

export interface ExitedInstance {
  droplet: string;
  version: string;
  /** Absent when the agent did not say which instance exited. */
  instance?: string;
  index: number;
}

export type RefusalReason =
  | 'desired_not_fresh'
  | 'not_desired'
  | 'not_started'
  | 'index_not_desired'
  | 'running_elsewhere'
  | 'starting_elsewhere'
  | 'start_already_sent'
  /** The store could not be read, so nothing could be verified. */
  | 'store_unreadable';

export interface Refusal {
  reason: RefusalReason;
  /** Why, in words, for the log line. */
  detail: string;
  facts: Record<string, unknown>;
}

export function verifyEvacuationStart(snapshot: StoreSnapshot, exit: ExitedInstance, now: number): Refusal | null {
  // Without a recent complete fetch nothing can be verified, and an unverified start is what this
  // check exists to prevent; the analyzer starts the index later if it is still missing.
  if (!isDesiredFresh(snapshot.freshness.desired, now)) {
    return {
      reason: 'desired_not_fresh',
      detail: 'desired state is not fresh (no complete fetch from the Cloud Controller within its TTL), so the start cannot be verified',
      facts: {},
    };
  }
  const key = appKey(exit.droplet, exit.version);
  const desired = snapshot.desired.get(key);
  if (!desired) return { reason: 'not_desired', detail: 'the Cloud Controller does not desire this app at this version', facts: {} };
  if (desired.state !== 'STARTED')
    return { reason: 'not_started', detail: `the app is ${desired.state}, not STARTED`, facts: { desired_state: desired.state } };
  if (exit.index >= desired.instances) {
    return {
      reason: 'index_not_desired',
      detail: `index ${exit.index} is beyond the ${counted(desired.instances, 'desired instance')}`,
      facts: { desired_instances: desired.instances },
    };
  }

  // The exited instance, and anything else its agent reports at the index, is leaving: an agent
  // that shuts down goes on being listed with its last heartbeat until its presence lapses.
  const instances = snapshot.instances.get(key) ?? [];
  const leavingAgent = exit.instance === undefined ? undefined : instances.find((i) => i.instance === exit.instance)?.agent;
  const elsewhere = instances.filter((i) => i.index === exit.index && i.instance !== exit.instance && i.agent !== leavingAgent);
  const running = elsewhere.find((i) => i.state === 'RUNNING');
  if (running) {
    return {
      reason: 'running_elsewhere',
      detail: `index ${exit.index} already runs elsewhere (instance ${running.instance} on ${running.agent})`,
      facts: { running_instance: running.instance, running_agent: running.agent },
    };
  }
  // A STARTING copy elsewhere is usually the replacement the evacuation rule already started from
  // EVACUATING heartbeats; a second start would only make a duplicate to stop later. If that copy
  // fails, the index is missing and the analyzer starts it after its grace period.
  const starting = elsewhere.find((i) => i.state === 'STARTING');
  if (starting) {
    return {
      reason: 'starting_elsewhere',
      detail: `index ${exit.index} is already starting elsewhere (instance ${starting.instance} on ${starting.agent})`,
      facts: { starting_instance: starting.instance, starting_agent: starting.agent },
    };
  }
  // A start for the index was sent and is still awaited (its keep-alive has not run out):
  // overwriting it would send it again.
  const pending = snapshot.starts.get(startKey({ app: exit.droplet, version: exit.version, index: exit.index }));
  if (pending && pending.sentOn !== 0 && pending.sentOn + pending.keepAlive > now) {
    return {
      reason: 'start_already_sent',
      detail: `a ${pending.reason || 'start'} start for index ${exit.index} was sent ${Math.round((now - pending.sentOn) / 1000)}s ago and is still awaited`,
      facts: { pending_reason: pending.reason, pending_message_id: pending.messageId },
    };
  }
  return null;
}
