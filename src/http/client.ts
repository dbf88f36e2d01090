/**
 * The one HTTP client set-up of hmgate (undici), shared by every stage that calls the Cloud
 * Controller: an Agent with connect and response timeouts and the TLS trust the config asks for,
 * `ca_file` loading, basic auth, and the error codes that tell an operator what is wrong.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import * as tls from 'node:tls';
import { Agent } from 'undici';
import { errorText } from '../log.js';

export function basicAuth(user: string, password: string): string {
  return `Basic ${Buffer.from(`${user}:${password}`, 'utf8').toString('base64')}`;
}

/** The first `code` on an error, its cause, or the errors of an AggregateError (happy eyeballs). */
export function errorCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 4) return undefined;
  const e = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof e.code === 'string' && e.code !== '') return e.code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const c = errorCode(inner, depth + 1);
      if (c) return c;
    }
  }
  return errorCode(e.cause, depth + 1);
}

/** Certificate verification failures: the server is reachable but its certificate is not trusted. */
export const TLS_TRUST_CODES: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_REVOKED',
  'CERT_CHAIN_TOO_LONG',
  'INVALID_CA',
  'INVALID_PURPOSE',
  'PATH_LENGTH_EXCEEDED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
export const DNS_CODES: ReadonlySet<string> = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_NONAME', 'EAI_FAIL', 'EAI_NODATA']);
export const UNREACHABLE_CODES: ReadonlySet<string> = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL']);

/**
 * The CAs trusted besides ca_file. Giving `ca` replaces Node's default trust, so the defaults are
 * added back: tls.getCACertificates('default') where Node has it (bundled, NODE_EXTRA_CA_CERTS and,
 * with --use-system-ca, the OS store), else tls.rootCertificates (the bundled Mozilla set).
 */
export function defaultCAs(): string[] {
  return hasGetCACertificates(tls) ? [...tls.getCACertificates('default')] : [...tls.rootCertificates];
}

/** tls.getCACertificates (Node 22.15+, 23.5+) is newer than the @types/node 20 typings: checked where it is used. */
function hasGetCACertificates(m: typeof tls): m is typeof tls & { getCACertificates(type?: 'default' | 'system' | 'bundled' | 'extra'): string[] } {
  return 'getCACertificates' in m && typeof m.getCACertificates === 'function';
}

/**
 * Reads a `ca_file` (relative to the config file's directory) and checks that it holds usable PEM
 * certificates. `option` names it in errors, e.g. `sources.desired.ca_file`.
 */
export async function loadCaFile(file: string, configDir: string, option: string): Promise<string> {
  const path = isAbsolute(file) ? file : resolve(configDir, file);
  let pem: string;
  try {
    pem = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${option}: cannot read ${path}: ${errorText(err)}`, { cause: err });
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error(`${option}: ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  try {
    tls.createSecureContext({ ca: pem });
  } catch (err) {
    throw new Error(`${option}: ${path} cannot be used as CA certificates: ${errorText(err)}`, { cause: err });
  }
  return pem;
}

export interface HttpAgentOptions {
  /** Connect timeout, and the longest wait for headers and between body chunks. */
  timeoutMs: number;
  skipCertVerify: boolean;
  /** PEM certificates trusted in addition to the defaults. */
  ca?: string;
}

/** One Agent per stage: its connections are reused from request to request. */
export function createHttpAgent(o: HttpAgentOptions): Agent {
  return new Agent({
    connect: {
      timeout: o.timeoutMs,
      rejectUnauthorized: !o.skipCertVerify,
      ...(o.ca !== undefined ? { ca: [...defaultCAs(), o.ca] } : {}),
    },
    headersTimeout: o.timeoutMs,
    bodyTimeout: o.timeoutMs,
  });
}
