import { Hono } from 'hono';

/** Liveness: answers while the process runs, without auth, for supervisors and load balancers. */
export function healthRoutes(): Hono {
  return new Hono().get('/healthz', (c) => c.json({ status: 'ok' }));
}
