import { Hono } from 'hono';
import type { Registry } from 'prom-client';

/** GET /metrics: Prometheus text, no auth (scrapers), like HM9000's metrics were unauthenticated. */
export function metricsRoutes(registry: Registry, beforeScrape?: () => Promise<void>): Hono {
  return new Hono().get('/metrics', async (c) => {
    await beforeScrape?.();
    const body = await registry.metrics();
    return c.body(body, 200, { 'Content-Type': registry.contentType });
  });
}
