/**
 * Which apps need analysing again. The rules are deterministic in an app's inputs (desired state,
 * live instances, crash counts, pending messages), so an app none of whose inputs changed since
 * its last analysis would get the same proposals, all already pending or deliberately skipped.
 * Tracking changes from the store's onChange keeps a cycle proportional to what changed, not to
 * the size of the foundation.
 */
import type { AppKey } from '../../sdk/app-key.js';
import type { DesiredApp, StoreSnapshot } from '../../sdk/state.js';
import type { Store } from '../../sdk/store.js';

function sameDesired(a: DesiredApp | undefined, b: DesiredApp | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return a.instances === b.instances && a.state === b.state && a.packageState === b.packageState && a.updatedAt === b.updatedAt;
}

export class ChangedApps {
  private keys = new Set<AppKey>();
  private all = true;
  private desiredChanged = false;
  private lastDesired: ReadonlyMap<AppKey, DesiredApp> = new Map();
  private readonly off: () => void;

  constructor(store: Store) {
    this.off = store.onChange((c) => {
      switch (c.kind) {
        case 'desired':
          this.desiredChanged = true;
          break;
        case 'agent':
          for (const app of c.apps) this.keys.add(app);
          break;
        case 'crash':
        case 'start':
        case 'stop':
          this.keys.add(c.app);
          break;
      }
    });
  }

  /** Analyse everything next time (at start, after a failed cycle). */
  markAll(): void {
    this.all = true;
  }

  /**
   * The apps to analyse against `snapshot`, or undefined for all of them. Call it with a snapshot
   * taken after the changes it reports; later changes are kept for the next call.
   */
  take(snapshot: StoreSnapshot, collected: { keys: Set<AppKey>; all: boolean; desiredChanged: boolean }): Set<AppKey> | undefined {
    const previous = this.lastDesired;
    this.lastDesired = snapshot.desired;
    if (collected.all) return undefined;
    const keys = collected.keys;
    if (collected.desiredChanged) {
      for (const [key, d] of snapshot.desired) if (!sameDesired(previous.get(key), d)) keys.add(key);
      for (const key of previous.keys()) if (!snapshot.desired.has(key)) keys.add(key);
    }
    return keys;
  }

  /** Hands over what was collected so far and starts collecting anew. Call before the snapshot. */
  collect(): { keys: Set<AppKey>; all: boolean; desiredChanged: boolean } {
    const out = { keys: this.keys, all: this.all, desiredChanged: this.desiredChanged };
    this.keys = new Set();
    this.all = false;
    this.desiredChanged = false;
    return out;
  }

  close(): void {
    this.off();
  }
}
