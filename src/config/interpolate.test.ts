import { describe, expect, it } from 'vitest';
import { interpolate, interpolateString } from './interpolate.js';

const env = { USER_NAME: 'bulk', PORT: '4222', EMPTY: '' };

describe('interpolation', () => {
  it('replaces ${VAR} and ${VAR:-default}', () => {
    expect(interpolateString('u=${USER_NAME}', env)).toBe('u=bulk');
    expect(interpolateString('${MISSING:-fallback}', env)).toBe('fallback');
    expect(interpolateString('${USER_NAME:-fallback}', env)).toBe('bulk');
    expect(interpolateString('${EMPTY:-d}', env)).toBe('d');
    expect(interpolateString('${MISSING:-}', env)).toBe('');
    expect(interpolateString('a ${USER_NAME} b ${PORT}', env)).toBe('a bulk b 4222');
  });

  it('keeps $${ as a literal ${', () => {
    expect(interpolateString('$${USER_NAME}', env)).toBe('${USER_NAME}');
  });

  it('names an unset variable and how to default it', () => {
    expect(() => interpolateString('${NOPE}', env)).toThrow('environment variable NOPE is not set (write ${NOPE:-default} to give a default)');
  });

  it('rejects malformed references', () => {
    expect(() => interpolateString('${USER_NAME', env)).toThrow(/no closing \}/);
    expect(() => interpolateString('${1BAD}', env)).toThrow(/not a variable name/);
    expect(() => interpolateString('${}', env)).toThrow(/not a variable name/);
  });

  it('walks maps and lists, recording whole interpolated values and errors by pointer', () => {
    const res = interpolate({ bus: { servers: ['nats://${USER_NAME}@h:${PORT}'], port: '${PORT}' }, x: '${NOPE}', 'a/b': '${PORT}' }, env);
    expect(res.value).toEqual({ bus: { servers: ['nats://bulk@h:4222'], port: '4222' }, x: '${NOPE}', 'a/b': '4222' });
    expect([...res.interpolated].sort()).toEqual(['/a~1b', '/bus/port', '/bus/servers/0']);
    expect(res.errors).toEqual([{ pointer: '/x', message: expect.stringContaining('NOPE is not set') }]);
  });
});
