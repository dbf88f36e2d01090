/**
 * `walk: ruby` in the real engine with a real nats-server: the Cloud Controller's side of the
 * credentials request is a NATS responder, the bulk API the fake CC over HTTP.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { StatusBody } from '../../src/api/routes/status.js';
import { loadConfig } from '../../src/config/load.js';
import { createLoggerFactory } from '../../src/log.js';
import { Engine } from '../../src/pipeline/engine.js';
import { appKey } from '../../src/sdk/app-key.js';
import { freePort, startFakeCC, startNatsServer, waitFor, type FakeCCHandle, type NatsServerHandle } from '../../test/helpers/index.js';

let nats: NatsServerHandle;
let nc: NatsConnection;
let dir: string;
const cleanups: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  await nats?.stop();
});
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-ruby-walk-it-'));
  nc = await connect({ servers: nats.url, name: 'fake-cloud-controller' });
});
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await nc.close();
  await rm(dir, { recursive: true, force: true });
});

async function fakeCC(): Promise<FakeCCHandle> {
  const cc = await startFakeCC({
    apps: [
      { guid: 'app-a', version: 'va', instances: 2 },
      { guid: 'app-b', version: 'vb', state: 'STOPPED' },
    ],
    userCount: 7,
  });
  cleanups.push(() => cc.stop());
  return cc;
}

/** Answers the credentials request on `subject` with the fake CC's user; counts the requests. */
async function credentialsResponder(cc: FakeCCHandle, subject = 'cloudcontroller.bulk.credentials.default'): Promise<{ asked: number; bodyBytes: number }> {
  const counter = { asked: 0, bodyBytes: 0 };
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      counter.asked++;
      counter.bodyBytes += msg.data.length;
      msg.respond(JSON.stringify({ user: cc.user, password: cc.password }));
    },
  });
  await nc.flush();
  return counter;
}

async function engineWith(source: string[]): Promise<{ engine: Engine; status(): Promise<StatusBody>; logs: string[] }> {
  const port = await freePort();
  const file = join(dir, 'hmgate.yaml');
  await writeFile(
    file,
    [
      'foundation: it-ruby',
      'heartbeat_interval: 100ms',
      'freshness: { desired_ttl: 30hb }',
      `bus: { servers: ["${nats.url}"] }`,
      'sources:',
      '  desired:',
      '    plugin: bulk-api',
      '    walk: ruby',
      '    user_counts: true',
      '    credentials: nats',
      '    poll_interval: 300ms',
      ...source.map((l) => `    ${l}`),
      `api: { listen: "127.0.0.1:${port}", password: pw }`,
      '',
    ].join('\n'),
  );
  const loaded = await loadConfig(file, { env: {} });
  const logs: string[] = [];
  const engine = new Engine(loaded, {
    loggers: createLoggerFactory({ foundation: 'it-ruby', level: 'debug', destination: { write: (s: string) => void logs.push(s) } }),
  });
  cleanups.push(() => engine.stop());
  await engine.start();
  const auth = `Basic ${Buffer.from('magnet:pw').toString('base64')}`;
  return {
    engine,
    logs,
    status: async () => (await (await fetch(`http://127.0.0.1:${port}/v1/status`, { headers: { authorization: auth } })).json()) as StatusBody,
  };
}

describe('walk: ruby with NATS credentials', () => {
  it('asks twice at the first update, then uses the cached credentials; counts and pages percent-encoded', async () => {
    const cc = await fakeCC();
    const responder = await credentialsResponder(cc);
    const run = await engineWith([`url: 127.0.0.1:${cc.port}`]);
    await waitFor(() => cc.requestsTo('/bulk/counts').length >= 3, { what: 'three updates' });
    expect(responder.asked).toBe(2);
    expect(responder.bodyBytes).toBe(0); // an empty request body
    expect(
      cc
        .requestsTo('/bulk/apps')
        .slice(0, 2)
        .map((r) => r.url),
    ).toEqual(['/bulk/apps?batch_size=500&bulk_token=%7B%7D', '/bulk/apps?batch_size=500&bulk_token=%7B%22id%22%3A2%7D']);
    expect(cc.requestsTo('/bulk/counts')[0]!.url).toBe('/bulk/counts?model=user');
    const s = await waitFor(async () => {
      const st = await run.status();
      return st.desired.fresh ? st : undefined;
    });
    expect(s.stages.desired).toMatchObject({ healthy: true, last_error: null });
    expect([...(await run.engine.stateStore!.getDesired()).keys()]).toEqual([appKey('app-a', 'va')]);
    expect(run.logs.join('')).not.toContain(cc.password);
  });

  it('a failing /bulk/counts drops the credentials: the next update asks again', async () => {
    const cc = await fakeCC();
    const responder = await credentialsResponder(cc);
    cc.failRoute('/bulk/counts', '500', 1);
    const run = await engineWith([`url: ${cc.url}`]);
    await waitFor(() => responder.asked >= 3, { what: 'credentials asked again' });
    expect(run.logs.join('')).toMatch(/answered 500 to \/bulk\/counts .*credentials dropped/);
  });

  it('a CC on another partition: nobody answers, nothing is asked of the bulk API, and status says why', async () => {
    const cc = await fakeCC();
    await credentialsResponder(cc, 'cloudcontroller.bulk.credentials.ng');
    const run = await engineWith([`url: ${cc.url}`, 'credentials_timeout: 200ms']);
    const s = await waitFor(async () => {
      const st = await run.status();
      return /^Failed to request auth info on cloudcontroller\.bulk\.credentials\.default: .*request ignored/.test(st.stages.desired?.last_error ?? '')
        ? st
        : undefined;
    });
    expect(s.desired.fresh).toBe(false);
    expect(cc.requests).toHaveLength(0);
  });
});
