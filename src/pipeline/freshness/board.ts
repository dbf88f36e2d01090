/**
 * The freshness board: the reasons sources report for a marker that is missing, with when each
 * began, and the guards (ingest lag, agents lost together, a new leader's reset) that hold actual
 * freshness back while the marker would call it fresh. Combined with the store's markers it gives
 * the verdicts the gate, /v1/status, the logs and `doctor` show in words.
 */
import {
  freshnessError,
  isActualFresh,
  isDesiredFresh,
  type FreshnessReports,
  type FreshnessVerdict,
  type IngestLag,
  type LagProbe,
} from '../../sdk/freshness.js';
import type { FreshnessKind, FreshnessMarker } from '../../sdk/state.js';
import type { Config } from '../../config/schema.js';
import type { Clock } from '../../sdk/clock.js';
import { counted } from '../../sdk/summary.js';
import { CollapseGuard, type CollapseOptions, type CollapseState } from './collapse-guard.js';
import { IngestLagMeter } from './ingest-lag.js';

/** Both verdicts at one moment, and the gate's error text (null when both are fresh). */
export interface FreshnessAssessment {
  actual: FreshnessVerdict;
  desired: FreshnessVerdict;
  error: string | null;
}

/** The guards that hold actual freshness back while the marker would call it fresh. */
export interface GuardOptions {
  /** The clock the guards measure on (finer than the board's, which may step in whole seconds). */
  now?: () => number;
  /** The agents' heartbeat interval. */
  intervalMs: number;
  /** freshness.max_ingest_lag. */
  maxIngestLagMs: number;
  /** freshness.collapse, with the span an agent may stay unheard before it counts as silent. */
  collapse: CollapseOptions;
}

/** A guard that holds: actual state is not fresh while it does, whatever the marker says. */
export type Hold =
  | { code: 'INGEST_BEHIND'; since: number; reason: string; lag: IngestLag; maxLagMs: number }
  | { code: 'ACTUAL_COLLAPSE'; since: number; reason: string; collapse: CollapseState };

export type HoldCode = Hold['code'];

/** A guard that began or ended holding at the last evaluation. */
export interface HoldChange {
  hold: Hold;
  held: boolean;
}

const seconds = (ms: number) => `${Number((ms / 1000).toFixed(1))}s`;

/**
 * The reasons sources report, with when each began, and the guards that hold actual freshness
 * back. The engine combines them with the store's markers into the verdicts shown in /v1/status.
 */
export class FreshnessBoard implements FreshnessReports {
  private readonly reasons = new Map<FreshnessKind, { reason: string; since: number }>();
  private readonly collapse: CollapseGuard | undefined;
  private readonly ingest: IngestLagMeter | undefined;
  private readonly holding = new Map<HoldCode, Hold>();
  private readonly guardNow: () => number;
  private suspended: { reason: string; since: number } | undefined;

  constructor(
    private readonly now: () => number,
    /** The configured TTLs (freshness.actual_ttl / desired_ttl), for the sources that bump. */
    readonly actualTtlMs: number,
    readonly desiredTtlMs: number,
    guards?: GuardOptions,
  ) {
    this.guardNow = guards?.now ?? now;
    if (guards) {
      this.collapse = new CollapseGuard(guards.collapse);
      this.ingest = new IngestLagMeter({
        intervalMs: guards.intervalMs,
        maxLagMs: guards.maxIngestLagMs,
        windowMs: guards.collapse.windowMs,
        silentAfterMs: guards.collapse.silentAfterMs,
      });
    }
  }

  /** A heartbeat of `agent` arrived (sources call this for every agent message they accept). */
  heard(agent: string): void {
    if (!this.collapse) return;
    const now = this.guardNow();
    this.ingest!.arrival(now, this.collapse.heard(agent, now));
  }

  /** A source's own measure of how far behind it is (unsaved heartbeats, bus delay). */
  registerLag(name: string, probe: LagProbe): () => void {
    return this.ingest?.register(name, probe) ?? (() => undefined);
  }

  /** Re-evaluates the guards; returns those that began or ended holding. */
  evaluateGuards(): HoldChange[] {
    if (!this.collapse) return [];
    const now = this.guardNow();
    const changes: HoldChange[] = [];
    const set = (code: HoldCode, next: Hold | null): void => {
      const before = this.holding.get(code);
      if (next === null) {
        if (before) {
          this.holding.delete(code);
          changes.push({ hold: before, held: false });
        }
        return;
      }
      const hold = { ...next, since: before?.since ?? next.since } as Hold;
      this.holding.set(code, hold);
      if (!before) changes.push({ hold, held: true });
    };
    const lag = this.ingest!.evaluate(now);
    const maxLagMs = this.ingest!.maxLagMs;
    set(
      'INGEST_BEHIND',
      lag && {
        code: 'INGEST_BEHIND',
        since: now,
        lag,
        maxLagMs,
        reason: `ingest is ${seconds(lag.lagMs)} behind (more than freshness.max_ingest_lag, ${seconds(maxLagMs)}): ${lag.cause}`,
      },
    );
    const c = this.collapse.evaluate(now);
    set(
      'ACTUAL_COLLAPSE',
      c && {
        code: 'ACTUAL_COLLAPSE',
        since: c.since,
        collapse: c,
        reason: `${c.silent} of ${counted(c.total, 'agent')} went silent within ${seconds(c.windowMs)}: not acting on their instances until they return or an operator confirms the loss`,
      },
    );
    return changes;
  }

  /** How far behind ingest is now, in ms (0 without guards or any sign of lag), for the metrics. */
  ingestLagMs(): number {
    return this.ingest?.measure(this.guardNow())?.lagMs ?? 0;
  }

  /** Actual state is not fresh, whatever the marker says, until resumeActual (a new leader resetting it). */
  suspendActual(reason: string): void {
    this.suspended ??= { reason, since: this.now() };
  }

  resumeActual(): void {
    this.suspended = undefined;
  }

  /** Whether actual freshness is suspended or held by a guard: no marker makes it fresh then. */
  actualHeld(): boolean {
    return this.suspended !== undefined || this.holding.size > 0;
  }

  /** The guards that hold now. */
  holds(): Hold[] {
    return [...this.holding.values()];
  }

  /** The operator confirms that the silent agents are gone: returns how many were forgotten. */
  confirmLoss(): number {
    const n = this.collapse?.confirm() ?? 0;
    this.holding.delete('ACTUAL_COLLAPSE');
    return n;
  }

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

  /** Both verdicts and HM9000's combined error text, from the store's markers: the one place they are computed. */
  assess(markers: { actual?: FreshnessMarker; desired?: FreshnessMarker }, now: number): FreshnessAssessment {
    const actual = this.verdict('actual', markers.actual, now, this.actualTtlMs);
    const desired = this.verdict('desired', markers.desired, now, this.actualTtlMs);
    return { actual, desired, error: freshnessError(actual.fresh, desired.fresh) };
  }

  verdict(which: FreshnessKind, marker: FreshnessMarker | undefined, now: number, actualTtlMs: number): FreshnessVerdict {
    // A guard's reason comes first: it says why a marker that looks fresh is not to be trusted.
    const hold = which === 'actual' ? (this.suspended ?? this.holds()[0]) : undefined;
    if (hold) return { fresh: false, since: hold.since, reason: hold.reason };
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

/** The daemon's board, as freshness: in the config sets it; the guards measure on the clock below the time_resolution step. */
export function freshnessBoard(f: Config['freshness'], heartbeatMs: number, clock: Clock, precise: Clock): FreshnessBoard {
  return new FreshnessBoard(() => clock.now(), f.actual_ttl, f.desired_ttl, {
    now: () => precise.now(),
    intervalMs: heartbeatMs,
    maxIngestLagMs: f.max_ingest_lag,
    collapse: { share: f.collapse.share, minAgents: f.collapse.min_agents, silentAfterMs: f.collapse.silent_after, windowMs: f.collapse.window },
  });
}
