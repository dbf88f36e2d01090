/**
 * The watch that keeps the mirror current: one range of the whole prefix (at one revision), then a
 * watch from the next revision. When the watch breaks (etcd restarted, a compaction, a dead
 * connection) the prefix is read again — the mirror emits whatever differs — and a new watch
 * starts from there; reads that fail are tried again with a backoff. One break is routine; a watch
 * that keeps breaking makes the store unhealthy.
 */
import type { IWatchResponse, Watcher } from 'etcd3';
import type { EtcdStoreError } from './client.js';
import type { Mirror } from './mirror.js';
import type { EtcdRequests, StoreLogger } from './requests.js';

const RESYNC_BACKOFF_MIN_MS = 100;
const RESYNC_BACKOFF_MAX_MS = 5_000;
/** The watch breaking this many times without coming up in between is reported. */
const WATCH_BREAKS_REPORTED = 3;

export class StateWatch {
  /** Times the watch broke (each followed by a read of the whole state). */
  breaks = 0;

  private watcher: Watcher | undefined;
  private resyncTimer: ReturnType<typeof setTimeout> | undefined;
  private resyncBackoff = RESYNC_BACKOFF_MIN_MS;
  private resyncing = false;
  /** Why the last read of the whole state failed (at start or after a break); null once one succeeds. */
  private syncError: string | null = null;
  private watchError: string | null = null;
  /** Watch breaks since the watch last came up: a watch that keeps breaking is a problem, one break is not. */
  private breaksInARow = 0;

  constructor(
    private readonly root: string,
    private readonly mirror: Mirror,
    private readonly requests: EtcdRequests,
    private readonly logger: StoreLogger | undefined,
  ) {}

  /** Why the state may not be current: a failed read, or a watch that keeps breaking; null if neither. */
  problem(): string | null {
    return this.syncError ?? (this.breaksInARow >= WATCH_BREAKS_REPORTED ? this.watchError : null);
  }

  /** Range everything, then watch from the revision of that range. */
  async resync(): Promise<void> {
    if (this.resyncing) return;
    this.resyncing = true;
    try {
      const revision = await this.mirror.refreshRange(this.root, 'reading the state');
      if (this.requests.stopped || !this.requests.etcd) return;
      this.mirror.readUpTo(revision);
      this.openWatch(revision + 1);
      if (!this.requests.everSynced && this.syncError !== null) this.logger?.info(`${this.requests.where} answers: the state is read`);
      this.requests.everSynced = true;
      this.syncError = null;
      this.resyncBackoff = RESYNC_BACKOFF_MIN_MS;
    } finally {
      this.resyncing = false;
    }
  }

  /** The first read found etcd unreachable: the store starts without it and reads in the background. */
  startWithout(err: EtcdStoreError): void {
    this.syncError = err.message;
    this.logger?.warn({ error: err.message }, `${err.message}; starting without it and trying again in the background`);
    this.scheduleResync();
  }

  /** Stops reading again; returns the watcher, still to be cancelled. */
  stop(): Watcher | undefined {
    if (this.resyncTimer) clearTimeout(this.resyncTimer);
    this.resyncTimer = undefined;
    const watcher = this.watcher;
    this.watcher = undefined;
    return watcher;
  }

  private openWatch(fromRevision: number): void {
    const watcher = this.requests.client.watch().prefix(this.root).startRevision(String(fromRevision)).watcher();
    this.watcher = watcher;
    watcher.on('connected', () => {
      if (this.watcher !== watcher) return;
      this.breaksInARow = 0;
      this.watchError = null;
    });
    watcher.on('data', (res: IWatchResponse) => {
      if (this.watcher === watcher) this.mirror.applyWatch(res);
    });
    const broken = (err: Error, cancel: boolean) => {
      if (this.watcher !== watcher) return;
      this.watcher = undefined;
      this.breaks++;
      this.breaksInARow++;
      this.watchError = `the watch of ${this.requests.where} broke: ${(err?.message ?? String(err)).split('\n')[0]}`;
      // One break is routine (etcd restarted, a connection replaced): the next read says whether etcd answers.
      if (this.breaksInARow >= WATCH_BREAKS_REPORTED)
        this.logger?.warn(
          { error: this.watchError, breaks: this.breaksInARow },
          `${this.watchError} (${this.breaksInARow} times in a row); reading the state again`,
        );
      else this.logger?.info({ error: this.watchError }, `${this.watchError}; reading the state again`);
      if (cancel) void watcher.cancel().catch(() => undefined);
      this.scheduleResync();
    };
    watcher.on('disconnected', (err: Error) => broken(err, true));
    // A watch etcd cancelled (its start revision was compacted, …) is already gone.
    watcher.on('error', (err: Error) => broken(err, false));
  }

  private scheduleResync(): void {
    if (this.requests.stopped || this.resyncTimer) return;
    const delay = this.resyncBackoff;
    // Until the state was read once nothing works here: try again at least every second.
    this.resyncBackoff = Math.min(this.requests.everSynced ? RESYNC_BACKOFF_MAX_MS : 1_000, this.resyncBackoff * 2);
    this.resyncTimer = setTimeout(() => {
      this.resyncTimer = undefined;
      if (this.requests.stopped) return;
      this.resync().catch((err: unknown) => {
        const first = this.syncError === null;
        this.syncError = (err as Error).message;
        // Logged when it begins; it lasts until a read succeeds (health says so meanwhile).
        if (first) this.logger?.warn({ error: this.syncError }, this.syncError);
        this.scheduleResync();
      });
    }, delay);
    this.resyncTimer.unref?.();
  }
}
