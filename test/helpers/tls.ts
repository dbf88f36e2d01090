/**
 * Throw-away X.509 material for TLS tests, generated with the `openssl` CLI
 * (EC P-256 keys, valid for 7 days). Nothing is left on disk.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { resolveBinary } from './ports.js';

const execFileAsync = promisify(execFile);

/** PEM encoded private key and certificate. */
export interface PemPair {
  key: string;
  cert: string;
}

export interface CertOptions {
  /** Extra subjectAltName entries, e.g. ['DNS:cc.internal', 'IP:10.0.0.1']. */
  altNames?: string[];
  /** Validity in days (default 7). */
  days?: number;
}

const OPENSSL = () => resolveBinary('openssl', 'OPENSSL_BIN', ['/usr/bin/openssl', '/usr/local/bin/openssl']);

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await execFileAsync(OPENSSL(), args, { cwd, timeout: 30_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

async function inTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'hmgate-tls-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Loopback names are always included so certificates work for 127.0.0.1, ::1 and localhost. */
function subjectAltNames(cn: string, extra: string[] = []): string {
  const names = ['IP:127.0.0.1', 'IP:::1', 'DNS:localhost'];
  const own = isIP(cn) ? `IP:${cn}` : `DNS:${cn}`;
  if (!names.includes(own) && !/\s/.test(cn)) names.push(own);
  for (const n of extra) if (!names.includes(n)) names.push(n);
  return names.join(', ');
}

function config(cn: string, extensions: string[]): string {
  return ['[req]', 'distinguished_name = dn', 'prompt = no', 'x509_extensions = ext', '[dn]', `CN = ${cn}`, '[ext]', ...extensions, ''].join('\n');
}

const serial = () =>
  `0x${randomBytes(8)
    .toString('hex')
    .replace(/^[89a-f]/, '1')}`;
const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function selfSigned(cn: string, extensions: string[], days: number): Promise<PemPair> {
  return inTempDir(async (dir) => {
    await writeFile(path.join(dir, 'openssl.cnf'), config(cn, extensions));
    await openssl(
      ['req', '-x509', ...EC, '-config', 'openssl.cnf', '-keyout', 'key.pem', '-out', 'cert.pem', '-days', String(days), '-set_serial', serial()],
      dir,
    );
    return {
      key: await readFile(path.join(dir, 'key.pem'), 'utf8'),
      cert: await readFile(path.join(dir, 'cert.pem'), 'utf8'),
    };
  });
}

/**
 * A self-signed server certificate for `cn` (default 127.0.0.1) with
 * subjectAltName IP:127.0.0.1, IP:::1, DNS:localhost (+ cn). Clients that are
 * given the certificate itself as `ca` trust it.
 */
export function makeSelfSignedCert(cn = '127.0.0.1', opts: CertOptions = {}): Promise<PemPair> {
  return selfSigned(
    cn,
    [
      'basicConstraints = critical, CA:TRUE',
      'keyUsage = critical, digitalSignature, keyCertSign',
      'extendedKeyUsage = serverAuth, clientAuth',
      `subjectAltName = ${subjectAltNames(cn, opts.altNames)}`,
      'subjectKeyIdentifier = hash',
    ],
    opts.days ?? 7,
  );
}

/** A throw-away certificate authority (use `ca.cert` as `ca` / ca_file). */
export function makeCA(cn = 'hmgate test CA', opts: Pick<CertOptions, 'days'> = {}): Promise<PemPair> {
  return selfSigned(cn, ['basicConstraints = critical, CA:TRUE', 'keyUsage = critical, keyCertSign, cRLSign', 'subjectKeyIdentifier = hash'], opts.days ?? 7);
}

/**
 * A leaf certificate for `cn` signed by `ca`, usable both as a server
 * certificate (SANs as in makeSelfSignedCert) and as a client certificate.
 */
export function makeSignedCert(ca: PemPair, cn = '127.0.0.1', opts: CertOptions = {}): Promise<PemPair> {
  return inTempDir(async (dir) => {
    const ext = [
      'basicConstraints = critical, CA:FALSE',
      'keyUsage = critical, digitalSignature',
      'extendedKeyUsage = serverAuth, clientAuth',
      `subjectAltName = ${subjectAltNames(cn, opts.altNames)}`,
      'subjectKeyIdentifier = hash',
      'authorityKeyIdentifier = keyid',
    ];
    await writeFile(path.join(dir, 'openssl.cnf'), config(cn, ext));
    await writeFile(path.join(dir, 'ca.key'), ca.key, { mode: 0o600 });
    await writeFile(path.join(dir, 'ca.pem'), ca.cert);
    await openssl(['req', '-new', ...EC, '-config', 'openssl.cnf', '-keyout', 'key.pem', '-out', 'req.csr'], dir);
    await openssl(
      [
        'x509',
        '-req',
        '-in',
        'req.csr',
        '-CA',
        'ca.pem',
        '-CAkey',
        'ca.key',
        '-set_serial',
        serial(),
        '-days',
        String(opts.days ?? 7),
        '-extfile',
        'openssl.cnf',
        '-extensions',
        'ext',
        '-out',
        'cert.pem',
      ],
      dir,
    );
    return {
      key: await readFile(path.join(dir, 'key.pem'), 'utf8'),
      cert: await readFile(path.join(dir, 'cert.pem'), 'utf8'),
    };
  });
}
