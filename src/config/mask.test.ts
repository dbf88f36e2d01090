import { describe, expect, it } from 'vitest';
import { isSecretKey, maskSecrets, maskUrl } from './mask.js';

describe('secret masking', () => {
  it('recognises secret keys', () => {
    for (const k of ['password', 'secret', 'token', 'api_key', 'private_key', 'cc_auth_password', 'PASSWORD']) expect(isSecretKey(k)).toBe(true);
    for (const k of ['user', 'key_file', 'keep_alive', 'passwords_enabled', 'tokenizer']) expect(isSecretKey(k)).toBe(false);
  });

  it('masks nested secrets and leaves the rest', () => {
    const masked = maskSecrets({
      api: { user: 'magnet', password: 'orangutan4sale' },
      sources: { desired: { url: 'https://cc', password: 's3cret', tls: [{ client_key: 'PEM' }] } },
      bus: { token: '', servers: ['nats://a'] },
    });
    expect(masked).toEqual({
      api: { user: 'magnet', password: '***' },
      sources: { desired: { url: 'https://cc', password: '***', tls: [{ client_key: '***' }] } },
      bus: { token: '', servers: ['nats://a'] },
    });
  });

  it('masks passwords inside URLs', () => {
    expect(maskUrl('nats://nats:s3cret@127.0.0.1:4222')).toBe('nats://nats:***@127.0.0.1:4222');
    expect(maskUrl('nats://127.0.0.1:4222')).toBe('nats://127.0.0.1:4222');
    expect(maskUrl('https://bulk_api:p%40ss@cc.example.com/bulk')).toBe('https://bulk_api:***@cc.example.com/bulk');
  });

  it('masks a token (a user without a password) and passwords with unencoded / ? # @', () => {
    expect(maskUrl('nats://s3cret-token@127.0.0.1:4222')).toBe('nats://***@127.0.0.1:4222');
    for (const pw of ['s3c/ret', 's3c?ret', 's3c#ret', 's3c@ret', 's3c:ret']) {
      const masked = maskUrl(`nats://nats:${pw}@127.0.0.1:4222`);
      expect(masked).toBe('nats://nats:***@127.0.0.1:4222');
    }
  });

  it('masks every URL inside a longer text, and leaves the rest', () => {
    expect(maskUrl('cannot connect to nats://a:s3cret1@h1:4222, tls://b:s3cret2@h2:4222 (refused)')).toBe(
      'cannot connect to nats://a:***@h1:4222, tls://b:***@h2:4222 (refused)',
    );
    expect(maskUrl('nats://a:s3cret1@h1:4222,nats://b:s3cret2@h2:4222')).toBe('nats://a:***@h1:4222,nats://b:***@h2:4222');
    expect(maskUrl('{"url":"http://u:s3cret@h/x","mail":"ops@example.com"}')).toBe('{"url":"http://u:***@h/x","mail":"ops@example.com"}');
    expect(maskUrl('no url here, ops@example.com')).toBe('no url here, ops@example.com');
    expect(maskUrl(maskUrl('nats://a:s3cret@h'))).toBe('nats://a:***@h');
  });

  it('masks URLs with credentials in any string of the config, under any key', () => {
    expect(
      maskSecrets({
        bus: { servers: ['nats://n:s3cret1@h:4222', 'nats://tok3n@h2:4222'], monitor_url: 'http://m:s3cret2@h:8222' },
        store: { endpoints: ['https://root:s3cret3@etcd:2379'] },
        sinks: { cc: { cc_url: 'https://cc:s3cret4@cc.example.com', headers: { note: 'see https://x:s3cret5@wiki' } } },
      }),
    ).toEqual({
      bus: { servers: ['nats://n:***@h:4222', 'nats://***@h2:4222'], monitor_url: 'http://m:***@h:8222' },
      store: { endpoints: ['https://root:***@etcd:2379'] },
      sinks: { cc: { cc_url: 'https://cc:***@cc.example.com', headers: { note: 'see https://x:***@wiki' } } },
    });
  });
});
