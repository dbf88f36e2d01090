/**
 * Decoding inbound messages: size limit, JSON, schema (compiled once). A message that fails is
 * never an exception for the caller: it is a drop with a reason, which intake.ts counts and logs.
 */
import { Ajv, type ValidateFunction } from 'ajv';
import type { Static, TSchema } from '@sinclair/typebox';

export const MAX_MESSAGE_BYTES = 1024 * 1024;

/**
 * A value over a bound of the schema (schemas.ts, MESSAGE_LIMITS) has a reason of its own: it is
 * not malformed, and an operator counting drops wants to tell the two apart.
 */
const BOUND_REASONS: Record<string, string> = { maxLength: 'too_long', maxItems: 'too_many', maxProperties: 'too_many' };

export type Decoded<T> = { ok: true; value: T } | { ok: false; reason: string; detail: string };

const ajv = new Ajv({ allErrors: false, strict: true });
const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface Decoder<S extends TSchema> {
  (data: Uint8Array | string): Decoded<Static<S>>;
}

export function makeDecoder<S extends TSchema>(schema: S, maxBytes = MAX_MESSAGE_BYTES): Decoder<S> {
  const validate: ValidateFunction = ajv.compile(schema);
  return (data) => {
    const size = typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
    if (size > maxBytes) return { ok: false, reason: 'too_large', detail: `${size} bytes, more than ${maxBytes}` };
    let text: string;
    try {
      text = typeof data === 'string' ? data : utf8.decode(data);
    } catch {
      return { ok: false, reason: 'not_utf8', detail: 'the message is not UTF-8 text' };
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return { ok: false, reason: 'bad_json', detail: (err as Error).message };
    }
    if (!validate(value)) {
      const e = validate.errors![0]!;
      const where = `${e.instancePath || '(message)'}${e.propertyName === undefined ? '' : ' (a key)'}`;
      return { ok: false, reason: BOUND_REASONS[e.keyword] ?? 'invalid', detail: `${where} ${e.message ?? 'is invalid'}` };
    }
    return { ok: true, value: value as Static<S> };
  };
}
