/** Basic auth for the API. A wrong or missing credential gets 401 and nothing else. */
import { basicAuth } from 'hono/basic-auth';
import type { MiddlewareHandler } from 'hono';

// HM9000's API answers 401 with this realm; hmgate uses it on every protected route.
export const REALM = 'API Authentication';

export function requireBasicAuth(user: string, password: string): MiddlewareHandler {
  // A function, because hono takes an empty string as "use the default body".
  return basicAuth({ username: user, password, realm: REALM, invalidUserMessage: () => '' });
}
