import { describe, expect, it } from 'vitest';
import { ccProblem, etcdRefusal, PROBLEM_CATALOGUE, PROBLEM_CODES, withoutAdvice } from './problems.js';

describe('the problem catalogue and its helpers', () => {
  it('says how to trust the CC certificate and where the URL goes', () => {
    const where = { label: 'CC bulk API', url: 'https://cc', stage: 'sources.desired', urlKey: 'url' as const };
    const tls = ccProblem('the CC certificate for cc is not trusted (SELF_SIGNED_CERT_IN_CHAIN): set …', where, 'network_timeout', 'desired');
    expect(tls.why).toBe('the CC certificate is not trusted (SELF_SIGNED_CERT_IN_CHAIN)');
    expect(tls.fix).toBe('set `sources.desired.ca_file`, or `sources.desired.skip_cert_verify: true` to skip');
    const name = ccProblem(
      'the CC certificate is not valid for cc (ERR_TLS_CERT_ALTNAME_INVALID): put a name the certificate carries in sources.desired.url, or sources.desired.skip_cert_verify: true',
      where,
      'network_timeout',
      'desired',
    );
    expect(name.why).toBe('the CC certificate is not valid for this host name (ERR_TLS_CERT_ALTNAME_INVALID: cc)');
    expect(name.fix).toBe('put a name the certificate carries in `sources.desired.url`, or `sources.desired.skip_cert_verify: true` to skip');
    const notifier = { label: 'CC internal API', url: 'https://cc:9023', stage: 'sinks.cc', urlKey: 'cc_url' as const };
    expect(ccProblem('POST https://cc:9023/x failed: the CC certificate for cc is not trusted (X): …', notifier, 'timeout', 'cc').fix).toBe(
      'set `sinks.cc.ca_file`, or `sinks.cc.skip_cert_verify: true` to skip',
    );
    const refused = ccProblem('connection refused by https://cc (ECONNREFUSED): check sources.desired.url — it must be …', where, 'network_timeout', 'desired');
    expect(refused.why).toBe('connection refused by https://cc (ECONNREFUSED)');
    expect(refused.fix).toBe("check `sources.desired.url` — it must be the Cloud Controller's domain or IP");
  });

  it('says the CC bulk API and its URL once: in `what`, not again in `why`', () => {
    const where = { label: 'CC bulk API', url: 'https://u:***@cc', stage: 'sources.desired', urlKey: 'url' as const };
    const said = (reason: string) => ccProblem(reason, where, 'network_timeout', 'desired').message;
    expect(said('CC bulk API at https://u:***@cc sent a body that is not JSON (Unexpected token) (page 1)')).toBe(
      'CC bulk API at https://u:***@cc: sent a body that is not JSON (Unexpected token) (page 1)',
    );
    expect(said('CC bulk API at https://u:***@cc answered 500 on page 1 (CF-ServerError: An unknown error occurred.)')).toBe(
      'CC bulk API at https://u:***@cc: answered 500 on page 1 (CF-ServerError: An unknown error occurred.)',
    );
    expect(said('timed out: the CC bulk API at https://u:***@cc did not answer within 500ms (sources.desired.network_timeout)')).toBe(
      'CC bulk API at https://u:***@cc: no answer within 500ms (sources.desired.network_timeout)',
    );
    expect(said('HTTP request to the CC bulk API at https://u:***@cc failed (ECONNRESET: socket hang up)')).toBe(
      'CC bulk API at https://u:***@cc: HTTP request failed (ECONNRESET: socket hang up)',
    );
    expect(said('Failed to read HTTP response body from the CC bulk API at https://u:***@cc: aborted')).toBe(
      'CC bulk API at https://u:***@cc: Failed to read HTTP response body: aborted',
    );
  });

  it('cuts the advice from a stage reason', () => {
    expect(withoutAdvice('connection refused by http://x:1 (ECONNREFUSED): check sources.desired.url — it must be')).toBe(
      'connection refused by http://x:1 (ECONNREFUSED)',
    );
    expect(withoutAdvice('answered 500 on page 1')).toBe('answered 500 on page 1');
    expect(withoutAdvice('the CC certificate for cc is not trusted (X): set sources.desired.ca_file, or sources.desired.skip_cert_verify: true')).toBe(
      'the CC certificate for cc is not trusted (X)',
    );
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

describe('counts in the catalogue', () => {
  it('say one in the singular', () => {
    expect(PROBLEM_CATALOGUE.WRONG_FOUNDATION({ desiredApps: 1, heartbeatingApps: 1, stage: 'sources.desired' }).why).toBe(
      'the CC desires 1 app and the agents heartbeat 1 app, but none of the desired apps is heartbeating',
    );
    expect(PROBLEM_CATALOGUE.ACTUAL_COLLAPSE({ silent: 1, total: 1, windowMs: 30_000 }).why).toBe(
      '1 of 1 agent went silent within 30s; their instances are not restarted elsewhere until they return',
    );
    expect(PROBLEM_CATALOGUE.ACTUAL_COLLAPSE({ silent: 2, total: 3, windowMs: 30_000 }).why).toMatch(/^2 of 3 agents went silent/);
  });
});

describe('ETCD_WRITE_REFUSED', () => {
  const refused = (error: string, user?: string) =>
    PROBLEM_CATALOGUE.ETCD_WRITE_REFUSED({ endpoint: 'http://etcd:2379', prefix: '/hmgate', error, cause: etcdRefusal(error), ...(user ? { user } : {}) }).fix;

  it('names the quota only when the database is full', () => {
    expect(refused('etcdserver: mvcc: database space exceeded')).toBe(
      "etcd's database has reached its quota (--quota-backend-bytes): compact and defragment it or raise the quota, then disarm the NOSPACE alarm (`etcdctl alarm disarm`)",
    );
  });

  it('names the credentials or the roles when etcd refused the user', () => {
    for (const error of ['etcdserver: user name is empty', 'user hm could not log in: etcdserver: authentication failed, invalid user ID or password']) {
      expect(refused(error, 'hm')).toBe('set `store.username` / `store.password` to a user etcd knows, with its password');
    }
    expect(refused('etcdserver: permission denied', 'hm')).toBe(
      'give etcd user hm a role that may read and write the keys under /hmgate/ (etcdctl role grant-permission --prefix <role> readwrite /hmgate/), or name another user in `store.username`',
    );
    for (const error of ['etcdserver: user name is empty', 'etcdserver: permission denied']) expect(refused(error)).not.toMatch(/quota|NOSPACE/);
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
