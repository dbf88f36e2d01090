/**
 * Crash counts as both stores keep them for reading: by key, and grouped per app for the snapshot,
 * each a copy-on-write map so a snapshot costs a reference.
 */
import { appKey, type AppKey } from '../sdk/app-key.js';
import type { CrashCount } from '../sdk/state.js';
import { CowMap } from './cow-map.js';

export class CrashCountIndex {
  private readonly byKey = new CowMap<string, CrashCount>();
  private readonly perApp = new Map<AppKey, Map<string, CrashCount>>();
  private readonly byApp = new CowMap<AppKey, readonly CrashCount[]>();

  get(key: string): CrashCount | undefined {
    return this.byKey.get(key);
  }

  set(key: string, count: CrashCount): void {
    const app = appKey(count.app, count.version);
    this.byKey.set(key, count);
    // A count's key fixes its app, so a count it replaces is in the same per-app group.
    let perKey = this.perApp.get(app);
    if (!perKey) this.perApp.set(app, (perKey = new Map()));
    perKey.set(key, count);
    this.byApp.set(app, [...perKey.values()]);
  }

  /** Removes a count; returns it, or undefined when there was none. */
  delete(key: string): CrashCount | undefined {
    const count = this.byKey.get(key);
    if (count === undefined) return undefined;
    this.byKey.delete(key);
    const app = appKey(count.app, count.version);
    const perKey = this.perApp.get(app);
    perKey?.delete(key);
    if (!perKey || perKey.size === 0) {
      this.perApp.delete(app);
      this.byApp.delete(app);
    } else {
      this.byApp.set(app, [...perKey.values()]);
    }
    return count;
  }

  /** Every count by key (a snapshot: later writes do not show in it). */
  view(): ReadonlyMap<string, CrashCount> {
    return this.byKey.view();
  }

  /** The counts per app (a snapshot). */
  viewByApp(): ReadonlyMap<AppKey, readonly CrashCount[]> {
    return this.byApp.view();
  }
}
