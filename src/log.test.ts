import { describe, expect, it } from 'vitest';
import { createLoggerFactory, errorText, isPretty, type LogFormat } from './log.js';

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

  it('with format pretty writes readable lines: level, foundation/component and message, every fact, secrets masked alike', () => {
    const out: string[] = [];
    const f = createLoggerFactory({ foundation: 'eu-1', format: 'pretty', destination: { write: (s: string) => void out.push(s) } });
    f.component('desired').info({ apps: 3, name: 'n1', password: 'p1', cfg: { token: 't1', nested: { client_key: 'k1' } } }, 'fetched');
    f.root.warn('root line');
    f.component('engine').error({ error: 'boom' }, 'failed');
    expect(out).toHaveLength(3);
    for (const line of out) expect(() => JSON.parse(line)).toThrow();
    expect(out[0]).toMatch(/^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] INFO: \[eu-1\/desired\] fetched /);
    expect(out[0]).toContain('"apps":3');
    expect(out[0]).toContain('"name":"n1"');
    expect(out[0]).toContain('"password":"***"');
    expect(out[0]).toContain('"cfg":{"token":"***","nested":{"client_key":"***"}}');
    for (const s of ['p1', 't1', 'k1']) expect(out.join('')).not.toContain(`"${s}"`);
    expect(out[1]).toMatch(/ WARN: \[eu-1\] root line\n$/);
    expect(out[2]).toMatch(/ ERROR: \[eu-1\/engine\] failed \{"error":"boom"\}\n$/);
    expect(out.join('')).not.toContain('\u001b['); // no colours but on a terminal
  });

  it('with format json (and auto, off a terminal) writes the same JSON lines as without a format', () => {
    const run = (format?: LogFormat) => {
      const out: string[] = [];
      const f = createLoggerFactory({ foundation: 'eu-1', format, destination: { write: (s: string) => void out.push(s) } });
      f.component('desired').info({ apps: 3, password: 'p1' }, 'fetched');
      return out.map((l) => l.replace(/"time":"[^"]+"/, '"time":"T"'));
    };
    const json = run('json');
    expect(json).toEqual(['{"level":"info","time":"T","foundation":"eu-1","component":"desired","apps":3,"password":"***","msg":"fetched"}\n']);
    expect(JSON.parse(json[0]!)).toEqual({ level: 'info', time: 'T', foundation: 'eu-1', component: 'desired', apps: 3, password: '***', msg: 'fetched' });
    expect(run(undefined)).toEqual(json);
    expect(run('auto')).toEqual(json);
  });

  it('auto is pretty only on stdout when it is a terminal', () => {
    const was = process.stdout.isTTY;
    try {
      process.stdout.isTTY = true;
      expect(isPretty('auto')).toBe(true);
      expect(isPretty('auto', { write: () => undefined })).toBe(false);
      process.stdout.isTTY = false;
      expect(isPretty('auto')).toBe(false);
      expect(isPretty('pretty')).toBe(true);
      expect(isPretty('json')).toBe(false);
      expect(isPretty(undefined)).toBe(false);
    } finally {
      process.stdout.isTTY = was;
    }
  });

  it('errorText gives the first line of an error, no stack', () => {
    expect(errorText(new Error('first\nsecond'))).toBe('first');
    expect(errorText('plain')).toBe('plain');
  });
});
