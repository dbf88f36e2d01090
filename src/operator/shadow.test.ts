import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { ShadowComparer } from './shadow.js';

function comparer() {
  let now = 1_000_000;
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
  const c = new ShadowComparer(10_000, logger, () => now);
  return { c, lines, tick: (ms: number) => (now += ms) };
}

describe('ShadowComparer', () => {
  it('pairs equal requests within the window whatever the key order, leaving out message ids', () => {
    const { c, tick } = comparer();
    c.addTheirs('health.start', '{"droplet":"a","indices":[1],"running":{"v":1}}');
    tick(3_000);
    c.addOurs('health.start', '{"running":{"v":1},"indices":[1],"droplet":"a"}');
    c.addOurs('hm9000.start', '{"droplet":"b","message_id":"ours"}');
    c.addTheirs('hm9000.start', '{"droplet":"b","message_id":"theirs"}');
    const s = c.summary();
    expect(s.counts).toEqual({ matched: 2, only_ours: 0, only_theirs: 0 });
    expect(s.recent.map((e) => [e.outcome, e.subject, e.lag_ms])).toEqual([
      ['matched', 'hm9000.start', 0],
      ['matched', 'health.start', 3_000],
    ]);
  });

  it('settles requests left unpaired after the window as one-sided, and logs each once', () => {
    const { c, lines, tick } = comparer();
    c.addOurs('health.start', '{"droplet":"a","indices":[0]}');
    c.addTheirs('health.start', '{"droplet":"a","indices":[1]}');
    c.addTheirs('health.stop', 'not json');
    tick(10_000);
    expect(c.summary().counts).toEqual({ matched: 0, only_ours: 0, only_theirs: 0 }); // at the window: still waiting
    tick(1);
    c.expire();
    c.expire();
    const s = c.summary();
    expect(s.counts).toEqual({ matched: 0, only_ours: 1, only_theirs: 1 });
    expect(s.waiting).toEqual({ ours: 0, theirs: 0 });
    expect(s.unreadable).toBe(1);
    expect(lines.filter((l) => typeof l.shadow === 'string').map((l) => l.msg)).toEqual([
      'shadow: only hmgate would have sent health.start',
      'shadow: only the other health manager sent health.start',
    ]);
  });

  it('does not pair a request with an equal one on another subject or with a different body', () => {
    const { c } = comparer();
    c.addOurs('health.start', '{"droplet":"a","indices":[0]}');
    c.addTheirs('health.stop', '{"droplet":"a","indices":[0]}');
    c.addTheirs('health.start', '{"droplet":"a","indices":[0],"flapping":true}');
    expect(c.summary()).toMatchObject({ counts: { matched: 0 }, waiting: { ours: 1, theirs: 2 } });
  });
});
