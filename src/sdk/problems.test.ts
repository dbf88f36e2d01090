import { describe, expect, it } from 'vitest';
import { ccProblem, PROBLEM_CATALOGUE, PROBLEM_CODES, withoutAdvice } from './problems.js';

describe('the problem catalogue and its helpers', () => {
  it('says how to trust the CC certificate and where the URL goes', () => {
    const where = { label: 'CC bulk API', url: 'https://cc', stage: 'sources.desired', urlKey: 'url' as const };
    const tls = ccProblem('the CC certificate for cc is not trusted (SELF_SIGNED_CERT_IN_CHAIN): set …', where, 'network_timeout', 'desired');
    expect(tls.why).toBe('the CC certificate is not trusted (SELF_SIGNED_CERT_IN_CHAIN)');
    expect(tls.fix).toBe('set `sources.desired.ca_file`, or `skip_cert_verify: true` to skip');
    const refused = ccProblem('connection refused by https://cc (ECONNREFUSED): check sources.desired.url — it must be …', where, 'network_timeout', 'desired');
    expect(refused.why).toBe('connection refused by https://cc (ECONNREFUSED)');
    expect(refused.fix).toBe("check `sources.desired.url` — it must be the Cloud Controller's domain or IP");
  });

  it('cuts the advice from a stage reason', () => {
    expect(withoutAdvice('connection refused by http://x:1 (ECONNREFUSED): check sources.desired.url — it must be')).toBe(
      'connection refused by http://x:1 (ECONNREFUSED)',
    );
    expect(withoutAdvice('answered 500 on page 1')).toBe('answered 500 on page 1');
  });

  it('has a template for every code, each with a fix', () => {
    for (const code of PROBLEM_CODES) expect(typeof PROBLEM_CATALOGUE[code]).toBe('function');
    expect(PROBLEM_CODES).toEqual(
      expect.arrayContaining([
        'NATS_UNREACHABLE',
        'CC_UNREACHABLE',
        'CC_UNAUTHORIZED',
        'CC_TLS_UNTRUSTED',
        'CC_TIMEOUT',
        'NO_HEARTBEATS',
        'CC_PARTITION_MISMATCH',
        'NO_START_STOP_LISTENER',
        'WRONG_FOUNDATION',
        'ETCD_UNREACHABLE',
        'NOT_FRESH',
      ]),
    );
  });
});

describe('CC_CREDENTIALS_UNAVAILABLE', () => {
  it('on the Ruby HM credentials subject names the partition and the key that fixes a CC v2', () => {
    const ruby = PROBLEM_CATALOGUE.CC_CREDENTIALS_UNAVAILABLE({
      stage: 'sources.desired',
      subject: 'cloudcontroller.bulk.credentials.default',
      error: 'no answer within 5s',
    });
    expect(ruby.fix).toBe(
      'is the Cloud Controller connected to this NATS, and on cc_partition "default"? A CC v2 answers on cloudcontroller.bulk.credentials.ng: set `cc_partition: ng`; or set `sources.desired.credentials: static` with `user` / `password`',
    );
    expect(
      PROBLEM_CATALOGUE.CC_CREDENTIALS_UNAVAILABLE({ stage: 'sources.desired', subject: 'cloudcontroller.bulk.credentials.ng', error: 'x' }).fix,
    ).not.toMatch(/A CC v2/);
    expect(PROBLEM_CATALOGUE.CC_CREDENTIALS_UNAVAILABLE({ stage: 'sources.desired', subject: 'cc.creds', error: 'x' }).fix).toBe(
      'is the Cloud Controller connected to this NATS? Otherwise set `sources.desired.credentials: static` with `user` / `password`',
    );
  });
});
