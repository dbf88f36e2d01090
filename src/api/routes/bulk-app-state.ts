import { Hono } from 'hono';
import type { MiddlewareHandler } from 'hono';
import type { Logger } from 'pino';
import { errorText } from '../../log.js';
import { appViewLookup, bulkAppStateBody, decodeRequestBody, EMPTY_APP_STATE, parseBulkAppStateRequest, type FloatFormat } from '../../messages/app-json.js';
import type { StoreSnapshot } from '../../sdk/state.js';

export interface BulkAppStateDeps {
  snapshot(): Promise<StoreSnapshot>;
  /** Both actual and desired state fresh (HM9000 B's VerifyFreshness). */
  fresh(): Promise<boolean>;
  /** Where refused requests are logged (HM9000 logged each as "Failed to handle bulk_app_state request"). */
  logger?: Logger;
  floatFormat?: FloatFormat;
}

/** HM9000 set no Content-Type; Go sniffed this one from the JSON body. */
const CONTENT_TYPE = 'text/plain; charset=utf-8';

/**
 * POST /bulk_app_state (docs/hm9000.md#app-state-over-http): the App JSON of each requested app, keyed by guid. Always
 * 200 once authenticated; `{}` for a body that is not the request array, for stale state and for
 * any error — the caller never sees an error status or an error text.
 */
export function bulkAppStateRoutes(auth: MiddlewareHandler, deps: BulkAppStateDeps): Hono {
  return new Hono().post('/bulk_app_state', auth, async (c) => {
    let body = EMPTY_APP_STATE;
    try {
      const text = decodeRequestBody(new Uint8Array(await c.req.arrayBuffer()));
      const parsed = parseBulkAppStateRequest(text);
      if (!parsed.ok) {
        deps.logger?.warn({ reason: parsed.reason, detail: parsed.detail }, `Failed to handle bulk_app_state request: ${parsed.detail}`);
      } else if (!(await deps.fresh())) {
        deps.logger?.debug({ requested: parsed.value.length }, 'Failed to handle bulk_app_state request: state is not fresh');
      } else {
        body = bulkAppStateBody(appViewLookup(await deps.snapshot()), parsed.value, { floatFormat: deps.floatFormat });
      }
    } catch (err) {
      body = EMPTY_APP_STATE;
      deps.logger?.error({ error: errorText(err) }, `Failed to handle bulk_app_state request: ${errorText(err)}`);
    }
    return c.body(body, 200, { 'Content-Type': CONTENT_TYPE });
  });
}
