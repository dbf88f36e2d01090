/** Secrets never reach the screen or the logs: keys named password, secret, token or *_key. */
import { isPlainObject } from './merge.js';

export const MASK = '***';

export function isSecretKey(key: string): boolean {
  const k = key.toLowerCase();
  return k === 'password' || k === 'secret' || k === 'token' || k.endsWith('_password') || k.endsWith('_secret') || k.endsWith('_token') || k.endsWith('_key');
}

export function maskSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (isPlainObject(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, isSecretKey(k) && v !== undefined && v !== null && v !== '' ? MASK : maskSecrets(v)]),
    );
  }
  return value;
}

/** nats://user:pass@host → nats://user:***@host, for URLs that carry credentials. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/@]*):[^@/]*@/i, `$1:${MASK}@`);
}
