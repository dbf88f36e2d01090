/**
 * `hmgate dump` reads a running daemon: GET /v1/dump on api.listen with the config's basic auth.
 * A daemon listening on every address (0.0.0.0, [::]) is asked on loopback.
 */
import { parseListen } from '../api/server.js';
import type { LoadedConfig } from '../config/load.js';
import type { DumpDoc } from './build.js';

export class DumpUnavailableError extends Error {}

export function dumpUrl(listen: string): string {
  const { host, port } = parseListen(listen);
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}/v1/dump`;
}

export async function fetchDump(loaded: LoadedConfig, timeoutMs = 10_000): Promise<DumpDoc> {
  const { api, store } = loaded.config;
  const direct =
    store.plugin === 'etcd'
      ? '; reading the etcd store directly is not supported yet: run hmgate dump against a running daemon'
      : '; the memory store lives inside the daemon, so a dump needs it running (hmgate run)';
  if (!api.enabled) throw new DumpUnavailableError(`api.enabled is false, so there is no daemon API to read the dump from${direct}`);
  const url = dumpUrl(api.listen);
  let res: Response;
  try {
    res = await fetch(url, {
      headers: { authorization: `Basic ${Buffer.from(`${api.user}:${api.password}`, 'utf8').toString('base64')}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const code = (err as { cause?: { code?: string } }).cause?.code;
    const why = code === 'ECONNREFUSED' ? 'connection refused' : (err as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs}ms` : (code ?? (err as Error).message);
    throw new DumpUnavailableError(`no hmgate daemon answers at ${url} (${why}): check api.listen${direct}`);
  }
  const text = await res.text();
  if (res.status === 401) throw new DumpUnavailableError(`the daemon at ${url} refused api.user / api.password (401)`);
  if (res.status === 404) throw new DumpUnavailableError(`the server at ${url} has no /v1/dump (404): is it an hmgate daemon of this version?`);
  if (res.status !== 200) throw new DumpUnavailableError(`the daemon at ${url} answered ${res.status}: ${text.slice(0, 200)}`);
  return JSON.parse(text) as DumpDoc;
}
