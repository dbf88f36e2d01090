/**
 * The recorder's verdicts on orders made up here, against a small foundation: each verdict the
 * chaos suite asserts on must be reachable, or a fault test could pass by judging nothing.
 */
import { describe, expect, it } from 'vitest';
import { LiveFoundation, appGuid, appVersion } from '../../src/sim/live-foundation.js';
import { OrderRecorder } from './recorder.js';

/** 2 agents × 3 instances, apps of 3: instance g is app ⌊g/3⌋, index g mod 3, on agent g mod 2. */
function setup(silent: number[] = []) {
  let now = 1_000;
  const f = new LiveFoundation({ agents: 2, instancesPerAgent: 3, instancesPerApp: 3, churn: 0, seed: 1 }, now);
  const r = new OrderRecorder(
    f,
    (d) => silent.includes(d),
    true,
    () => now,
  );
  // The order is heard, judged, then carried out, as the live simulator does.
  const hear = (action: 'start' | 'stop', body: Record<string, unknown>) => {
    r.observe(action, body);
    if (action === 'start') f.start(String(body.droplet), String(body.version), Number(body.instance_index), now);
    else f.stop(String(body.instance_guid));
  };
  const start = (g: number, id: string) => ({
    droplet: appGuid(Math.floor(g / 3)),
    version: appVersion(Math.floor(g / 3)),
    instance_index: g % 3,
    message_id: id,
  });
  return { f, r, hear, start, tick: (ms: number) => (now += ms) };
}

describe('OrderRecorder', () => {
  it('a start for a vanished index is correct once; a second is a duplicate; starts per vanished instance count both', () => {
    const { r, hear, start, tick } = setup();
    r.vanish(4);
    tick(1500);
    hear('start', start(4, 'm1'));
    tick(500);
    hear('start', start(4, 'm2')); // before the obeyed instance could be heard
    expect(r.orders.map((o) => o.verdict)).toEqual(['start', 'duplicate']);
    expect(r.startsFor()).toEqual([{ instance: 4, starts: 2 }]);
  });

  it('the same message id twice is a duplicate', () => {
    const { r, hear, start } = setup();
    r.vanish(1);
    hear('start', start(1, 'm1'));
    hear('start', start(1, 'm1'));
    expect(r.with('duplicate')).toHaveLength(1);
  });

  it('a start for a running index is a start while stale, also when its agent is merely silent', () => {
    const { r, hear, start } = setup([1]);
    hear('start', start(0, 'm1'));
    hear('start', start(1, 'm2')); // agent 1 is silent, its instance runs
    expect(r.orders.map((o) => o.verdict)).toEqual(['stale_start', 'stale_start']);
    expect(r.orders[1]!.why).toContain('(silent)');
  });

  it('an instance brought back out of band: a start for it is stale, and it is no longer counted as vanished', () => {
    const { f, r, hear, start } = setup();
    r.vanish(2);
    f.start(appGuid(0), appVersion(0), 2, 2_000);
    r.restored(2);
    hear('start', start(2, 'm1'));
    expect(r.orders.map((o) => o.verdict)).toEqual(['stale_start']);
    expect(r.startsFor()).toEqual([]);
  });

  it('a start for an undesired app, version or index is a wrong start', () => {
    const { r, hear, start } = setup();
    hear('start', { ...start(0, 'm1'), droplet: 'not-an-app' });
    hear('start', { ...start(0, 'm2'), version: 'old' });
    hear('start', { ...start(0, 'm3'), instance_index: 3 });
    expect(r.with('wrong_start')).toHaveLength(3);
  });

  it('a stop of a running instance is a wrong stop (nothing here is extra); the same stop again is a duplicate', () => {
    const { f, r, hear } = setup();
    const body = { droplet: appGuid(1), version: appVersion(1), instance_guid: f.currentGuid(5), instance_index: 2, message_id: 's1' };
    hear('stop', body);
    hear('stop', { ...body, message_id: 's2' });
    expect(r.orders.map((o) => o.verdict)).toEqual(['wrong_stop', 'duplicate']);
    expect(r.orders[0]!.why).toContain('desired, needed instance');
  });

  it('a start the foundation did not carry out may be sent again (a resend, not a duplicate)', () => {
    let now = 0;
    const f = new LiveFoundation({ agents: 2, instancesPerAgent: 3, instancesPerApp: 3, churn: 0, seed: 1 }, now);
    const r = new OrderRecorder(
      f,
      () => false,
      false,
      () => now,
    );
    r.vanish(3);
    r.observe('start', { droplet: appGuid(1), version: appVersion(1), instance_index: 0, message_id: 'a' });
    now += 5_000;
    r.observe('start', { droplet: appGuid(1), version: appVersion(1), instance_index: 0, message_id: 'b' });
    expect(r.orders.map((o) => o.verdict)).toEqual(['start', 'resend']);
  });
});
