/**
 * flapping: crash accounting (docs/ruby-hm.md#crash-accounting, #crashes-in-the-older-design), the
 * flapping policy and back-off (#flapping-back-off), the timeline of #a-flapping-instance driven through droplet-records, flapping and exit-restarts in preset order,
 * on virtual time with an injected random.
 */
import { describe, expect, it } from 'vitest';
import { makeValidator } from '../../src/config/validate.js';
import { DropletRegistry, getInstance, setDesiredState, type Droplet, type DropletRequest, type InstanceRecord } from '../../src/sdk/droplets.js';
import type { AppEvent, Delivery, EventDecision, EventPolicyStage } from '../../src/sdk/events.js';
import { stageSummary } from '../../src/operator/stage-summary.js';
import { makeStageContext } from '../../test/helpers/stage-context.js';
import { DEFAULT_DROPLET_RECORDS, DropletRecords, type DropletRecordsConfig } from '../droplet-records/index.js';
import { exitRestart } from '../exit-restarts/index.js';
import plugin, { countCrash, DEFAULT_FLAPPING, Flapping, flappingDelay, givenUp, type FlappingConfig } from './index.js';

const T0 = 1_700_000_000_000;
/** Agent seconds at HM time t (the premise of docs/ruby-hm.md#a-flapping-instance: crash timestamps equal HM time). */
const S0 = T0 / 1000;
const YAML: FlappingConfig = { ...DEFAULT_FLAPPING, delay_time_noise: 10_000 };
const OLDER_RECORDS: DropletRecordsConfig = { duplicates: 'instance-mismatch', heartbeat_stop_list: 'kept-until-analysis', exit_markdown: 'state-only' };
const OLDER_FLAPPING: FlappingConfig = { ...YAML, crash_count_reset: 'age-of-last-crash', pending_restart: 'per-index', crash_fills_guid: true };

interface Sent {
  t: number;
  reason: string;
  delivery: Delivery;
  request: DropletRequest;
}

/**
 * The event path in miniature: the three policies in preset order over one record, decisions
 * carried out as the engine does (timers due after their delay, back to the policy that set them).
 */
class Harness {
  readonly t = makeStageContext({ id: 'flapping', startMs: T0 });
  readonly registry = new DropletRegistry();
  readonly d: Droplet;
  readonly sent: Sent[] = [];
  readonly timers = new Map<string, { due: number; stage: EventPolicyStage; delayMs: number; data: Record<string, unknown> }>();
  random = 0.5;
  private readonly stages: EventPolicyStage[];

  constructor(flapping: FlappingConfig = YAML, records: DropletRecordsConfig = DEFAULT_DROPLET_RECORDS) {
    this.stages = [
      new DropletRecords(records, this.t.ctx),
      new Flapping(flapping, this.t.ctx),
      { events: ['exit'], handle: (i) => (i.event.kind === 'exit' ? exitRestart(i.droplet as Droplet, i.event, { priority: 1_000_000 }) : []) },
    ];
    this.d = this.registry.get('B', T0);
    setDesiredState(this.d, { guid: 'B', version: 'v', instances: 1, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, T0);
  }

  get now(): number {
    return this.t.clock.now();
  }

  /** Moves to HM second t, firing the timers due on the way, in due order. */
  at(t: number): void {
    const target = T0 + t * 1000;
    for (;;) {
      const next = [...this.timers.entries()].filter(([, x]) => x.due <= target).sort((a, b) => a[1].due - b[1].due)[0];
      if (!next) break;
      const [id, timer] = next;
      this.timers.delete(id);
      this.t.clock.advanceTo(timer.due);
      this.apply(timer.stage, timer.stage.handle({ event: { kind: 'timer', app: 'B', id, data: timer.data }, droplet: this.d, now: this.now, env: this.env }));
    }
    this.t.clock.advanceTo(target);
  }

  readonly env = { desiredAvailable: true, busConnected: true, random: () => this.random };

  emit(event: AppEvent, only?: EventPolicyStage): void {
    for (const stage of this.stages) {
      if (only && stage !== only) continue;
      if (!stage.events.includes(event.kind)) continue;
      this.apply(stage, stage.handle({ event, droplet: this.d, now: this.now, env: this.env }));
    }
  }

  private apply(stage: EventPolicyStage, decisions: EventDecision[]): void {
    for (const x of decisions) {
      if (x.kind === 'request') this.sent.push({ t: (this.now - T0) / 1000, reason: x.reason, delivery: x.delivery, request: x.request });
      else if (x.kind === 'timer') this.timers.set(x.id, { due: this.now + x.delayMs, stage, delayMs: x.delayMs, data: x.data });
      else if (x.kind === 'cancel-timer') this.timers.delete(x.id);
    }
  }

  beat(instance: string, state = 'RUNNING', index = 0, version = 'v'): void {
    this.emit({
      kind: 'heartbeat',
      app: 'B',
      agent: 'dea',
      beat: { app: 'B', version, instance, index, state, stateTimestamp: S0 + (this.now - T0) / 1000, agent: 'dea' },
    });
  }

  exit(instance: string, reason: string, index = 0, version = 'v', crashTimestamp: number | null = S0 + (this.now - T0) / 1000): void {
    this.emit({ kind: 'exit', app: 'B', version, instance, index, reason, ...(crashTimestamp === null ? {} : { crashTimestamp }) });
  }

  missing(index = 0, chatty = false): void {
    this.emit({ kind: 'missing', app: 'B', index, version: this.d.liveVersion, chatty });
  }

  take(): Sent[] {
    return this.sent.splice(0);
  }

  record(index = 0, version = 'v'): InstanceRecord {
    return getInstance(this.d, index, version);
  }

  /** Delays (s) of the pending timers. */
  pendingDelays(): number[] {
    return [...this.timers.values()].map((x) => x.delayMs / 1000);
  }

  logged(re: RegExp): boolean {
    return this.t.logs.some((l) => re.test(String(l.msg)));
  }
}

const crashStart = (t: number) => ({
  t,
  reason: 'CRASHED',
  delivery: { queue: 1 },
  request: expect.objectContaining({ op: 'START', indices: [0], flapping: false, version: 'v' }),
});
const flappingStart = (t: number) => ({
  t,
  reason: 'FLAPPING',
  delivery: 'now',
  request: expect.objectContaining({ op: 'START', indices: [0], flapping: true, version: 'v' }),
});

describe('crash accounting (docs/ruby-hm.md#crash-accounting)', () => {
  const rec = (): InstanceRecord => ({
    index: 0,
    version: 'v',
    state: 'RUNNING',
    stateTimestamp: null,
    guid: 'g',
    lastHeartbeatMs: null,
    crashCount: 0,
    lastCrashTimestamp: null,
    pendingRestart: null,
    guidStream: [],
  });

  it('1st crash CRASHED, 2nd within 500 s FLAPPING (strict >: exactly 500 s still counts)', () => {
    const inst = rec();
    countCrash(inst, 1000, T0, DEFAULT_FLAPPING);
    expect([inst.crashCount, inst.state]).toEqual([1, 'CRASHED']);
    countCrash(inst, 1500, T0, DEFAULT_FLAPPING);
    expect([inst.crashCount, inst.state, inst.lastCrashTimestamp]).toEqual([2, 'FLAPPING', 1500]);
  });

  it('a crash more than 500 s after the previous one counts as 1 again (consecutive agent timestamps)', () => {
    const inst = rec();
    countCrash(inst, 1000, T0, DEFAULT_FLAPPING);
    countCrash(inst, 1400, T0, DEFAULT_FLAPPING);
    countCrash(inst, 1901, T0, DEFAULT_FLAPPING);
    expect([inst.crashCount, inst.state]).toEqual([1, 'CRASHED']);
  });

  it('flapping_death 0 flaps at the first crash; 3 at the fourth', () => {
    const a = rec();
    countCrash(a, 1, T0, { ...DEFAULT_FLAPPING, flapping_death: 0 });
    expect(a.state).toBe('FLAPPING');
    const b = rec();
    for (let i = 1; i <= 4; i++) countCrash(b, i, T0, { ...DEFAULT_FLAPPING, flapping_death: 3 });
    expect([b.crashCount, b.state]).toEqual([4, 'FLAPPING']);
  });

  it('the older rule (docs/ruby-hm.md#crashes-in-the-older-design): the stored agent timestamp against HM now, not the gap between crashes', () => {
    const P = { ...DEFAULT_FLAPPING, crash_count_reset: 'age-of-last-crash' as const };
    // The agent's clock is behind: its crashes are 1 s apart, but the last one is 600 s old by HM time.
    const p = rec();
    countCrash(p, S0 - 601, T0, P);
    countCrash(p, S0 - 600, T0, P);
    expect([p.crashCount, p.state]).toEqual([1, 'CRASHED']);
    const h = rec();
    countCrash(h, S0 - 601, T0, DEFAULT_FLAPPING);
    countCrash(h, S0 - 600, T0, DEFAULT_FLAPPING);
    expect([h.crashCount, h.state]).toEqual([2, 'FLAPPING']);
    // The other way round: 900 s between agent timestamps, but the last is recent by HM time.
    const q = rec();
    countCrash(q, S0 - 100, T0, P);
    countCrash(q, S0 + 800, T0, P);
    expect(q.crashCount).toBe(2);
    // Exactly 500 s old is not older (strict), and no reset before the first crash.
    const r = rec();
    countCrash(r, S0 - 500, T0, P);
    countCrash(r, S0, T0, P);
    expect(r.crashCount).toBe(2);
  });
});

describe('delays and give-up (docs/ruby-hm.md#flapping-back-off)', () => {
  it('60/120/240/480 s, capped, with random 0.5 (no noise)', () => {
    expect([2, 3, 4, 5, 6, 9].map((c) => flappingDelay(c, 0.5, DEFAULT_FLAPPING) / 1000)).toEqual([60, 120, 240, 480, 480, 480]);
  });

  it('noise is 2 × (random − 0.5) × delay_time_noise: uniform in [−noise, +noise)', () => {
    expect(flappingDelay(2, 0, YAML)).toBe(50_000);
    expect(flappingDelay(2, 0.75, YAML)).toBe(65_000);
    expect(flappingDelay(3, 0.999, DEFAULT_FLAPPING)).toBeCloseTo(124_990, 6);
  });

  it('never below 0, and a huge crash count stays at the cap', () => {
    expect(flappingDelay(2, 0, { ...YAML, min_restart_delay: 2_000 })).toBe(0);
    expect(flappingDelay(5_000, 0.5, DEFAULT_FLAPPING)).toBe(480_000);
    expect(flappingDelay(9, 0.5, { ...DEFAULT_FLAPPING, min_restart_delay: 0 })).toBe(0);
  });

  it('gives up above giveup_crash_number; 0 or less never', () => {
    expect([givenUp(4, 4), givenUp(5, 4), givenUp(100, 0), givenUp(100, -1)]).toEqual([false, true, false, false]);
  });
});

describe('a flapping instance, docs/ruby-hm.md#a-flapping-instance (one index, crash timestamps = HM time, noise ±10 s)', () => {
  type Row = { t: number; do?: (h: Harness) => void; sent?: Sent[]; count?: [number, string]; timer?: number[] };
  const beat = (g: string) => (h: Harness) => h.beat(g);
  const crash = (g: string) => (h: Harness) => h.exit(g, 'CRASHED');
  const timeline: Row[] = [
    { t: 90, do: beat('g1'), count: [0, 'RUNNING'] },
    { t: 100, do: crash('g1'), sent: [crashStart(100) as unknown as Sent], count: [1, 'CRASHED'], timer: [] },
    { t: 110, do: beat('g2'), count: [1, 'RUNNING'] },
    { t: 150, do: crash('g2'), sent: [], count: [2, 'FLAPPING'], timer: [60] },
    { t: 209, sent: [] },
    { t: 210, sent: [flappingStart(210) as unknown as Sent], timer: [] },
    { t: 220, do: beat('g3'), count: [2, 'RUNNING'] },
    { t: 260, do: crash('g3'), count: [3, 'FLAPPING'], timer: [120] },
    { t: 380, sent: [flappingStart(380) as unknown as Sent] },
    { t: 390, do: beat('g4') },
    { t: 400, do: crash('g4'), count: [4, 'FLAPPING'], timer: [240] },
    { t: 640, sent: [flappingStart(640) as unknown as Sent] },
    { t: 650, do: beat('g5') },
    { t: 660, do: crash('g5'), sent: [], count: [5, 'FLAPPING'], timer: [] },
    { t: 700, do: (h) => h.missing(), sent: [], timer: [] },
    { t: 740, do: (h) => h.missing(), sent: [], timer: [] },
  ];

  it.each(['per-instance', 'per-index'] as const)('starts, delays 60/120/240, gives up at the 5th crash (%s)', (pending) => {
    const h = new Harness({ ...YAML, pending_restart: pending });
    for (const row of timeline) {
      h.at(row.t);
      row.do?.(h);
      expect(h.take(), `sent at t=${row.t}`).toEqual(row.sent ?? []);
      if (row.count) expect([h.record().crashCount, h.record().state], `record at t=${row.t}`).toEqual(row.count);
      if (row.timer) expect(h.pendingDelays(), `timers at t=${row.t}`).toEqual(row.timer);
    }
    expect(h.logged(/^given up on restarting: app_id=B index=0$/)).toBe(true);
    expect(h.t.logs.filter((l) => /given up/.test(String(l.msg)))).toHaveLength(1); // the missing checks stay silent
    expect([...h.d.crashes.keys()]).toEqual(['g1', 'g2', 'g3', 'g4', 'g5']);
    expect(h.d.crashes.get('g5')).toEqual({ timestampMs: T0 + 660_000, crashTimestamp: S0 + 660 });
  });

  it('with noise: random 0.9 moves the first delay to 68 s', () => {
    const h = new Harness();
    h.random = 0.9;
    h.at(90);
    h.beat('g1');
    h.at(100);
    h.exit('g1', 'CRASHED');
    h.at(110);
    h.beat('g2');
    h.at(150);
    h.exit('g2', 'CRASHED');
    expect(h.pendingDelays()[0]).toBeCloseTo(68, 9);
    h.take();
    h.at(217);
    expect(h.take()).toEqual([]);
    h.at(218);
    expect(h.take()).toEqual([flappingStart(218)]);
  });

  it('a 5th crash more than 500 s after the 4th resets the count: CRASHED, queued low start at once', () => {
    const h = new Harness();
    for (const row of timeline.filter((r) => r.t <= 650)) {
      h.at(row.t);
      row.do?.(h);
    }
    h.take();
    h.at(901);
    h.exit('g5', 'CRASHED');
    expect(h.take()).toEqual([crashStart(901)]);
    expect([h.record().crashCount, h.record().state]).toEqual([1, 'CRASHED']);
  });
});

describe('flapping policy details', () => {
  const flapOnce = (h: Harness, version = 'v', g = 'g1') => {
    h.beat(g, 'RUNNING', 0, version);
    h.exit(g, 'CRASHED', 0, version);
    h.at((h.now - T0) / 1000 + 10);
    h.beat(g + 'x', 'RUNNING', 0, version);
    h.exit(g + 'x', 'CRASHED', 0, version);
  };

  it('the crash lookup uses the message version; starts carry the live version and the running map (versions with records) at send time (docs/ruby-hm.md#crash-accounting)', () => {
    const h = new Harness();
    h.beat('old', 'RUNNING', 0, 'v0');
    h.exit('old', 'CRASHED', 0, 'v0');
    expect(h.d.versions.get('v0')!.get(0)).toMatchObject({ crashCount: 1, state: 'CRASHED' });
    expect(h.d.versions.get('v')?.get(0)?.crashCount ?? 0).toBe(0);
    expect(h.take()).toEqual([crashStart(0)]);

    const k = new Harness();
    flapOnce(k);
    expect(k.pendingDelays()).toEqual([60]);
    k.at(30);
    k.beat('other', 'RUNNING', 0, 'v'); // the record runs again before the timer fires
    setDesiredState(k.d, { guid: 'B', version: 'v2', instances: 1, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-08-01 00:00:00 +0000' }, k.now);
    k.take();
    k.at(70);
    const [start] = k.take();
    expect(start).toMatchObject({
      t: 70,
      reason: 'FLAPPING',
      delivery: 'now',
      request: { op: 'START', version: 'v2', indices: [0], flapping: true, running: { v: 1 }, lastUpdated: 1_375_315_200 },
    });
    expect(k.record().pendingRestart).toBeNull();
  });

  it('a pending restart blocks another; a missing FLAPPING index re-arms the same delay silently', () => {
    const h = new Harness();
    flapOnce(h);
    expect(h.pendingDelays()).toEqual([60]);
    h.missing(0, false);
    expect(h.pendingDelays()).toEqual([60]);
    h.at(80);
    expect(h.take().map((s) => s.reason)).toEqual(['CRASHED', 'FLAPPING']);
    const logs = h.t.logs.length;
    h.missing(0, false);
    expect(h.pendingDelays()).toEqual([60]);
    expect(h.t.logs.length).toBe(logs + 1); // the delay line only
  });

  it('a missing event for an index that is not FLAPPING does nothing', () => {
    const h = new Harness();
    h.beat('g1');
    h.exit('g1', 'CRASHED');
    h.take();
    h.missing(0, false);
    expect(h.pendingDelays()).toEqual([]);
    expect(h.take()).toEqual([]);
  });

  it('droplet.updated cancels pending restarts of indices 0..instances inclusive, live version only (per instance)', () => {
    const h = new Harness();
    setDesiredState(h.d, { guid: 'B', version: 'v', instances: 2, state: 'STARTED', packageState: 'STAGED', updatedAt: '2013-07-31 22:00:00 +0000' }, h.now);
    for (const i of [0, 2, 3]) getInstance(h.d, i, 'v').pendingRestart = `p${i}`;
    getInstance(h.d, 0, 'old').pendingRestart = 'pold';
    const flapping = new Flapping(YAML, h.t.ctx);
    const out = flapping.handle({ event: { kind: 'updated', app: 'B' }, droplet: h.d, now: h.now, env: h.env });
    expect(out).toEqual([
      { kind: 'cancel-timer', id: 'p0' },
      { kind: 'cancel-timer', id: 'p2' },
    ]);
    expect([0, 1, 2, 3].map((i) => getInstance(h.d, i, 'v').pendingRestart)).toEqual([null, null, null, 'p3']);
    expect(getInstance(h.d, 0, 'old').pendingRestart).toBe('pold');
  });

  it('droplet.updated cancels every pending restart (per index), and the timer does not fire', () => {
    const h = new Harness(OLDER_FLAPPING, OLDER_RECORDS);
    flapOnce(h);
    h.d.pendingRestarts.set(5, 'far');
    h.emit({ kind: 'updated', app: 'B' });
    expect(h.d.pendingRestarts.size).toBe(0);
    expect(h.pendingDelays()).toEqual([]);
    h.take();
    h.at(200);
    expect(h.take()).toEqual([]);
  });

  it('per index: a pending restart at an index blocks the flapping policy of every version there', () => {
    const h = new Harness(OLDER_FLAPPING, OLDER_RECORDS);
    flapOnce(h, 'v0', 'a');
    expect(h.pendingDelays()).toEqual([60]);
    flapOnce(h, 'v', 'b');
    expect(h.record().state).toBe('FLAPPING');
    expect(h.pendingDelays()).toEqual([60]);
    expect(h.d.pendingRestarts.size).toBe(1);
  });

  it('a CRASHED exit without crash_timestamp counts nothing and sends nothing (after the mark-down)', () => {
    const h = new Harness();
    h.beat('g1');
    h.exit('g1', 'CRASHED', 0, 'v', null);
    expect(h.take()).toEqual([]);
    expect(h.record()).toMatchObject({ state: 'DOWN', crashCount: 0 });
    expect(h.logged(/without crash_timestamp/)).toBe(true);
  });

  it('crash records are keyed by the record guid; crash_fills_guid gives an empty record the exited guid', () => {
    const h = new Harness();
    h.exit('never-seen', 'CRASHED', 1);
    expect(h.record(1).guid).toBeNull();
    expect([...h.d.crashes.keys()]).toEqual(['never-seen']);
    const p = new Harness({ ...YAML, crash_fills_guid: true });
    p.exit('never-seen', 'CRASHED', 1);
    expect(p.record(1).guid).toBe('never-seen');
    const m = new Harness();
    m.beat('a');
    m.exit('b', 'CRASHED');
    expect([...m.d.crashes.keys()]).toEqual(['a']);
    expect(m.logged(/unexpected instance_id: b, desired: a/)).toBe(true);
  });

  it('bad or unknown exit reasons and other exits start nothing here', () => {
    const h = new Harness();
    h.beat('g1');
    for (const reason of ['STOPPED', 'BOGUS', '']) h.exit('g1', reason);
    expect(h.take()).toEqual([]);
    expect(h.record().crashCount).toBe(0);
  });
});

describe('flapping options', () => {
  const validate = (raw: Record<string, unknown>) => {
    const data = { ...raw };
    const problems = makeValidator({ heartbeatMs: 10_000, convertDurations: true }).validate(plugin.optionsSchema, data);
    return { problems: problems.map((p) => p.message), data };
  };

  it("defaults to the Ruby HM's code values (noise 5 s), durations in ms", () => {
    expect(validate({}).data).toEqual(DEFAULT_FLAPPING);
  });

  it('accepts durations in any unit, the YAML noise and a negative give-up', () => {
    expect(validate({ delay_time_noise: 10, min_restart_delay: '1m', max_restart_delay: '48hb', giveup_crash_number: -1 })).toEqual({
      problems: [],
      data: { ...DEFAULT_FLAPPING, delay_time_noise: 10_000, min_restart_delay: 60_000, max_restart_delay: 480_000, giveup_crash_number: -1 },
    });
  });

  it('rejects negative counts, bad durations and unknown keys', () => {
    expect(validate({ flapping_death: -1 }).problems).toHaveLength(1);
    expect(validate({ flapping_timeout: 'soon' }).problems).toHaveLength(1);
    expect(validate({ pending_restart: 'per-app' }).problems).toHaveLength(1);
    expect(validate({ droplet_lost: 30 }).problems).toHaveLength(1);
  });

  it('says what it does in the start-up log', () => {
    expect(
      stageSummary({ id: 'crashes', kind: 'policy', plugin: 'flapping', definition: plugin, options: DEFAULT_FLAPPING as unknown as Record<string, unknown> }),
    ).toBe(
      'crashes: flapping: FLAPPING above 1 crash, count reset after 8m20s (gap-between-crashes), restarts after 1m doubling up to 8m ±5s, gives up above 4 crashes',
    );
    expect(
      stageSummary({
        id: 'c',
        kind: 'policy',
        plugin: 'flapping',
        definition: plugin,
        options: { ...DEFAULT_FLAPPING, giveup_crash_number: 0 } as unknown as Record<string, unknown>,
      }),
    ).toMatch(/never gives up$/);
  });
});
