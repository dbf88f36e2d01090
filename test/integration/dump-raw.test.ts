/** `hmgate dump --raw` reads an etcd store straight, without a daemon, and refuses the memory store. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { EtcdStore } from '../../plugins/etcd-store/index.js';
import { RealClock } from '../../src/sdk/clock.js';
import { runCli } from '../helpers/hmgate-process.js';
import { startEtcd, type EtcdHandle } from '../helpers/index.js';

let dir: string;
let etcd: EtcdHandle;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-raw-'));
  etcd = await startEtcd();
});
afterEach(async () => {
  await etcd.stop();
  await rm(dir, { recursive: true, force: true });
});

it('prints the keys of the etcd store, one line each; a memory store is refused with one line', async () => {
  const store = new EtcdStore({ endpoints: [etcd.endpoint], prefix: '/raw', timeoutMs: 5000 }, new RealClock());
  await store.start();
  await store.saveHeartbeats(
    [{ agent: 'dea-7', instances: [{ app: 'app-1', version: 'v1', instance: 'i-1', index: 0, state: 'RUNNING', stateTimestamp: 1, agent: 'dea-7' }] }],
    30_000,
  );
  await store.replaceDesired([{ guid: 'app-1', version: 'v1', instances: 1, state: 'STARTED', packageState: 'STAGED' }]);
  await store.stop();
  const file = join(dir, 'c.yaml');
  await writeFile(file, `store: { plugin: etcd, endpoints: ["${etcd.endpoint}"], prefix: /raw }\napi: { password: x }\n`);
  const r = await runCli(['dump', '--raw', '-c', file]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  expect(r.stdout).toMatch(/^\/raw\/agents\/dea-7\s.*i-1.*$/m);
  expect(r.stdout).toMatch(/^\/raw\/desired\/meta\s/m);

  const mem = join(dir, 'm.yaml');
  await writeFile(mem, 'api: { password: x }\n');
  const refused = await runCli(['dump', '--raw', '-c', mem]);
  expect(refused.code).toBe(1);
  expect(refused.stderr.trim()).toBe(
    'hmgate: dump --raw reads a shared store; store "memory" keeps its state inside the daemon: use hmgate dump (it asks the running daemon)',
  );
});
