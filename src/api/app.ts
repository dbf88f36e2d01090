/**
 * The HTTP API as a Hono app, routes grouped per concern. Built without a socket so tests drive it
 * with app.request(); src/api/server.ts puts it on `api.listen`.
 */
import { Hono } from 'hono';
import type { Registry } from 'prom-client';
import type { Logger } from 'pino';
import { errorText } from '../log.js';
import { requireBasicAuth } from './auth.js';
import { healthRoutes } from './routes/health.js';
import { metricsRoutes } from './routes/metrics.js';
import { statusRoutes, type StatusBody } from './routes/status.js';
import { bulkAppStateRoutes, type BulkAppStateDeps } from './routes/bulk-app-state.js';
import { inspectRoutes, type InspectDeps } from './routes/inspect.js';
import { shadowRoutes } from './routes/shadow.js';
import { varzRoutes, type VarzSource } from './routes/varz.js';
import { confirmLossRoutes, type ConfirmLoss } from './routes/confirm-loss.js';
import type { ShadowComparer } from '../operator/shadow.js';

export interface ApiDeps {
  user: string;
  password: string;
  status: () => Promise<StatusBody>;
  metrics: Registry;
  /** Called before each scrape, to compute metrics that are cheaper to compute on demand. */
  beforeMetrics?: () => Promise<void>;
  /** HM9000's POST /bulk_app_state. */
  appState?: BulkAppStateDeps;
  /** /v1/dump, /v1/apps, /v1/apps/:guid, /v1/decisions. */
  inspect?: InspectDeps;
  /** GET /v1/shadow: the comparison with the other health manager, in shadow mode. */
  shadow?: () => ShadowComparer | undefined;
  /** GET /varz: the Ruby HM's statistics, when a stage keeps them. */
  varz?: VarzSource;
  /** POST /v1/actual/confirm-loss: the operator confirms that agents lost together are gone. */
  confirmLoss?: ConfirmLoss;
  logger: Logger;
}

export function buildApi(deps: ApiDeps): Hono {
  const auth = requireBasicAuth(deps.user, deps.password);
  const app = new Hono();
  app.route('/', healthRoutes());
  app.route('/', statusRoutes(auth, deps.status));
  app.route('/', metricsRoutes(deps.metrics, deps.beforeMetrics));
  if (deps.appState) app.route('/', bulkAppStateRoutes(auth, deps.appState));
  if (deps.inspect) app.route('/', inspectRoutes(auth, deps.inspect));
  if (deps.shadow) app.route('/', shadowRoutes(auth, deps.shadow));
  if (deps.varz) app.route('/', varzRoutes(auth, deps.varz));
  if (deps.confirmLoss) app.route('/', confirmLossRoutes(auth, deps.confirmLoss));
  app.notFound((c) => c.json({ error: 'not found' }, 404));
  // The one place an error becomes a response: logged with the route, answered without internals.
  app.onError((err, c) => {
    if ('getResponse' in err && typeof err.getResponse === 'function') return err.getResponse() as Response;
    deps.logger.error({ method: c.req.method, path: c.req.path, error: errorText(err) }, 'API request failed');
    return c.json({ error: 'internal error' }, 500);
  });
  return app;
}
