/**
 * The etcd store's leader election: etcd3's `election(name, ttl)` (campaign, resign, and the
 * election's keys observed for leaderId()), whose candidates hold a key on a lease of `ttlSeconds`.
 *
 * etcd3's campaign only reports an error once its lease is lost for good (after 2 × ttl without a
 * keepalive answer), which is too late: by then another daemon may lead. So while elected, this
 * class asks etcd every ttl/4 (at most 1 s) how long its lease has left, and counts itself leader
 * only until `time the question was sent + remaining TTL` (whole seconds, rounded down by etcd):
 * a moment the lease cannot have expired before. If no answer extends that, leadership ends there
 * — within the TTL of etcd's last sign of life — onChange(false) fires, the campaign is resigned
 * and, once etcd answers again, a new one starts.
 */
import { Election, type Campaign, type Namespace, type Watcher } from 'etcd3';
import { addListener, type Candidacy, type LeaderLogger, type Leadership } from '../../src/sdk/index.js';

export interface LeaderElectionOptions {
  /** The election's name; its keys are `election/<name>/<lease>` under the client's namespace. */
  name: string;
  /** TTL of the candidates' leases: how long a leader that vanished keeps the others waiting. */
  ttlSeconds: number;
  /** This daemon's id, as the others see it in leaderId(). */
  id: string;
  logger: LeaderLogger;
}

const RETRY_MIN_MS = 250;
const RESIGN_WAIT_MS = 2_000;

function message(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

function unrefTimer(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
  const t = setTimeout(fn, Math.max(0, ms));
  t.unref?.();
  return t;
}

async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((resolve) => (timer = unrefTimer(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export class LeaderElection implements Leadership {
  private readonly election: Election;
  private readonly ttlMs: number;
  private readonly checkEveryMs: number;
  private readonly listeners = new Set<(isLeader: boolean) => void>();

  private running = false;
  /** Set by setEligible: an ineligible daemon neither campaigns nor leads. */
  private eligible = true;
  private ineligibleWhy: string | null = null;
  /** Bumped for every campaign, so events of an abandoned one are ignored. */
  private generation = 0;
  private campaign: Campaign | undefined;
  private elected = false;
  private leading = false;
  /** Real time until which this daemon's lease is known to live. */
  private validUntil = 0;
  private checkTimer: ReturnType<typeof setTimeout> | undefined;
  private lossTimer: ReturnType<typeof setTimeout> | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private retryDelay = RETRY_MIN_MS;
  /** The reason last warned about, so an outage is one warning, not one per retry. */
  private lastRetryWhy: string | undefined;

  private observer: Watcher | undefined;
  private observeTimer: ReturnType<typeof setTimeout> | undefined;
  private observing = false;
  private current: string | null = null;

  constructor(
    private readonly client: Namespace,
    private readonly opts: LeaderElectionOptions,
  ) {
    if (!Number.isInteger(opts.ttlSeconds) || opts.ttlSeconds < 1) {
      throw new RangeError(`leader election: ttlSeconds must be a whole number >= 1, got ${opts.ttlSeconds}`);
    }
    this.election = client.election(opts.name, opts.ttlSeconds);
    this.ttlMs = opts.ttlSeconds * 1000;
    this.checkEveryMs = Math.max(200, Math.min(1000, this.ttlMs / 4));
  }

  get isLeader(): boolean {
    return this.leading && Date.now() < this.validUntil;
  }

  leaderId(): string | null {
    return this.current;
  }

  onChange(listener: (isLeader: boolean) => void): () => void {
    return addListener(this.listeners, listener);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.retryDelay = RETRY_MIN_MS;
    this.startCampaign();
    this.startObserving();
  }

  // --- eligibility (leader-fitness.ts decides it) ---

  setEligible(eligible: boolean, why: string | null = null): void {
    if (eligible === this.eligible) {
      if (!eligible) this.ineligibleWhy = why;
      return;
    }
    this.eligible = eligible;
    this.ineligibleWhy = eligible ? null : why;
    if (!eligible) {
      // Withdraw now: a standby's key would otherwise be first in line, and a leader's resignation
      // hands over without waiting for its lease.
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      const campaign = this.campaign;
      this.dropCampaign();
      this.setLeading(false, why ?? 'not eligible');
      campaign
        ?.resign()
        .catch((err: unknown) =>
          this.opts.logger.warn({ error: message(err) }, `resigning the leader election failed (the lease will expire): ${message(err)}`),
        );
    } else if (this.running && !this.campaign && !this.retryTimer) {
      this.retryDelay = RETRY_MIN_MS;
      this.startCampaign();
    }
  }

  candidacy(): Candidacy {
    if (!this.running) return { candidate: false, why: 'not running' };
    return this.eligible ? { candidate: true, why: null } : { candidate: false, why: this.ineligibleWhy ?? 'not eligible' };
  }

  async resign(): Promise<void> {
    this.running = false;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const campaign = this.campaign;
    this.dropCampaign();
    this.setLeading(false, 'resigned');
    if (campaign) {
      try {
        await within(campaign.resign(), RESIGN_WAIT_MS);
      } catch (err) {
        this.opts.logger.warn({ error: message(err) }, `resigning the leader election failed (the lease will expire): ${message(err)}`);
      }
    }
  }

  async stop(): Promise<void> {
    await this.resign();
    clearTimeout(this.observeTimer);
    this.observeTimer = undefined;
    this.observing = false;
    const observer = this.observer;
    this.observer = undefined;
    if (observer)
      await within(
        observer.cancel().catch(() => undefined),
        RESIGN_WAIT_MS,
      );
    this.current = null;
  }

  // --- campaigning ---

  private startCampaign(): void {
    if (!this.running || !this.eligible) return;
    const gen = ++this.generation;
    let campaign: Campaign;
    try {
      campaign = this.election.campaign(this.opts.id);
    } catch (err) {
      this.retry(gen, `cannot campaign: ${message(err)}`);
      return;
    }
    this.campaign = campaign;
    campaign.on('elected', () => {
      if (gen !== this.generation) return;
      this.elected = true;
      void this.check(gen);
    });
    campaign.on('error', (err: Error) => {
      if (gen !== this.generation) return;
      this.retry(gen, `campaign failed: ${message(err)}`);
    });
  }

  /** Asks etcd how long the campaign's lease has left; leadership lasts until then at most. */
  private async check(gen: number): Promise<void> {
    const campaign = this.campaign;
    if (gen !== this.generation || !campaign || !this.elected) return;
    const sentAt = Date.now();
    try {
      const key = await campaign.getCampaignKey();
      const lease = key.slice(key.lastIndexOf('/') + 1);
      const res = await this.client.leaseClient.leaseTimeToLive({ ID: lease }, { deadline: sentAt + this.checkEveryMs * 2 });
      if (gen !== this.generation) return;
      const ttl = Number(res.TTL);
      if (!(ttl > 0)) {
        this.retry(gen, 'the campaign lease is gone');
        return;
      }
      this.validUntil = Math.max(this.validUntil, sentAt + ttl * 1000);
      this.retryDelay = RETRY_MIN_MS;
      this.setLeading(true, 'elected');
      this.armLoss(gen);
    } catch (err) {
      if (gen !== this.generation) return;
      this.opts.logger.debug({ error: message(err) }, `checking the leader lease failed: ${message(err)}`);
    }
    if (gen === this.generation) {
      clearTimeout(this.checkTimer);
      this.checkTimer = unrefTimer(() => void this.check(gen), Math.max(0, sentAt + this.checkEveryMs - Date.now()));
    }
  }

  private armLoss(gen: number): void {
    clearTimeout(this.lossTimer);
    this.lossTimer = unrefTimer(() => {
      if (gen !== this.generation) return;
      if (Date.now() >= this.validUntil) this.retry(gen, `no answer from etcd for the leader lease (ttl ${this.opts.ttlSeconds}s)`);
      else this.armLoss(gen);
    }, this.validUntil - Date.now());
  }

  /** Abandons the campaign of `gen` (resigning it in the background) and campaigns again later. */
  private retry(gen: number, why: string): void {
    if (gen !== this.generation) return;
    const campaign = this.campaign;
    this.dropCampaign();
    this.setLeading(false, why);
    // The same failure with other details in its text ("…: 4 DEADLINE_EXCEEDED: Deadline exceeded
    // after 0.301s, …") is the same failure: compared up to its second colon.
    const kind = why.split(':').slice(0, 2).join(':');
    const log = kind === this.lastRetryWhy ? this.opts.logger.debug : this.opts.logger.warn;
    log.call(this.opts.logger, { election: this.opts.name, reason: why }, `leader election: ${why}; campaigning again`);
    this.lastRetryWhy = kind;
    campaign?.resign().catch(() => undefined);
    if (!this.running) return;
    const delay = this.retryDelay;
    this.retryDelay = Math.min(this.ttlMs, this.retryDelay * 2);
    clearTimeout(this.retryTimer);
    this.retryTimer = unrefTimer(() => {
      this.retryTimer = undefined;
      this.startCampaign();
    }, delay);
  }

  private dropCampaign(): void {
    this.generation++;
    this.campaign = undefined;
    this.elected = false;
    this.validUntil = 0;
    clearTimeout(this.checkTimer);
    clearTimeout(this.lossTimer);
    this.checkTimer = undefined;
    this.lossTimer = undefined;
  }

  private setLeading(leading: boolean, why: string): void {
    if (this.leading === leading) return;
    this.leading = leading;
    if (leading) this.lastRetryWhy = undefined;
    this.opts.logger.info(
      { election: this.opts.name, id: this.opts.id, leader: leading, reason: why },
      leading ? `${this.opts.id} leads ${this.opts.name}` : `${this.opts.id} no longer leads ${this.opts.name}: ${why}`,
    );
    for (const listener of [...this.listeners]) {
      try {
        listener(leading);
      } catch (err) {
        this.opts.logger.warn({ error: message(err) }, `a leadership listener failed: ${message(err)}`);
      }
    }
  }

  // --- observing who leads ---

  /**
   * Who leads is the value of the oldest key of the election (etcd3's `election.leader()`), read
   * again whenever a key of the election changes. (etcd3's ElectionObserver is not used: when
   * several candidates' keys arrive in one watch answer it takes the newest as the leader.)
   */
  private startObserving(): void {
    if (this.observing) return;
    this.observing = true;
    let reads = 0;
    const read = (): void => {
      const n = ++reads;
      this.election.leader().then(
        (value) => {
          if (n === reads && this.observing) this.current = value ?? null;
        },
        (err: unknown) => {
          if (n !== reads || !this.observing) return;
          this.opts.logger.debug({ error: message(err) }, `reading the leader failed: ${message(err)}`);
          clearTimeout(this.observeTimer);
          this.observeTimer = unrefTimer(read, RETRY_MIN_MS * 4);
        },
      );
    };
    const watcher = this.client.watch().prefix(`${Election.prefix}/${this.opts.name}/`).watcher();
    this.observer = watcher;
    watcher.on('connected', read);
    watcher.on('data', read);
    watcher.on('error', (err: Error) => {
      if (this.observer !== watcher) return;
      // The watch was cancelled by etcd (e.g. compacted): start over.
      this.observer = undefined;
      this.observing = false;
      this.opts.logger.debug({ error: message(err) }, `watching the leader election failed: ${message(err)}`);
      clearTimeout(this.observeTimer);
      this.observeTimer = unrefTimer(() => this.startObserving(), RETRY_MIN_MS * 4);
    });
    read();
  }
}
