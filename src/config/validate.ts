/**
 * Schema validation with ajv (allErrors, defaults filled in, no unknown keys) and the translation
 * of every ajv error into a sentence about the key or value at fault. Durations are checked and
 * converted to milliseconds by the `x-duration` keyword; `hb` is converted with the config's
 * heartbeat interval.
 */
import { Ajv, type ErrorObject, type SchemaValidateFunction, type ValidateFunction } from 'ajv';
import type { TSchema } from '@sinclair/typebox';
import { parseDuration } from './duration.js';
import { parsePointer } from './source.js';

export interface SchemaProblem {
  /** JSON pointer of the value at fault. */
  pointer: string;
  /** Whether the problem is about the key itself (unknown key) rather than its value. */
  atKey: boolean;
  message: string;
}

export interface ValidatorOptions {
  heartbeatMs: number;
  /** false keeps durations as written (print-config); true converts them to milliseconds. */
  convertDurations: boolean;
}

export function makeValidator(opts: ValidatorOptions) {
  const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true, verbose: true });
  // ajv reads a keyword's errors from its validate function's `errors` property.
  const check: SchemaValidateFunction = (
    mode: unknown,
    data: unknown,
    _schema: unknown,
    cxt?: { parentData: Record<string | number, unknown>; parentDataProperty: string | number },
  ) => {
    try {
      const ms = parseDuration(data, mode === 'no-hb' ? undefined : opts.heartbeatMs);
      if (opts.convertDurations && cxt) cxt.parentData[cxt.parentDataProperty] = ms;
      return true;
    } catch (err) {
      check.errors = [{ keyword: 'x-duration', message: (err as Error).message, params: {} }];
      return false;
    }
  };
  ajv.addKeyword({
    keyword: 'x-duration',
    type: ['string', 'number'],
    modifying: true,
    errors: true,
    validate: check,
  });
  const compiled = new WeakMap<object, ValidateFunction>();
  return {
    /** Validates (and mutates: defaults, durations) `data`; returns the problems found. */
    validate(schema: TSchema, data: unknown, base = ''): SchemaProblem[] {
      let fn = compiled.get(schema);
      if (!fn) {
        fn = ajv.compile(schema);
        compiled.set(schema, fn);
      }
      if (fn(data)) return [];
      return describeErrors(fn.errors ?? [], data, base);
    },
  };
}

function dotted(ptr: string): string {
  return parsePointer(ptr).join('.') || '(top level)';
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'string') return `the string "${v.length > 40 ? v.slice(0, 37) + '…' : v}"`;
  return `${typeof v} ${String(v)}`;
}

function valueAt(data: unknown, ptr: string): unknown {
  let v: unknown = data;
  for (const part of parsePointer(ptr)) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(word.length / 4)) + 1;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}

function describeErrors(errors: ErrorObject[], data: unknown, base: string): SchemaProblem[] {
  // An anyOf reports each failed branch as well; keep only the anyOf's own error for that value.
  const anyOfPaths = new Set(errors.filter((e) => e.keyword === 'anyOf').map((e) => e.instancePath));
  const out: SchemaProblem[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    if (e.keyword !== 'anyOf' && anyOfPaths.has(e.instancePath) && e.schemaPath.includes('/anyOf/')) continue;
    const ptr = base + e.instancePath;
    const where = dotted(ptr);
    let problem: SchemaProblem;
    switch (e.keyword) {
      case 'additionalProperties': {
        const key = String((e.params as { additionalProperty: string }).additionalProperty);
        const parent = e.parentSchema as { properties?: object; patternProperties?: object };
        const known = Object.keys(parent?.properties ?? {});
        if (parent?.patternProperties && known.length === 0) {
          problem = {
            pointer: `${ptr}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`,
            atKey: true,
            message: `"${key}" is not a valid name in ${where}: use letters, digits, _ and -, starting with a letter`,
          };
          break;
        }
        const hint = closest(key, known);
        const inWhat = e.instancePath === '' && base === '' ? '' : ` in ${where}`;
        problem = {
          pointer: `${ptr}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`,
          atKey: true,
          message: `unknown key "${key}"${inWhat}${hint ? ` (did you mean "${hint}"?)` : known.length ? ` (known keys: ${known.join(', ')})` : ''}`,
        };
        break;
      }
      case 'required': {
        const key = String((e.params as { missingProperty: string }).missingProperty);
        problem = { pointer: ptr, atKey: true, message: `missing required key "${key}"${ptr ? ` in ${where}` : ''}` };
        break;
      }
      case 'type': {
        const expected = String((e.params as { type: string | string[] }).type).replace(',', ' or ');
        const noun = expected === 'object' ? 'a map' : expected === 'array' ? 'a list' : expected;
        problem = { pointer: ptr, atKey: false, message: `${where} must be ${noun}, not ${typeName(valueAt(data, e.instancePath))}` };
        break;
      }
      case 'enum': {
        const allowed = (e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ');
        problem = { pointer: ptr, atKey: false, message: `${where} must be one of ${allowed}, not ${typeName(valueAt(data, e.instancePath))}` };
        break;
      }
      case 'x-duration':
        problem = { pointer: ptr, atKey: false, message: `${where}: ${e.message}` };
        break;
      case 'anyOf':
        problem = { pointer: ptr, atKey: false, message: `${where} does not match any allowed form` };
        break;
      default:
        problem = { pointer: ptr, atKey: false, message: `${where} ${e.message ?? 'is invalid'}` };
    }
    const id = `${problem.pointer}|${problem.message}`;
    if (!seen.has(id)) {
      seen.add(id);
      out.push(problem);
    }
  }
  return out;
}
