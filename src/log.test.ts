import { describe, expect, it } from 'vitest';
import { createLoggerFactory, errorText } from './log.js';

function capture(level: 'info' | 'warn', levels: Record<string, 'debug' | 'info' | 'error'> = {}) {
  const lines: Record<string, unknown>[] = [];
  const f = createLoggerFactory({ foundation: 'eu-1', level, levels, destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  return { f, lines };
}

describe('logger factory', () => {
  it('puts component and foundation on every line, with the level as a word', () => {
    const { f, lines } = capture('info');
    f.component('desired').info({ apps: 3 }, 'fetched');
    expect(lines).toEqual([expect.objectContaining({ level: 'info', component: 'desired', foundation: 'eu-1', apps: 3, msg: 'fetched' })]);
    expect(typeof lines[0]!.time).toBe('string');
  });

  it('applies per-component levels over the global one', () => {
    const { f, lines } = capture('warn', { desired: 'debug', bus: 'error' });
    f.component('desired').debug('d1');
    f.component('engine').info('e1');
    f.component('engine').warn('e2');
    f.component('bus').warn('b1');
    f.component('bus').error('b2');
    expect(lines.map((l) => `${l.component}:${l.msg}`)).toEqual(['desired:d1', 'engine:e2', 'bus:b2']);
  });

  it('censors secrets in logged objects, nested ones included', () => {
    const { f, lines } = capture('info');
    f.component('api').info({ password: 'p1', cfg: { token: 't1', nested: { secret: 's1', client_key: 'k1' } }, user: 'magnet' }, 'config');
    const text = JSON.stringify(lines);
    for (const s of ['p1', 't1', 's1', 'k1']) expect(text).not.toContain(`"${s}"`);
    expect(lines[0]).toMatchObject({ password: '***', cfg: { token: '***', nested: { secret: '***', client_key: '***' } }, user: 'magnet' });
  });

  it('errorText gives the first line of an error, no stack', () => {
    expect(errorText(new Error('first\nsecond'))).toBe('first');
    expect(errorText('plain')).toBe('plain');
  });
});
