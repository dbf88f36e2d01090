import { describe, expect, it } from 'vitest';
import { DurationError, formatDuration, parseDuration } from './duration.js';

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['10s', 10_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['0.5s', 500],
    ['30', 30_000],
    ['1.5', 1_500],
    [' 2s ', 2_000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it('takes bare numbers as seconds', () => {
    expect(parseDuration(30)).toBe(30_000);
    expect(parseDuration(0.25)).toBe(250);
  });

  it('converts hb with the heartbeat interval, sub-second intervals included', () => {
    expect(parseDuration('3hb', 10_000)).toBe(30_000);
    expect(parseDuration('96hb', 10_000)).toBe(960_000);
    expect(parseDuration('3hb', 200)).toBe(600);
    expect(parseDuration('0.5hb', 10_000)).toBe(5_000);
  });

  it('refuses hb where the heartbeat interval is not known', () => {
    expect(() => parseDuration('3hb')).toThrow(/hb is not allowed here/);
  });

  it.each(['10x', 'fast', '', '-5s', '1e3', '10 s s', 's'])('rejects %j with a clear message', (text) => {
    expect(() => parseDuration(text, 1000)).toThrow(DurationError);
    expect(() => parseDuration(text, 1000)).toThrow(/bad duration/);
  });

  it('rejects negative and non-finite numbers and other types', () => {
    expect(() => parseDuration(-1)).toThrow(/>= 0/);
    expect(() => parseDuration(Number.NaN)).toThrow(DurationError);
    expect(() => parseDuration(true)).toThrow(/expected a string/);
    expect(() => parseDuration(['1s'])).toThrow(/expected a string/);
  });

  it('formats milliseconds back', () => {
    expect(formatDuration(250)).toBe('250ms');
    expect(formatDuration(10_000)).toBe('10s');
    expect(formatDuration(300_000)).toBe('5m');
    expect(formatDuration(7_200_000)).toBe('2h');
  });
});
