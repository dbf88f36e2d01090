/**
 * `hmgate print-config` (the built CLI) with a credential in every key that takes a URL — NATS
 * servers (user:password and token), the NATS monitor, etcd endpoints, the CC bulk API, the CC
 * internal API — and in the password keys: no secret appears anywhere in its output, and a
 * config it refuses does not quote one either.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/hmgate-process.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-print-config-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function printConfig(name: string, lines: string[], env: Record<string, string> = {}) {
  const f = join(dir, name);
  await writeFile(f, `${lines.join('\n')}\n`);
  return { f, ...(await runCli(['print-config', '-c', f], { env })) };
}

const SECRETS = [
  'bus-s3cret',
  'b%40s-s3cret',
  'b@s-s3cret',
  'mon-s3cret',
  'etcd-url-s3cret',
  'etcd-s3cret',
  'cc-url-s3cret',
  'cc-s3cret',
  'int-url-s3cret',
  'int-s3cret',
  'api-s3cret',
];

describe('hmgate print-config', () => {
  it('masks the password of every URL and every password key (hm9000 preset, etcd store, HTTP sink)', async () => {
    const r = await printConfig(
      'all-urls.yaml',
      [
        'extends: hm9000',
        'bus:',
        '  servers:',
        '    - nats://hm:bus-s3cret@10.0.0.1:4222',
        '    - nats://hm:${BUS_PW}@10.0.0.2:4222',
        '  monitor_url: http://mon:mon-s3cret@10.0.0.1:8222',
        'store:',
        '  plugin: etcd',
        '  endpoints: ["https://root:etcd-url-s3cret@10.0.0.3:2379"]',
        '  username: root',
        '  password: etcd-s3cret',
        'sources:',
        '  desired:',
        '    url: https://bulk_api:cc-url-s3cret@api.example.com',
        '    user: bulk_api',
        '    password: cc-s3cret',
        'sinks:',
        '  cloud_controller:',
        '    protocol: hm9000-http',
        '    cc_url: https://internal:int-url-s3cret@api.example.com',
        '    user: internal',
        '    password: int-s3cret',
        'api:',
        '  password: api-s3cret',
      ],
      { BUS_PW: 'bus-s3cret' },
    );
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const secret of SECRETS) expect(r.stdout).not.toContain(secret);
    expect(r.stdout).toContain('- nats://hm:***@10.0.0.1:4222');
    expect(r.stdout).toContain('- nats://hm:***@10.0.0.2:4222');
    expect(r.stdout).toContain('monitor_url: http://mon:***@10.0.0.1:8222');
    expect(r.stdout).toContain('- https://root:***@10.0.0.3:2379');
    expect(r.stdout).toContain('url: https://bulk_api:***@api.example.com');
    expect(r.stdout).toContain('cc_url: https://internal:***@api.example.com');
    expect(r.stdout.match(/password: "\*\*\*"/g)).toHaveLength(4); // etcd, bulk API, internal API, api
  });

  it('masks a NATS token written as the user of a URL, and a percent-encoded password', async () => {
    const token = await printConfig('token.yaml', ['bus:', '  servers: ["nats://t0ken-s3cret@10.0.0.1:4222"]', 'api:', '  password: api-s3cret']);
    expect(token.code).toBe(0);
    expect(token.stdout).toContain('- nats://***@10.0.0.1:4222');
    expect(token.stdout).not.toContain('t0ken-s3cret');
    const encoded = await printConfig('encoded.yaml', ['bus:', '  servers: ["nats://hm:b%40s-s3cret@10.0.0.1:4222"]', 'api:', '  password: api-s3cret']);
    expect(encoded.code).toBe(0);
    expect(encoded.stdout).toContain('- nats://hm:***@10.0.0.1:4222');
    for (const secret of SECRETS) expect(encoded.stdout).not.toContain(secret);
  });

  it('a config it refuses is named at FILE:LINE:COL without quoting the secret', async () => {
    const r = await printConfig('refused.yaml', [
      'bus:',
      '  servers: ["nats://hm:b@s/s3cret@10.0.0.1:4222", "http://hm:bus-s3cret@10.0.0.2:4222"]',
      'api:',
      '  password: api-s3cret',
    ]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const line of lines) expect(line).toMatch(new RegExp(`^${r.f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2:\\d+: `));
    expect(r.stderr).toMatch(/must be percent-encoded/);
    for (const secret of ['s3cret', 'b@s']) expect(r.stderr).not.toContain(secret);
  });
});
