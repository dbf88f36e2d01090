/**
 * Credentials written in bus.servers URLs, against a real nats-server that requires them: the
 * daemon's connection and doctor's check both log in with them (nats.js alone ignores a URL's
 * userinfo), validate refuses URLs that contradict each other or bus.user / bus.password /
 * bus.token, and no secret reaches a log line, a health answer, a doctor line or an error.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, formatProblem } from '../../src/config/errors.js';
import { loadConfig } from '../../src/config/load.js';
import { checkNats } from '../../src/doctor/nats.js';
import { formatResult } from '../../src/doctor/result.js';
import { NatsBus } from '../../src/bus/nats-bus.js';
import { startNatsServer, type NatsServerHandle } from '../helpers/index.js';

// Characters that must be percent-encoded in a URL, so decoding is tested too.
const USER = 'hm+user';
const PASSWORD = 'p@ss/w:rd%-s3cret';
const enc = encodeURIComponent;

let dir: string;
let userServer: NatsServerHandle;
let tokenServer: NatsServerHandle;
const buses: NatsBus[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-nats-creds-'));
  [userServer, tokenServer] = await Promise.all([startNatsServer({ user: USER, password: PASSWORD }), startNatsServer({ token: 't0ken-s3cret' })]);
});
afterEach(async () => {
  for (const b of buses.splice(0)) await b.stop();
});
afterAll(async () => {
  await Promise.all([userServer?.stop(), tokenServer?.stop()]);
  await rm(dir, { recursive: true, force: true });
});

function bus(servers: string[], extra: { user?: string; password?: string; token?: string } = {}, connectTimeoutMs = 5_000) {
  const lines: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(s) });
  const b = new NatsBus({ servers, name: 'hmgate-test', connectTimeoutMs, ...extra }, logger);
  buses.push(b);
  return { b, lines };
}

/** A message published through the bus comes back through its own subscription. */
async function roundTrip(b: NatsBus): Promise<string> {
  const got = new Promise<string>((resolve) => b.subscribe('creds.test', (m) => resolve(new TextDecoder().decode(m.data))));
  await b.flush();
  b.publish('creds.test', 'hello');
  return got;
}

async function config(lines: string[]): Promise<string> {
  const f = join(dir, `c${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(f, [...lines, 'api:', '  password: api-pw', ''].join('\n'));
  return f;
}

const userUrl = () => `nats://${enc(USER)}:${enc(PASSWORD)}@127.0.0.1:${userServer.port}`;

describe('the daemon connection (NatsBus)', () => {
  it('logs in with user:password written (percent-encoded) in the URL', async () => {
    const { b, lines } = bus([userUrl()]);
    await b.start();
    expect(b.health()).toEqual({ healthy: true, last_error: null });
    expect(await roundTrip(b)).toBe('hello');
    expect(b.where).toBe(`nats://${enc(USER)}:***@127.0.0.1:${userServer.port}`);
    const logged = lines.join('');
    expect(logged).toContain('connected to NATS');
    for (const secret of [PASSWORD, enc(PASSWORD), 's3cret']) expect(logged).not.toContain(secret);
  });

  it('logs in with a token written in the URL (a user without a password)', async () => {
    const { b } = bus([`nats://t0ken-s3cret@127.0.0.1:${tokenServer.port}`]);
    await b.start();
    expect(await roundTrip(b)).toBe('hello');
  });

  it('URL credentials equal to bus.user / bus.password are fine', async () => {
    const { b } = bus([userUrl()], { user: USER, password: PASSWORD });
    await b.start();
    expect(b.connected).toBe(true);
  });

  it('a wrong password in the URL is refused, and said so without the password', async () => {
    const { b, lines } = bus([`nats://${enc(USER)}:wrong-s3cret@127.0.0.1:${userServer.port}`], {}, 1_000);
    await b.start();
    expect(b.connected).toBe(false);
    expect(b.health().last_error).toMatch(/authorization refused/);
    const logged = lines.join('') + JSON.stringify(b.health()) + b.where;
    expect(logged).not.toContain('wrong-s3cret');
  });
});

describe('hmgate doctor: the NATS check', () => {
  it('logs in with the credentials in the URL and names the server with the password masked', async () => {
    const loaded = await loadConfig(await config(['bus:', `  servers: ["${userUrl()}"]`]), { plugins: false });
    const { result, nc } = await checkNats({ loaded, configDir: dir, timeoutMs: 5_000 });
    await nc?.close();
    expect(result.ok).toBe(true);
    expect(formatResult(result)).toBe(`ok: NATS at nats://${enc(USER)}:***@127.0.0.1:${userServer.port}: connected to 127.0.0.1:${userServer.port}`);
  });

  it('a wrong password: FAIL with the fix, and no secret in the line', async () => {
    const loaded = await loadConfig(await config(['bus:', `  servers: ["nats://${enc(USER)}:wrong-s3cret@127.0.0.1:${userServer.port}"]`]), { plugins: false });
    const { result, nc } = await checkNats({ loaded, configDir: dir, timeoutMs: 5_000 });
    await nc?.close();
    expect(result.ok).toBe(false);
    expect(result.code).toBe('NATS_AUTH_REFUSED');
    expect(formatResult(result)).toMatch(/user:password in the URL/);
    expect(formatResult(result)).not.toContain('wrong-s3cret');
  });
});

describe('hmgate validate: URL credentials that contradict each other or bus.*', () => {
  async function problems(lines: string[]): Promise<{ file: string; out: string[] }> {
    const file = await config(lines);
    try {
      await loadConfig(file, { plugins: false });
    } catch (err) {
      if (err instanceof ConfigError) return { file, out: err.problems.map(formatProblem) };
      throw err;
    }
    return { file, out: [] };
  }

  it('one FILE:LINE:COL line at each offending key, with no secret', async () => {
    const { file, out } = await problems([
      'bus:',
      '  servers:',
      '    - nats://hm:url-s3cret@127.0.0.1:4222',
      '    - nats://hm:other-s3cret@127.0.0.2:4222',
      '  user: hm',
      '  password: bus-s3cret',
    ]);
    expect(out).toEqual([
      `${file}:4:7: the credentials in bus.servers[1] (nats://hm:***@127.0.0.2:4222) differ from those in bus.servers[0] (nats://hm:***@127.0.0.1:4222): one NATS connection uses one set for every server; make them the same`,
      `${file}:6:13: bus.password differs from the password in bus.servers[0] (nats://hm:***@127.0.0.1:4222): remove one, or make them the same`,
    ]);
    for (const secret of ['url-s3cret', 'other-s3cret', 'bus-s3cret']) expect(out.join('\n')).not.toContain(secret);
  });

  it('a token in the URL beside bus.user', async () => {
    const { file, out } = await problems(['bus:', '  servers: ["nats://t0ken-s3cret@127.0.0.1:4222"]', '  user: hm']);
    expect(out).toEqual([
      `${file}:3:9: bus.user is set but bus.servers[0] (nats://***@127.0.0.1:4222) carries a token (a user without a password): use one or the other`,
    ]);
  });

  it('consistent credentials are valid', async () => {
    expect((await problems(['bus:', `  servers: ["nats://hm:s3cret@127.0.0.1:4222", "nats://hm:s3cret@127.0.0.2:4222"]`, '  user: hm'])).out).toEqual([]);
  });
});
