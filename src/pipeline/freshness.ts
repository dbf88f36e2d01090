/**
 * Freshness, the main safety rule (HM9000 §5): nothing is sent unless the actual state is fresh
 * (the marker exists and its unbroken streak is at least `actualTtlMs` old) and the desired state is
 * fresh (the marker exists). Sources record here why a marker is missing, so the status API, the
 * logs and `doctor` can say it in words.
 */
import type { FreshnessKind, FreshnessMarker } from './store.js';

export interface FreshnessVerdict {
  fresh: boolean;
  /** Start of the current fresh streak (marker timestamp) or of the current stale period. */
  since: number | null;
  reason: string | null;
}

export function isActualFresh(marker: FreshnessMarker | undefined, now: number, actualTtlMs: number): boolean {
  return marker !== undefined && marker.expiresAt > now && now - marker.timestamp >= actualTtlMs;
}

export function isDesiredFresh(marker: FreshnessMarker | undefined, now: number): boolean {
  return marker !== undefined && marker.expiresAt > now;
}

/** HM9000's combined error texts (§5.4), or null when both are fresh. */
export function freshnessError(actualFresh: boolean, desiredFresh: boolean): string | null {
  if (!actualFresh && !desiredFresh) return 'Actual and desired state are not fresh';
  if (!desiredFresh) return 'Desired state is not fresh';
  if (!actualFresh) return 'Actual state is not fresh';
  return null;
}

/**
 * The reasons sources report, with when each began. The engine combines them with the store's
 * markers into the verdicts shown in /v1/status.
 */
export class FreshnessBoard {
  private readonly reasons = new Map<FreshnessKind, { reason: string; since: number }>();

  constructor(
    private readonly now: () => number,
    /** The configured TTLs (freshness.actual_ttl / desired_ttl), for the sources that bump. */
    readonly actualTtlMs: number,
    readonly desiredTtlMs: number,
  ) {}

  /** Record why `which` is (or will go) stale; null clears it. Returns true when it changed. */
  setReason(which: FreshnessKind, reason: string | null): boolean {
    const current = this.reasons.get(which);
    if (reason === null) {
      return this.reasons.delete(which);
    }
    if (current?.reason === reason) return false;
    this.reasons.set(which, { reason, since: current?.since ?? this.now() });
    return true;
  }

  reason(which: FreshnessKind): { reason: string; since: number } | undefined {
    return this.reasons.get(which);
  }

  verdict(which: FreshnessKind, marker: FreshnessMarker | undefined, now: number, actualTtlMs: number): FreshnessVerdict {
    const fresh = which === 'actual' ? isActualFresh(marker, now, actualTtlMs) : isDesiredFresh(marker, now);
    const reported = this.reasons.get(which);
    // A source's reason shows while the marker still holds too: "fresh, but the last fetch failed".
    if (fresh) return { fresh, since: marker!.timestamp, reason: reported?.reason ?? null };
    let reason = reported?.reason ?? null;
    if (reason === null) {
      if (marker === undefined || marker.expiresAt <= now) {
        reason = which === 'actual' ? 'no heartbeats saved yet or within the freshness TTL' : 'no complete desired-state fetch yet or within its TTL';
      } else {
        const waitS = Math.ceil((marker.timestamp + actualTtlMs - now) / 1000);
        reason = `heartbeats flowing for less than the freshness window (fresh in ${waitS}s)`;
      }
    }
    return { fresh, since: reported?.since ?? marker?.timestamp ?? null, reason };
  }
}
