/**
 * The argument checks every store method makes: a write that fails them throws and changes nothing.
 */
import type { FreshnessKind } from '../sdk/state.js';

export function checkTtl(op: string, ttlMs: number): void {
  if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
    throw new Error(`${op}: ttlMs must be a finite number of milliseconds > 0, got ${String(ttlMs)}`);
  }
}

export function checkString(op: string, what: string, value: unknown): void {
  if (typeof value !== 'string' || value === '') {
    throw new Error(`${op}: ${what} must be a non-empty string, got ${JSON.stringify(value)}`);
  }
}

export function checkArray(op: string, what: string, value: unknown): void {
  if (!Array.isArray(value)) throw new Error(`${op}: ${what} must be an array`);
}

export function checkFreshnessKind(op: string, which: unknown): asserts which is FreshnessKind {
  if (which !== 'actual' && which !== 'desired') {
    throw new Error(`${op}: freshness kind must be "actual" or "desired", got ${JSON.stringify(which)}`);
  }
}
