/**
 * Basic auth for the API. A wrong or missing credential gets 401 with HM9000's header and nothing
 * else: no body, no content type (HM9000's handler only wrote the status).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { BARE_RESPONSE_HEADER } from './server.js';

// HM9000's API answers 401 with this realm; hmgate uses it on every protected route.
export const REALM = 'API Authentication';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export function requireBasicAuth(user: string, password: string): MiddlewareHandler {
  // Compared as digests, in constant time, so neither length nor content leaks through timing.
  const expected = digest(`${user}:${password}`);
  return async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const m = /^Basic ([A-Za-z0-9+/=]+)$/i.exec(header.trim());
    const given = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
    if (m && timingSafeEqual(digest(given), expected)) return next();
    return new Response('', { status: 401, headers: { 'WWW-Authenticate': `Basic realm="${REALM}"`, [BARE_RESPONSE_HEADER]: '1' } });
  };
}
