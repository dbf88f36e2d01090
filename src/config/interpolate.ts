/**
 * `${VAR}` and `${VAR:-default}` from the environment, in every string of the config. `$${` writes
 * a literal `${`. Errors name the variable and point at the string that used it.
 */
import { isPlainObject } from './merge.js';

export class InterpolationError extends Error {}

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function interpolateString(s: string, env: NodeJS.ProcessEnv): string {
  let out = '';
  let i = 0;
  while (i < s.length) {
    if (s.startsWith('$${', i)) {
      out += '${';
      i += 3;
      continue;
    }
    if (!s.startsWith('${', i)) {
      out += s[i++];
      continue;
    }
    const end = s.indexOf('}', i + 2);
    if (end < 0) throw new InterpolationError(`bad \${…} in "${s}": no closing }`);
    const body = s.slice(i + 2, end);
    const sep = body.indexOf(':-');
    const name = sep >= 0 ? body.slice(0, sep) : body;
    if (!NAME.test(name)) throw new InterpolationError(`bad \${${body}}: "${name}" is not a variable name (letters, digits, _)`);
    const value = env[name];
    if (value !== undefined && value !== '') out += value;
    else if (sep >= 0) out += body.slice(sep + 2);
    else throw new InterpolationError(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
    i = end + 1;
  }
  return out;
}

export interface InterpolationResult {
  value: unknown;
  /** Pointers whose whole value came from interpolation (so "5" may stand for 5). */
  interpolated: Set<string>;
  errors: { pointer: string; message: string }[];
}

export function interpolate(value: unknown, env: NodeJS.ProcessEnv): InterpolationResult {
  const interpolated = new Set<string>();
  const errors: InterpolationResult['errors'] = [];
  const escape = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');
  const walk = (v: unknown, ptr: string): unknown => {
    if (typeof v === 'string' && v.includes('${')) {
      try {
        const out = interpolateString(v, env);
        if (out !== v) interpolated.add(ptr);
        return out;
      } catch (err) {
        errors.push({ pointer: ptr, message: (err as Error).message });
        return v;
      }
    }
    if (Array.isArray(v)) return v.map((item, i) => walk(item, `${ptr}/${i}`));
    if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, walk(item, `${ptr}/${escape(k)}`)]));
    return v;
  };
  return { value: walk(value, ''), interpolated, errors };
}
