import { Hono, type MiddlewareHandler } from 'hono';

/** What /varz shows: a stage's statistics hash (the reporter plugin's varz()). */
export type VarzSource = () => Record<string, unknown> | Promise<Record<string, unknown>>;

/** A stage that keeps a varz hash (structural, so the engine needs no plugin by name). */
export function hasVarz(stage: object): stage is { varz(): Record<string, unknown> } {
  return typeof (stage as { varz?: unknown }).varz === 'function';
}

/**
 * GET /varz: the Ruby Health Manager's statistics as JSON, for the foundation's collector and
 * dashboards that read its component /varz; basic auth like /v1/status (it had basic auth too).
 */
export function varzRoutes(auth: MiddlewareHandler, varz: VarzSource): Hono {
  return new Hono().get('/varz', auth, async (c) => c.json(await varz()));
}
