/**
 * Which daemon leads: only the leader decides and sends; every daemon may keep listening and saving
 * state. A store that shares state between daemons offers an election (the `LeaderElector`
 * capability); without one this daemon alone leads.
 */
/** The part of a pino logger an election uses. */
export interface LeaderLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

export interface Leadership {
  /** Begins campaigning in the background. */
  start(): void;
  /** Whether this daemon leads now. Re-read it right before acting. */
  readonly isLeader: boolean;
  /** The id of the current leader as last observed, null if none (or not known yet). */
  leaderId(): string | null;
  /** Called with true on winning and false on losing or resigning leadership. */
  onChange(listener: (isLeader: boolean) => void): () => void;
  /** Gives leadership up at once (SIGTERM): isLeader is false when this returns. */
  resign(): Promise<void>;
  /** Resigns and stops observing. */
  stop(): Promise<void>;
  /**
   * Whether this daemon may lead (it can do the leader's work itself: see leader-fitness.ts).
   * While not eligible it does not campaign, and a leader resigns at once; once eligible again it
   * campaigns. Eligible until told otherwise.
   */
  setEligible(eligible: boolean, why?: string | null): void;
  /** Whether this daemon leads or campaigns to; if not (and it runs), why. */
  candidacy(): Candidacy;
}

export interface Candidacy {
  candidate: boolean;
  /** Why this daemon stays out of the election; null while it is a candidate. */
  why: string | null;
}

/** What the engine asks of a store's election. */
export interface LeaderElectionRequest {
  /** This daemon's id, as the others see it in leaderId(). */
  id: string;
  /** TTL of the candidates' leases: how long a leader that vanished keeps the others waiting. */
  ttlSeconds: number;
  logger: LeaderLogger;
}

/** Adds a listener (the same function may be added twice); returns what removes that one. */
export function addListener<T>(set: Set<(v: T) => void>, listener: (v: T) => void): () => void {
  const wrapped = (v: T): void => listener(v);
  set.add(wrapped);
  return () => {
    set.delete(wrapped);
  };
}
