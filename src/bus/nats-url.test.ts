import { describe, expect, it } from 'vitest';
import { natsConnectSettings, parseServer } from './nats-url.js';

const secretFree = (problems: { message: string }[], ...secrets: string[]) => {
  for (const p of problems) for (const s of secrets) expect(p.message).not.toContain(s);
};

describe('credentials in bus.servers URLs', () => {
  it('takes user:password out of the URL, percent-decoded', () => {
    expect(parseServer('nats://hm%2Buser:p%40ss%2Fw%3Ard%25@127.0.0.1:4222')).toEqual({
      server: 'nats://127.0.0.1:4222',
      credentials: { kind: 'user', user: 'hm+user', pass: 'p@ss/w:rd%' },
    });
    expect(parseServer('tls://u:@[::1]:4222')).toEqual({ server: 'tls://[::1]:4222', credentials: { kind: 'user', user: 'u', pass: '' } });
  });

  it('reads a user without a password as a token, as NATS clients do', () => {
    expect(parseServer('nats://s3cret%21@nats.example.com:4222')).toEqual({
      server: 'nats://nats.example.com:4222',
      credentials: { kind: 'token', token: 's3cret!' },
    });
  });

  it('leaves a URL without credentials alone', () => {
    expect(parseServer('nats://127.0.0.1:4222')).toEqual({ server: 'nats://127.0.0.1:4222', credentials: { kind: 'none' } });
  });

  it('an unencoded @ in the password is read as URL parsers read it (the last @ ends the userinfo)', () => {
    expect(parseServer('nats://hm:p@ss@127.0.0.1:4222')).toMatchObject({ server: 'nats://127.0.0.1:4222', credentials: { user: 'hm', pass: 'p@ss' } });
  });

  it('refuses an unencoded / ? # in the credentials, and a bad percent-encoding, without quoting them', () => {
    const { problems } = natsConnectSettings(['nats://hm:pa/ss-s3cret@h:4222', 'nats://hm:%zz-s3cret@h:4222', 'nats://hm:p@ss/s3cret@h:4222'], {});
    expect(problems).toEqual([
      { pointer: '/bus/servers/0', message: 'bus.servers[0] (nats://hm:***@h:4222): a / ? or # in its credentials must be percent-encoded (%2F %3F %23)' },
      {
        pointer: '/bus/servers/1',
        message: 'bus.servers[1] (nats://hm:***@h:4222): its credentials have a bad percent-encoding (a % not followed by two hex digits)',
      },
      { pointer: '/bus/servers/2', message: 'bus.servers[2] (nats://hm:***@h:4222): a / ? or # in its credentials must be percent-encoded (%2F %3F %23)' },
    ]);
    secretFree(problems, 's3cret', 'pa/ss');
  });

  it('hands the URL credentials over, and the URLs without them', () => {
    expect(natsConnectSettings(['nats://hm:s3cret@a:4222', 'nats://hm:s3cret@b:4222'], {})).toEqual({
      settings: { servers: ['nats://a:4222', 'nats://b:4222'], user: 'hm', pass: 's3cret' },
      problems: [],
    });
    expect(natsConnectSettings(['nats://t0ken@a:4222'], {}).settings).toEqual({ servers: ['nats://a:4222'], token: 't0ken' });
  });

  it('uses bus.user / bus.password / bus.token when the URLs carry none', () => {
    expect(natsConnectSettings(['nats://a:4222'], { user: 'hm', password: 'pw' }).settings).toEqual({ servers: ['nats://a:4222'], user: 'hm', pass: 'pw' });
    expect(natsConnectSettings(['nats://a:4222'], { token: 't' }).settings).toEqual({ servers: ['nats://a:4222'], token: 't' });
  });

  it('accepts bus.user and bus.password equal to the URL credentials', () => {
    expect(natsConnectSettings(['nats://hm:s3cret@a:4222'], { user: 'hm', password: 's3cret' }).problems).toEqual([]);
  });

  it('refuses URLs that disagree with each other', () => {
    const { problems } = natsConnectSettings(['nats://hm:s3cret-1@a:4222', 'nats://hm:s3cret-2@b:4222', 'nats://c:4222', 'nats://t0ken-s3cret@d:4222'], {});
    expect(problems.map((p) => p.pointer)).toEqual(['/bus/servers/1', '/bus/servers/2', '/bus/servers/3']);
    expect(problems[0]!.message).toBe(
      'the credentials in bus.servers[1] (nats://hm:***@b:4222) differ from those in bus.servers[0] (nats://hm:***@a:4222): one NATS connection uses one set for every server; make them the same',
    );
    expect(problems[1]!.message).toMatch(/^bus\.servers\[2\] \(nats:\/\/c:4222\) has no credentials but bus\.servers\[0\] .* has/);
    secretFree(problems, 's3cret', 't0ken');
  });

  it('refuses URLs that disagree with bus.user / bus.password / bus.token', () => {
    const user = natsConnectSettings(['nats://hm:s3cret@a:4222'], { user: 'other', password: 'other-s3cret', token: 'tok-s3cret' }).problems;
    expect(user.map((p) => p.pointer)).toEqual(['/bus/token', '/bus/user', '/bus/password']);
    expect(user[2]!.message).toBe('bus.password differs from the password in bus.servers[0] (nats://hm:***@a:4222): remove one, or make them the same');
    const token = natsConnectSettings(['nats://t0ken@a:4222'], { user: 'hm', password: 'pw-s3cret', token: 'other-s3cret' }).problems;
    expect(token.map((p) => p.pointer)).toEqual(['/bus/user', '/bus/password', '/bus/token']);
    secretFree([...user, ...token], 's3cret', 't0ken');
  });
});
