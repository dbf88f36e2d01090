import { Hono } from 'hono';
import type { MiddlewareHandler } from 'hono';

export interface FreshnessStatus {
  fresh: boolean;
  since: string | null;
  reason: string | null;
}

export interface StatusBody {
  foundation: string;
  leader: boolean;
  actual: FreshnessStatus;
  desired: FreshnessStatus;
  stages: Record<string, { kind: string; plugin: string; healthy: boolean; last_error: string | null }>;
  counters: Record<string, number>;
}

/** GET /v1/status: what an operator asks first — is it fresh, who leads, which stage is unwell. */
export function statusRoutes(auth: MiddlewareHandler, status: () => Promise<StatusBody>): Hono {
  return new Hono().get('/v1/status', auth, async (c) => c.json(await status()));
}
