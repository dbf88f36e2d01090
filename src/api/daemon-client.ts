/**
 * The operator commands that talk to a running daemon (`dump`, `confirm-loss`) call its API on
 * api.listen with the config's basic auth. A daemon listening on every address (0.0.0.0, [::]) is
 * asked on loopback.
 */
import { parseListen } from './server.js';
import type { LoadedConfig } from '../config/load.js';

/** The daemon could not be asked, or refused: the message says why and what to check. */
export class DaemonUnavailableError extends Error {}

export function daemonUrl(listen: string, path: string): string {
  const { host, port } = parseListen(listen);
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}${path}`;
}

/**
 * One request to the daemon; returns the status and body of a 2xx or of a status in `accept`.
 * `hint` is added to every failure (e.g. what else could be done without a daemon).
 */
export async function callDaemon(
  loaded: LoadedConfig,
  method: 'GET' | 'POST',
  path: string,
  o: { timeoutMs?: number; hint?: string; accept?: number[] } = {},
): Promise<{ status: number; text: string }> {
  const { api } = loaded.config;
  const hint = o.hint ?? '';
  const timeoutMs = o.timeoutMs ?? 10_000;
  if (!api.enabled) throw new DaemonUnavailableError(`api.enabled is false, so there is no daemon API to ask${hint}`);
  const url = daemonUrl(api.listen, path);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Basic ${Buffer.from(`${api.user}:${api.password}`, 'utf8').toString('base64')}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const code = (err as { cause?: { code?: string } }).cause?.code;
    const why =
      code === 'ECONNREFUSED'
        ? 'connection refused'
        : (err as Error).name === 'TimeoutError'
          ? `no answer within ${timeoutMs}ms`
          : (code ?? (err as Error).message);
    throw new DaemonUnavailableError(`no hmgate daemon answers at ${url} (${why}): check api.listen${hint}`);
  }
  const text = await res.text();
  if (res.status === 401) throw new DaemonUnavailableError(`the daemon at ${url} refused api.user / api.password (401)`);
  if (res.status === 404) throw new DaemonUnavailableError(`the server at ${url} has no ${path} (404): is it an hmgate daemon of this version?`);
  if ((res.status < 200 || res.status > 299) && !o.accept?.includes(res.status))
    throw new DaemonUnavailableError(`the daemon at ${url} answered ${res.status}: ${text.slice(0, 200)}`);
  return { status: res.status, text };
}
