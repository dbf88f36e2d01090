import { describe, expect, it } from 'vitest';
import { shortDuration, stageSummary, type SummaryInput } from './stage-summary.js';

describe('stageSummary', () => {
  it('describes the bus by its servers', () => {
    expect(stageSummary({ id: 'bus', kind: 'bus', plugin: 'nats', options: { servers: ['nats://hm:pw@127.0.0.1:4222'] } })).toBe(
      'bus: NATS at nats://hm:***@127.0.0.1:4222',
    );
  });

  it('describes any other plugin by kind and plain options, secrets left out', () => {
    expect(stageSummary({ id: 'hook', kind: 'sink', plugin: 'webhook', options: { url: 'https://x', token: 't0ps3cret', retries: 3, nested: { a: 1 } } })).toBe(
      'hook: webhook (sink), url https://x, retries 3',
    );
  });

  it('names the stage once when the summary starts with it', () => {
    const definition = { summary: () => 'missing: starts missing instances after 30s' } as unknown as SummaryInput['definition'];
    expect(stageSummary({ id: 'missing', kind: 'policy', plugin: 'missing', definition, options: {} })).toBe('missing: starts missing instances after 30s');
    expect(stageSummary({ id: 'gaps', kind: 'policy', plugin: 'missing', definition, options: {} })).toBe('gaps: missing: starts missing instances after 30s');
  });

  it('writes durations short', () => {
    expect([250, 1000, 1500, 30_000, 90_000, 600_000, 5_760_000, 3_600_000].map(shortDuration)).toEqual([
      '250ms',
      '1s',
      '1.5s',
      '30s',
      '1m30s',
      '10m',
      '1h36m',
      '1h',
    ]);
  });
});
