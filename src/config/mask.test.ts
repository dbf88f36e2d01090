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
});
