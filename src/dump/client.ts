/** `hmgate dump` reads a running daemon: GET /v1/dump on api.listen with the config's basic auth. */
import { callDaemon, daemonUrl, DaemonUnavailableError } from '../api/daemon-client.js';
import type { LoadedConfig } from '../config/load.js';
import type { DumpDoc } from './build.js';

export { DaemonUnavailableError as DumpUnavailableError } from '../api/daemon-client.js';

export function dumpUrl(listen: string): string {
  return daemonUrl(listen, '/v1/dump');
}

export async function fetchDump(loaded: LoadedConfig, timeoutMs = 10_000): Promise<DumpDoc> {
  const hint =
    loaded.config.store.plugin === 'etcd'
      ? '; reading the etcd store directly is not supported yet: run hmgate dump against a running daemon'
      : '; the memory store lives inside the daemon, so a dump needs it running (hmgate run)';
  const { text } = await callDaemon(loaded, 'GET', '/v1/dump', { timeoutMs, hint });
  try {
    return JSON.parse(text) as DumpDoc;
  } catch {
    throw new DaemonUnavailableError(`the daemon at ${dumpUrl(loaded.config.api.listen)} answered with something that is not JSON`);
  }
}
