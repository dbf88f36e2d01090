import { Hono } from 'hono';
import type { MiddlewareHandler } from 'hono';

export type ConfirmLoss = () => { ok: true; confirmed: number } | { ok: false; error: string };

/**
 * POST /v1/actual/confirm-loss: the operator's word that the agents that went silent together
 * (ACTUAL_COLLAPSE) are gone, so their instances may be started elsewhere. 409 on a daemon that
 * does not lead, naming the one that does.
 */
export function confirmLossRoutes(auth: MiddlewareHandler, confirm: ConfirmLoss): Hono {
  return new Hono().post('/v1/actual/confirm-loss', auth, (c) => {
    const r = confirm();
    return r.ok ? c.json({ confirmed: r.confirmed }) : c.json({ error: r.error }, 409);
  });
}
