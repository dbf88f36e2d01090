/**
 * The etcd store's doctor against a real etcd whose authentication is on: a refused write is named
 * with the fix of its cause — the credentials, or the user's roles — never etcd's quota.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdHandle } from '../../test/helpers/index.js';
import { etcdDoctor } from './doctor.js';
import type { EtcdStoreOptions } from './options.js';

let etcd: EtcdHandle;

async function gateway(path: string, body: unknown): Promise<void> {
  const res = await fetch(`${etcd.endpoint}/v3/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok || /"error"/.test(text)) throw new Error(`${path}: ${res.status} ${text}`);
}

beforeAll(async () => {
  etcd = await startEtcd();
  // root (needed to turn authentication on), and hm, whose only role grants nothing.
  await gateway('auth/user/add', { name: 'root', password: 'rootpw' });
  await gateway('auth/role/add', { name: 'root' });
  await gateway('auth/user/grant', { user: 'root', role: 'root' });
  await gateway('auth/user/add', { name: 'hm', password: 'hmpw' });
  await gateway('auth/role/add', { name: 'nothing' });
  await gateway('auth/user/grant', { user: 'hm', role: 'nothing' });
  await gateway('auth/enable', {});
});
afterAll(async () => {
  await etcd?.stop();
});

async function check(options: Partial<EtcdStoreOptions>) {
  const { results } = await etcdDoctor({
    id: 'store',
    section: 'store',
    path: 'store',
    options: { endpoints: [etcd.endpoint], prefix: '/doctor-auth', ...options } as EtcdStoreOptions,
    configDir: process.cwd(),
    timeoutMs: 2_000,
    heartbeatMs: 1_000,
    crossCheck: false,
  });
  expect(results).toHaveLength(1);
  return results[0]!;
}

describe('etcd doctor with authentication on', () => {
  it('a wrong password: the fix names the credentials, not the quota', async () => {
    const r = await check({ username: 'hm', password: 'wrong' });
    expect(r).toMatchObject({ ok: false, code: 'ETCD_WRITE_REFUSED' });
    expect(r.why).toBe('refused a test write under /doctor-auth (user hm could not log in: etcdserver: authentication failed, invalid user ID or password)');
    expect(r.fix).toBe('set `store.username` / `store.password` to a user etcd knows, with its password');
  });

  it('no user at all: the fix names the credentials', async () => {
    const r = await check({});
    expect(r).toMatchObject({ ok: false, code: 'ETCD_WRITE_REFUSED' });
    expect(r.why).toBe('refused a test write under /doctor-auth (etcdserver: user name is empty)');
    expect(r.fix).toBe('set `store.username` / `store.password` to a user etcd knows, with its password');
  });

  it("a user whose roles do not cover the prefix: the fix names the user's roles", async () => {
    const r = await check({ username: 'hm', password: 'hmpw' });
    expect(r).toMatchObject({ ok: false, code: 'ETCD_WRITE_REFUSED' });
    expect(r.why).toBe('refused a test write under /doctor-auth (etcdserver: permission denied)');
    expect(r.fix).toBe(
      'give etcd user hm a role that may read and write the keys under /doctor-auth/ (etcdctl role grant-permission --prefix <role> readwrite /doctor-auth/), or name another user in `store.username`',
    );
    expect(r.fix).not.toMatch(/quota|NOSPACE/);
  });

  it('root, whose role covers every key, writes', async () => {
    const r = await check({ username: 'root', password: 'rootpw' });
    expect(r).toMatchObject({ ok: true, why: 'healthy; a test key was written and deleted under /doctor-auth' });
  });
});
