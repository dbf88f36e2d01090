import { Hono } from 'hono';
import type { MiddlewareHandler } from 'hono';
import type { ProblemEntry } from '../../operator/problems.js';

export interface FreshnessStatus {
  fresh: boolean;
  since: string | null;
  reason: string | null;
}

export interface StatusBody {
  foundation: string;
  leader: boolean;
  /** Who leads, as last observed (host:pid); null while nobody does. */
  leader_id: string | null;
  /** Whether this daemon leads or campaigns to (a daemon that cannot do the leader's work stays out). */
  candidate: boolean;
  /** Why this daemon stays out of the leader election (e.g. not connected to NATS); null while a candidate. */
  not_candidate_because: string | null;
  actual: FreshnessStatus;
  desired: FreshnessStatus;
  stages: Record<string, { kind: string; plugin: string; healthy: boolean; last_error: string | null }>;
  counters: Record<string, number>;
  /**
   * What is wrong now, each with a stable code, a sentence, the fix, and since when it holds
   * (codes and words from src/sdk/problems.ts, shared with `hmgate doctor`).
   */
  problems: ProblemEntry[];
}

/** GET /v1/status: what an operator asks first — is it fresh, who leads, which stage is unwell, what to fix. */
export function statusRoutes(auth: MiddlewareHandler, status: () => Promise<StatusBody>): Hono {
  return new Hono().get('/v1/status', auth, async (c) => c.json(await status()));
}
