/**
 * `GET /v1/shadow` (basic auth): in shadow mode, how hmgate's would-be requests compare with the
 * other health manager's — matched, only ours, only theirs — with the recent ones.
 */
import { Hono, type MiddlewareHandler } from 'hono';
import type { ShadowComparer } from '../../operator/shadow.js';

export function shadowRoutes(auth: MiddlewareHandler, comparer: () => ShadowComparer | undefined): Hono {
  const app = new Hono();
  app.get('/v1/shadow', auth, (c) => {
    const cmp = comparer();
    if (!cmp) return c.json({ error: 'no comparison: it runs only with dispatch.mode: shadow' }, 404);
    return c.json(cmp.summary());
  });
  return app;
}
