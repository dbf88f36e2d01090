/**
 * Freshness, the main safety rule: nothing is sent unless the actual state is fresh (its marker
 * exists and its unbroken streak is at least the freshness window old) and the desired state is
 * fresh (its marker exists). The rules are pure; stages report to the engine, through
 * `ctx.freshness`, why a marker is missing and how far behind their ingest is.
 */
import type { FreshnessKind, FreshnessMarker } from './state.js';

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

/** HM9000's combined error texts (docs/hm9000.md#error-texts), or null when both are fresh. */
export function freshnessError(actualFresh: boolean, desiredFresh: boolean): string | null {
  if (!actualFresh && !desiredFresh) return 'Actual and desired state are not fresh';
  if (!desiredFresh) return 'Desired state is not fresh';
  if (!actualFresh) return 'Actual state is not fresh';
  return null;
}

export interface IngestLag {
  lagMs: number;
  /** What the lag was measured on, in words. */
  cause: string;
}

/** A source's own measure of its lag, in ms, with what it measured; null when it has none. */
export type LagProbe = () => IngestLag | null;

/** What a stage reports about freshness (`ctx.freshness`). */
export interface FreshnessReports {
  /** The configured TTLs (freshness.actual_ttl / desired_ttl), for the sources that bump. */
  readonly actualTtlMs: number;
  readonly desiredTtlMs: number;
  /** A heartbeat of `agent` arrived (sources call this for every agent message they accept). */
  heard(agent: string): void;
  /** A source's own measure of how far behind it is (unsaved heartbeats, bus delay); returns what removes it. */
  registerLag(name: string, probe: LagProbe): () => void;
  /** Record why `which` is (or will go) stale; null clears it. Returns true when it changed. */
  setReason(which: FreshnessKind, reason: string | null): boolean;
  reason(which: FreshnessKind): { reason: string; since: number } | undefined;
}
