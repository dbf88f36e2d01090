/**
 * Who subscribes to a subject, asked of the NATS server's monitoring endpoint (bus.monitor_url) —
 * the one way to know that somebody listens to the start/stop subjects without publishing on them
 * (a probe there would be an order the Cloud Controller acts on).
 *
 * `/subsz?subs=1&test=<subject>` lists the subscriptions a message on the subject would reach,
 * wildcards included; a server that cannot answer that is asked `/connz?subs=1` and the subjects
 * are matched here.
 */
import { errorText } from '../log.js';
import { maskUrl } from '../config/mask.js';

/** NATS subject matching: `*` is one token, `>` the rest (at least one token). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== '*' && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

async function getJson(url: string, timeoutMs: number): Promise<unknown> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`HTTP ${res.status}`);
  return JSON.parse(text) as unknown;
}

function describe(err: unknown): string {
  const cause = (err as { cause?: { code?: string } })?.cause;
  if (cause?.code === 'ECONNREFUSED') return 'connection refused';
  if (cause?.code) return cause.code;
  if ((err as Error)?.name === 'TimeoutError') return 'no answer in time';
  return errorText(err);
}

export type SubscriberAnswer = { ok: true; subscribers: Map<string, number> } | { ok: false; error: string };

/**
 * How many subscriptions each subject reaches. Never rejects: an unreachable or unreadable
 * monitoring endpoint is `{ ok: false, error }`.
 */
export async function subscribersOf(monitorUrl: string, subjects: readonly string[], timeoutMs = 5000): Promise<SubscriberAnswer> {
  const base = monitorUrl.replace(/\/+$/, '');
  const counts = new Map<string, number>();
  try {
    for (const subject of subjects) {
      const doc = (await getJson(`${base}/subsz?subs=1&limit=1&test=${encodeURIComponent(subject)}`, timeoutMs)) as {
        num_subscriptions?: unknown;
        total?: unknown;
        subscriptions_list?: unknown[];
      };
      if (typeof doc.num_subscriptions !== 'number') throw new Error('not a NATS /subsz answer');
      counts.set(subject, typeof doc.total === 'number' ? doc.total : (doc.subscriptions_list?.length ?? 0));
    }
    return { ok: true, subscribers: counts };
  } catch (first) {
    // Older servers: list every connection's subscriptions and match them here.
    try {
      counts.clear();
      for (const s of subjects) counts.set(s, 0);
      let offset = 0;
      for (;;) {
        const doc = (await getJson(`${base}/connz?subs=1&offset=${offset}&limit=1024`, timeoutMs)) as {
          total?: number;
          connections?: { subscriptions_list?: string[] }[];
        };
        if (!Array.isArray(doc.connections)) throw first;
        for (const c of doc.connections) {
          for (const pattern of c.subscriptions_list ?? []) for (const s of subjects) if (subjectMatches(pattern, s)) counts.set(s, counts.get(s)! + 1);
        }
        offset += doc.connections.length;
        if (doc.connections.length === 0 || offset >= (doc.total ?? 0)) break;
      }
      return { ok: true, subscribers: counts };
    } catch (err) {
      return { ok: false, error: `${maskUrl(base)}: ${describe(err)}` };
    }
  }
}
