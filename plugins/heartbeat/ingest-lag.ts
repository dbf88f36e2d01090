/**
 * How far behind the heartbeat source is, on this daemon's own clock: the oldest heartbeat
 * received and not yet saved, and how long a probe message takes to come back through the bus
 * (it queues behind every heartbeat the bus holds for this daemon but the daemon has not read).
 * The engine's freshness guard reads it; a state this far behind is not fresh.
 */
import { randomBytes } from 'node:crypto';
import type { Bus, IngestLag } from '../../src/sdk/index.js';

export class HeartbeatIngestLag {
  /** When the oldest heartbeat of the batch waiting to be saved arrived. */
  private pendingSince: number | undefined;
  /** When the oldest heartbeat of the batch being saved arrived. */
  private savingSince: number | undefined;
  private readonly probeSubject = `_HMGATE.ingest-probe.${randomBytes(8).toString('hex')}`;
  /** The probe on its way, by the time it was sent. */
  private probeSentAt: number | undefined;
  /** How long the last probe took to come back. */
  private probeTookMs = 0;

  constructor(
    private readonly now: () => number,
    private readonly bus: Bus,
  ) {}

  /** A heartbeat joined the pending batch. */
  accepted(): void {
    this.pendingSince ??= this.now();
  }

  /** The pending batch is handed to the store. */
  saving(): void {
    this.savingSince = this.pendingSince;
    this.pendingSince = undefined;
  }

  /** The save ended (saved or failed: either way those heartbeats no longer wait). */
  saveEnded(): void {
    this.savingSince = undefined;
  }

  /** Listens for its own probes; returns what stops listening. */
  listen(): () => void {
    return this.bus.subscribe(this.probeSubject, () => {
      if (this.probeSentAt === undefined) return;
      this.probeTookMs = this.now() - this.probeSentAt;
      this.probeSentAt = undefined;
    });
  }

  /** Sends a probe unless one is on its way. */
  probe(): void {
    if (!this.bus.connected) {
      // A probe lost with the connection says nothing about ingest.
      this.probeSentAt = undefined;
      return;
    }
    if (this.probeSentAt !== undefined) return;
    try {
      // Set first: a bus may deliver before publish returns.
      this.probeSentAt = this.now();
      this.bus.publish(this.probeSubject, '');
    } catch {
      this.probeSentAt = undefined;
    }
  }

  /** The worse of the two lags, or null with none at all. */
  lag(): IngestLag | null {
    const now = this.now();
    const oldest = Math.min(this.savingSince ?? Infinity, this.pendingSince ?? Infinity);
    const unsaved = oldest === Infinity ? 0 : now - oldest;
    const probe = this.probeSentAt !== undefined && this.bus.connected ? Math.max(this.probeTookMs, now - this.probeSentAt) : this.probeTookMs;
    if (unsaved === 0 && probe === 0) return null;
    return unsaved >= probe
      ? { lagMs: unsaved, cause: `heartbeats received ${Math.round(unsaved / 1000)}s ago are not saved yet (the store is slow or unreachable)` }
      : { lagMs: probe, cause: `a message takes ${Math.round(probe / 1000)}s to come through the bus: heartbeats queue up unread` };
  }
}
