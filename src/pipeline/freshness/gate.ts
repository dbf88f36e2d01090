/**
 * The freshness gate as the engine applies it: re-evaluates the guards (logging each change once),
 * judges each cycle's markers (logging each change of verdict once and counting the cycles it holds
 * back), and remembers the last verdicts for the event path and the metrics.
 */
import type { Counter } from 'prom-client';
import type { Logger } from 'pino';
import type { Leadership } from '../../sdk/leadership.js';
import type { FreshnessMarker } from '../../sdk/state.js';
import { counted } from '../../sdk/summary.js';
import type { FreshnessAssessment, FreshnessBoard, Hold } from './board.js';

export type ConfirmLossAnswer = { ok: true; confirmed: number } | { ok: false; error: string };

type Markers = { actual?: FreshnessMarker; desired?: FreshnessMarker };

export interface FreshnessGateOptions {
  /** freshness.gate: with it off (the Ruby presets) stale state holds nothing back; the guards still do. */
  on: boolean;
  board: FreshnessBoard;
  logger: Logger;
  now(): number;
  /** Counts the cycles held back (hmgate_cycles_not_fresh_total). */
  heldBack: Counter;
  /** A guard began (held) or ended: what was decided on the state it distrusts is to be dropped. */
  onGuardChange(hold: Hold, held: boolean): void;
}

export class FreshnessGate {
  private lastError: string | null = null;
  private desiredFresh = false;

  constructor(private readonly o: FreshnessGateOptions) {}

  /** Why the gate held the last cycle back; null when it let it through. */
  get error(): string | null {
    return this.lastError;
  }

  /** Whether desired state was fresh at the last cycle (for event paths whose sources do not say). */
  get desiredWasFresh(): boolean {
    return this.desiredFresh;
  }

  /** Whether the event path may act: the gate (when on) let the last cycle through, and no guard holds. */
  mayAct(): boolean {
    // With the gate off nothing is judged, so lastError stays null.
    return this.lastError === null && !this.o.board.actualHeld();
  }

  /** Whether a cycle judged by these verdicts sends nothing. */
  holdsBack(assessment: FreshnessAssessment): boolean {
    return this.o.on && assessment.error !== null;
  }

  /** Re-evaluates the freshness guards (ingest lag, mass disappearance); logs each change once. */
  checkGuards(): void {
    for (const { hold, held } of this.o.board.evaluateGuards()) {
      if (held) this.o.logger.warn({ guard: hold.code }, `actual state is not fresh: ${hold.reason}`);
      else
        this.o.logger.info(
          { guard: hold.code, lasted_ms: this.o.now() - hold.since },
          `${hold.code === 'INGEST_BEHIND' ? 'ingest caught up' : 'the silent agents are back'}: ${hold.code} cleared`,
        );
      this.o.onGuardChange(hold, held);
    }
  }

  /**
   * The operator's word that the agents lost together are gone: their instances count as missing
   * from now on. Only the leader acts on it; a standby says who leads.
   */
  confirmLoss(leadership: Leadership): ConfirmLossAnswer {
    if (!leadership.isLeader) {
      const id = leadership.leaderId();
      return { ok: false, error: `this daemon does not lead${id ? `; ${id} does: send it there` : ' and no leader is known'}` };
    }
    this.checkGuards();
    const confirmed = this.o.board.confirmLoss();
    this.o.logger.warn(
      { agents: confirmed },
      confirmed > 0
        ? `an operator confirmed the loss of ${counted(confirmed, 'silent agent')}: their instances count as missing now`
        : 'an operator confirmed a loss, but no collapse holds',
    );
    return { ok: true, confirmed };
  }

  /** Notes the cycle's markers; with the gate on, judges them. Returns the verdicts, computed once. */
  observe(markers: Markers, now: number): FreshnessAssessment {
    const assessment = this.o.board.assess(markers, now);
    this.desiredFresh = assessment.desired.fresh;
    if (this.o.on) this.judge(assessment);
    return assessment;
  }

  private judge({ actual, desired, error }: FreshnessAssessment): void {
    if (error !== this.lastError) {
      if (error) this.o.logger.warn({ actual: actual.reason, desired: desired.reason }, `${error}: sending nothing`);
      else this.o.logger.info('actual and desired state are fresh');
      this.lastError = error;
    }
    if (error) this.o.heldBack.inc();
  }
}
