/**
 * What the daemon holds, for operators and tools (basic auth like /v1/status):
 *
 * - `GET /v1/dump`: HM9000's structured dump as data (hmgate dump reads it);
 * - `GET /v1/apps?page=&per_page=`: every app (desired or heartbeating), sorted by guid and version:
 *   desired, instances, crash counts, pending messages;
 * - `GET /v1/apps/:guid`: the same for each version of one app, with its recent decisions (and its
 *   record, with the Ruby HM presets);
 * - `GET /v1/decisions?since=&limit=&app=`: the decision audit.
 */
import { Hono, type MiddlewareHandler } from 'hono';
import { buildAppViews } from '../../sdk/app-view.js';
import type { DecisionAudit } from '../../operator/audit.js';
import type { StoreSnapshot } from '../../sdk/state.js';
import { dumpApp, dumpApps, pendingByApp, type DumpDoc } from '../../dump/build.js';
import { dropletJson } from '../../messages/droplet-json.js';
import type { Droplet } from '../../sdk/droplets.js';

export interface InspectDeps {
  dump(): Promise<DumpDoc>;
  snapshot(): Promise<StoreSnapshot>;
  /** The daemon's clock. */
  now(): number;
  audit: DecisionAudit;
  /** The per-app records of event policies (Ruby HM presets), shown with one app. */
  records?: { peek(guid: string): Droplet | undefined };
}

export const DEFAULT_PER_PAGE = 100;
export const MAX_PER_PAGE = 1000;
export const DEFAULT_DECISIONS_LIMIT = 100;
/** Decisions shown with one app. */
export const APP_DECISIONS = 50;

type Parsed = { ok: true; value: number | undefined } | { ok: false; error: string };

function positiveInt(raw: string | undefined, name: string, max: number): Parsed {
  if (raw === undefined || raw === '') return { ok: true, value: undefined };
  if (!/^\d+$/.test(raw) || Number(raw) < 1) return { ok: false, error: `${name} must be a whole number from 1, not ${JSON.stringify(raw)}` };
  const n = Number(raw);
  if (n > max) return { ok: false, error: `${name} must be at most ${max}` };
  return { ok: true, value: n };
}

/** `since`: milliseconds since the epoch, or an ISO 8601 time. */
export function parseSince(raw: string | undefined): Parsed {
  if (raw === undefined || raw === '') return { ok: true, value: undefined };
  if (/^\d+$/.test(raw)) return { ok: true, value: Number(raw) };
  const t = Date.parse(raw);
  if (Number.isNaN(t)) return { ok: false, error: `since must be an ISO 8601 time or milliseconds since the epoch, not ${JSON.stringify(raw)}` };
  return { ok: true, value: t };
}

export function inspectRoutes(auth: MiddlewareHandler, deps: InspectDeps): Hono {
  const app = new Hono();

  app.get('/v1/dump', auth, async (c) => c.json(await deps.dump()));

  app.get('/v1/apps', auth, async (c) => {
    const page = positiveInt(c.req.query('page'), 'page', Number.MAX_SAFE_INTEGER);
    const perPage = positiveInt(c.req.query('per_page'), 'per_page', MAX_PER_PAGE);
    for (const p of [page, perPage]) if (!p.ok) return c.json({ error: p.error }, 400);
    const pageNo = (page.ok && page.value) || 1;
    const size = (perPage.ok && perPage.value) || DEFAULT_PER_PAGE;
    const all = dumpApps(await deps.snapshot(), deps.now());
    return c.json({ page: pageNo, per_page: size, total: all.length, apps: all.slice((pageNo - 1) * size, pageNo * size) });
  });

  app.get('/v1/apps/:guid', auth, async (c) => {
    const guid = c.req.param('guid');
    const snapshot = await deps.snapshot();
    const prefix = `${guid},`;
    const keys = new Set<string>();
    for (const k of snapshot.desired.keys()) if (k.startsWith(prefix)) keys.add(k);
    for (const k of snapshot.instances.keys()) if (k.startsWith(prefix)) keys.add(k);
    const views = [...buildAppViews(snapshot, keys).values()].sort((a, b) => (a.key < b.key ? -1 : 1));
    const decisions = deps.audit.list({ app: guid, limit: APP_DECISIONS });
    const record = deps.records?.peek(guid);
    if (views.length === 0 && decisions.length === 0 && !record)
      return c.json({ error: `no app ${guid} is desired, heartbeating or in the recent decisions` }, 404);
    const now = deps.now();
    const { starts, stops } = pendingByApp(snapshot);
    const versions = views.map((v) => dumpApp(v, starts.get(v.key) ?? [], stops.get(v.key) ?? [], now));
    return c.json({ guid, versions, ...(record ? { record: JSON.parse(dropletJson(record)) as unknown } : {}), decisions });
  });

  app.get('/v1/decisions', auth, (c) => {
    const since = parseSince(c.req.query('since'));
    const limit = positiveInt(c.req.query('limit'), 'limit', deps.audit.capacity);
    for (const p of [since, limit]) if (!p.ok) return c.json({ error: p.error }, 400);
    const appGuid = c.req.query('app');
    const decisions = deps.audit.list({
      since: since.ok ? since.value : undefined,
      limit: (limit.ok && limit.value) || DEFAULT_DECISIONS_LIMIT,
      ...(appGuid ? { app: appGuid } : {}),
    });
    return c.json({ count: decisions.length, decisions });
  });

  return app;
}
