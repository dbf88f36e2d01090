/**
 * Secrets never reach the screen or the logs: values of keys named password, secret, token or
 * *_key, and the credentials inside any URL, wherever a string holds one.
 */
import { isPlainObject } from './merge.js';

export const MASK = '***';

export function isSecretKey(key: string): boolean {
  const k = key.toLowerCase();
  return k === 'password' || k === 'secret' || k === 'token' || k.endsWith('_password') || k.endsWith('_secret') || k.endsWith('_token') || k.endsWith('_key');
}

/** Every string is passed through maskUrl: a URL with credentials may sit under any key. */
export function maskSecrets(value: unknown): unknown {
  if (typeof value === 'string') return maskUrl(value);
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, isSecretKey(k) && v !== undefined && v !== null && v !== '' ? MASK : maskSecrets(v)]));
  }
  return value;
}

const SCHEME = /[a-z][a-z0-9+.-]*:\/\//gi;

/**
 * The credentials of every URL in `text`: nats://user:pass@host → nats://user:***@host, and a
 * userinfo without a password (a NATS token) → nats://***@host. The userinfo is taken to end at the
 * last @ before the next blank, quote or URL, so a password with an unencoded / ? # or @ is
 * masked whole too; a URL with an @ in its path is masked more than needed, never less.
 */
export function maskUrl(text: string): string {
  let out = '';
  let done = 0;
  const starts = [...text.matchAll(SCHEME)];
  starts.forEach((m, k) => {
    const from = m.index + m[0].length;
    const limit = k + 1 < starts.length ? starts[k + 1]!.index : text.length;
    let end = from;
    while (end < limit && !/[\s"'<>`]/.test(text[end]!)) end++;
    const at = text.lastIndexOf('@', end - 1);
    if (at < from) return;
    const userinfo = text.slice(from, at);
    const colon = userinfo.indexOf(':');
    out += text.slice(done, from) + (colon >= 0 ? `${userinfo.slice(0, colon)}:${MASK}` : MASK);
    done = at;
  });
  return out + text.slice(done);
}
