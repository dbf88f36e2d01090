/**
 * Credentials written into bus.servers URLs (nats://user:password@host:4222, or nats://token@host
 * as NATS clients read a user without a password). The nats.js client ignores a URL's userinfo,
 * so they are taken out here, percent-decoded, and handed over as user/pass or token, and the
 * client gets the URLs without them. One connection has one set of credentials, so every URL
 * must carry the same ones, or none, and they must agree with bus.user / bus.password / bus.token.
 */
import { maskUrl } from '../config/mask.js';

export interface NatsCredentials {
  user?: string;
  pass?: string;
  token?: string;
}

export interface NatsConnectSettings extends NatsCredentials {
  /** The URLs without their credentials. */
  servers: string[];
}

export interface NatsSettingsProblem {
  /** JSON pointer into the config: /bus/servers/<i>, /bus/user, /bus/password or /bus/token. */
  pointer: string;
  message: string;
}

type UrlCredentials = { kind: 'none' } | { kind: 'user'; user: string; pass: string } | { kind: 'token'; token: string };

interface ParsedServer {
  server: string;
  credentials: UrlCredentials;
  problem?: string;
}

function decode(part: string): string | undefined {
  try {
    return decodeURIComponent(part);
  } catch {
    return undefined;
  }
}

/** One server URL split into the URL the client gets and the credentials it carried. */
export function parseServer(url: string): ParsedServer {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url);
  const prefix = scheme ? scheme[0] : '';
  const rest = url.slice(prefix.length);
  // The authority ends where a path, query or fragment would begin; its userinfo ends at the
  // last @ in it (as URL parsers read it).
  const end = rest.search(/[/?#]/);
  // A NATS URL has no path, so an @ after a / ? or # belongs to credentials that were not encoded.
  if (end >= 0 && rest.indexOf('@', end) >= 0) {
    return { server: url, credentials: { kind: 'none' }, problem: 'a / ? or # in its credentials must be percent-encoded (%2F %3F %23)' };
  }
  const authority = end < 0 ? rest : rest.slice(0, end);
  const at = authority.lastIndexOf('@');
  if (at < 0) return { server: url, credentials: { kind: 'none' } };
  const userinfo = authority.slice(0, at);
  const server = prefix + rest.slice(at + 1);
  const colon = userinfo.indexOf(':');
  if (colon < 0) {
    const token = decode(userinfo);
    if (token === undefined)
      return { server, credentials: { kind: 'none' }, problem: 'its credentials have a bad percent-encoding (a % not followed by two hex digits)' };
    return { server, credentials: { kind: 'token', token } };
  }
  const user = decode(userinfo.slice(0, colon));
  const pass = decode(userinfo.slice(colon + 1));
  if (user === undefined || pass === undefined)
    return { server, credentials: { kind: 'none' }, problem: 'its credentials have a bad percent-encoding (a % not followed by two hex digits)' };
  return { server, credentials: { kind: 'user', user, pass } };
}

function same(a: UrlCredentials, b: UrlCredentials): boolean {
  if (a.kind === 'user' && b.kind === 'user') return a.user === b.user && a.pass === b.pass;
  if (a.kind === 'token' && b.kind === 'token') return a.token === b.token;
  return a.kind === b.kind;
}

/**
 * The servers and credentials to connect with, and every way the config contradicts itself
 * (reported by validate at the offending key; none of the messages carries a secret).
 */
export function natsConnectSettings(
  servers: readonly string[],
  explicit: { user?: string; password?: string; token?: string },
): { settings: NatsConnectSettings; problems: NatsSettingsProblem[] } {
  const problems: NatsSettingsProblem[] = [];
  const parsed = servers.map(parseServer);
  parsed.forEach((p, i) => {
    if (p.problem) problems.push({ pointer: `/bus/servers/${i}`, message: `bus.servers[${i}] (${maskUrl(servers[i]!)}): ${p.problem}` });
  });

  const firstWith = parsed.findIndex((p) => p.credentials.kind !== 'none');
  const fromUrls = firstWith >= 0 ? parsed[firstWith]!.credentials : ({ kind: 'none' } as UrlCredentials);
  if (firstWith >= 0) {
    const first = `bus.servers[${firstWith}] (${maskUrl(servers[firstWith]!)})`;
    parsed.forEach((p, i) => {
      if (i === firstWith || p.problem || same(p.credentials, fromUrls)) return;
      const message =
        p.credentials.kind === 'none'
          ? `bus.servers[${i}] (${maskUrl(servers[i]!)}) has no credentials but ${first} has: one NATS connection uses one set for every server; write the same in every URL, or put them in bus.user and bus.password (or bus.token) instead`
          : `the credentials in bus.servers[${i}] (${maskUrl(servers[i]!)}) differ from those in ${first}: one NATS connection uses one set for every server; make them the same`;
      problems.push({ pointer: `/bus/servers/${i}`, message });
    });
    if (fromUrls.kind === 'user') {
      if (explicit.token !== undefined)
        problems.push({ pointer: '/bus/token', message: `bus.token is set but ${first} carries user:password: use one or the other` });
      if (explicit.user !== undefined && explicit.user !== fromUrls.user)
        problems.push({ pointer: '/bus/user', message: `bus.user differs from the user in ${first}: remove one, or make them the same` });
      if (explicit.password !== undefined && explicit.password !== fromUrls.pass)
        problems.push({ pointer: '/bus/password', message: `bus.password differs from the password in ${first}: remove one, or make them the same` });
    } else if (fromUrls.kind === 'token') {
      if (explicit.user !== undefined)
        problems.push({ pointer: '/bus/user', message: `bus.user is set but ${first} carries a token (a user without a password): use one or the other` });
      if (explicit.password !== undefined)
        problems.push({
          pointer: '/bus/password',
          message: `bus.password is set but ${first} carries a token (a user without a password): use one or the other`,
        });
      if (explicit.token !== undefined && explicit.token !== fromUrls.token)
        problems.push({ pointer: '/bus/token', message: `bus.token differs from the token in ${first}: remove one, or make them the same` });
    }
  }

  const settings: NatsConnectSettings = { servers: parsed.map((p) => p.server) };
  if (fromUrls.kind === 'user') {
    settings.user = fromUrls.user;
    settings.pass = fromUrls.pass;
  } else if (fromUrls.kind === 'token') {
    settings.token = fromUrls.token;
  } else {
    if (explicit.user !== undefined) settings.user = explicit.user;
    if (explicit.password !== undefined) settings.pass = explicit.password;
    if (explicit.token !== undefined) settings.token = explicit.token;
  }
  return { settings, problems };
}
