/**
 * The heartbeat source raising events for event policies (the Ruby HM presets): heartbeat entries,
 * exits and updates in message order, on the leader only; bad entries left out one by one; and the
 * cc_partition filter of the Ruby HM's older design, counted and named as a problem that clears.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { EventKind, PolicyEvent } from '../../src/sdk/events.js';
import { deriveProblems, ProblemTracker, type ProblemFacts } from '../../src/operator/problems.js';
import { makeStageContext, type TestContext } from '../../test/helpers/stage-context.js';
import heartbeatPlugin, { readEntries, type HeartbeatSource } from './index.js';

/** The options as the plugin's create() receives them: validated, defaults filled. */
type HeartbeatOptions = Parameters<typeof heartbeatPlugin.create>[0];

const HB = 10_000;
const OPTIONS: HeartbeatOptions = {
  subject: 'dea.heartbeat',
  advertise_subject: 'dea.advertise',
  sync_interval: 1_000,
  heartbeat_ttl: 3 * HB,
  cc_partition_filter: false,
};

interface Entry {
  droplet: string;
  version: string;
  instance: string;
  index: number;
  state: string;
  state_timestamp?: number;
  cc_partition?: string;
}

const entry = (app: string, index: number, extra: Partial<Entry> = {}): Entry => ({
  cc_partition: 'default',
  droplet: app,
  version: 'v1',
  instance: `${app}-${index}`,
  index,
  state: 'RUNNING',
  state_timestamp: 1_375_300_000.5,
  ...extra,
});
const hb = (dea: string, droplets: unknown[]) => JSON.stringify({ dea, droplets });

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Setup extends TestContext {
  stage: HeartbeatSource;
  publish(subject: string, data: string): void;
  kinds(): string[];
  dropped(subject: string, reason: string): Promise<number>;
  subscribed: string[];
}

async function setup(opts: Partial<HeartbeatOptions> = {}, wants: (k: EventKind) => boolean = () => true, leader = () => true): Promise<Setup> {
  const t = makeStageContext({ id: 'heartbeats', heartbeatMs: HB });
  t.store.start();
  const emit = t.ctx.events.emit;
  t.ctx.events = { ...t.ctx.events, wants, emit };
  t.ctx.isLeader = leader;
  const subscribed: string[] = [];
  const subscribe = t.bus.subscribe.bind(t.bus);
  vi.spyOn(t.bus, 'subscribe').mockImplementation((subject, handler, o) => {
    subscribed.push(subject);
    return subscribe(subject, handler, o);
  });
  const stage = (await heartbeatPlugin.create({ ...OPTIONS, ...opts }, t.ctx)) as HeartbeatSource;
  await stage.start();
  cleanups.push(async () => {
    await stage.stop();
    t.store.stop();
  });
  return {
    ...t,
    stage,
    subscribed,
    publish: (subject, data) => t.bus.publish(subject, data),
    kinds: () => t.emitted.map(describeEvent),
    dropped: async (subject, reason) => {
      const m = t.metrics.getSingleMetric('hmgate_dropped_messages_total');
      const v = m ? (await m.get()).values.find((x) => x.labels.subject === subject && x.labels.reason === reason) : undefined;
      return v?.value ?? 0;
    },
  };
}

function describeEvent(e: PolicyEvent): string {
  switch (e.kind) {
    case 'heartbeat-message':
      return `message ${e.agent} ${e.accepted}/${e.entries}`;
    case 'heartbeat':
      return `beat ${e.app}/${e.beat.index}`;
    case 'exit':
      return `exit ${e.app}/${e.index} ${e.reason}`;
    case 'updated':
      return `updated ${e.app}`;
    default:
      return e.kind;
  }
}

describe('heartbeat events', () => {
  it('raise heartbeat-message, then one heartbeat per entry, in message order', async () => {
    const { publish, kinds, emitted } = await setup();
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), entry('app-b', 1)]));
    publish('dea.heartbeat', hb('dea-2', [entry('app-a', 1)]));
    expect(kinds()).toEqual(['message dea-1 2/2', 'beat app-a/0', 'beat app-b/1', 'message dea-2 1/1', 'beat app-a/1']);
    expect(emitted[1]).toEqual({
      kind: 'heartbeat',
      app: 'app-a',
      agent: 'dea-1',
      beat: {
        app: 'app-a',
        version: 'v1',
        instance: 'app-a-0',
        index: 0,
        state: 'RUNNING',
        stateTimestamp: 1_375_300_000.5,
        agent: 'dea-1',
        ccPartition: 'default',
      },
    });
  });

  it('still save the heartbeats to the store as before', async () => {
    const { publish, clock, store } = await setup();
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0)]));
    await clock.advanceAsync(1_000);
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-1']);
  });

  it('are not raised on a standby, nor when no policy wants them', async () => {
    const standby = await setup(
      {},
      () => true,
      () => false,
    );
    standby.publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0)]));
    standby.publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', instance: 'i', index: 0, reason: 'STOPPED' }));
    expect(standby.emitted).toEqual([]);
    const nobody = await setup({}, () => false);
    nobody.publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0)]));
    expect(nobody.emitted).toEqual([]);
    // Exits and updates are not listened to; the source's own ingest probe is.
    expect(nobody.subscribed.filter((x) => !x.startsWith('_HMGATE.ingest-probe.')).sort()).toEqual(['dea.advertise', 'dea.heartbeat']);
  });

  it('only heartbeat-message when only that is wanted', async () => {
    const { publish, kinds } = await setup({}, (k) => k === 'heartbeat-message');
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), entry('app-a', 1)]));
    expect(kinds()).toEqual(['message dea-1 2/2']);
  });

  it('leave out a bad entry with its reason and keep the others; an entry that needs no state_timestamp goes without', async () => {
    const { publish, kinds, dropped, logs, emitted } = await setup();
    const noInstance: Partial<Entry> = entry('app-b', 0);
    delete noInstance.instance;
    const evacuating: Partial<Entry> = entry('app-c', 0, { state: 'EVACUATING' });
    delete evacuating.state_timestamp;
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), noInstance, evacuating, 'garbage']));
    expect(kinds()).toEqual(['message dea-1 2/4', 'beat app-a/0', 'beat app-c/0']);
    expect((emitted[2] as { beat: { stateTimestamp: number } }).beat.stateTimestamp).toBe(0);
    expect(await dropped('dea.heartbeat', 'invalid_entry')).toBe(2);
    expect(logs.some((l) => /entry 1 of agent dea-1's heartbeat: instance is missing; the other entries are kept/.test(String(l.msg)))).toBe(true);
    // An envelope that cannot be read is dropped whole, as always.
    publish('dea.heartbeat', JSON.stringify({ droplets: [entry('app-a', 0)] }));
    expect(await dropped('dea.heartbeat', 'invalid')).toBe(1);
    expect(kinds()).toHaveLength(3);
  });

  it('leave out an entry over a bound as too_long and keep the others; an envelope over one is dropped whole', async () => {
    const { publish, kinds, dropped, logs } = await setup();
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), entry('a'.repeat(129), 1), entry('app-c', 2, { state: 'S'.repeat(33) }), entry('app-d', 3)]));
    expect(kinds()).toEqual(['message dea-1 2/4', 'beat app-a/0', 'beat app-d/3']);
    expect(await dropped('dea.heartbeat', 'too_long')).toBe(2);
    expect(await dropped('dea.heartbeat', 'invalid_entry')).toBe(0);
    expect(
      logs.some(
        (l) =>
          l.msg ===
          "dropped a message on dea.heartbeat: too_long (entry 1 of agent dea-1's heartbeat: droplet is longer than 128 characters; the other entries are kept)",
      ),
    ).toBe(true);
    publish('dea.heartbeat', hb('d'.repeat(900_000), [entry('app-a', 0)]));
    publish(
      'dea.heartbeat',
      hb(
        'dea-2',
        Array.from({ length: 2_001 }, (_, i) => entry('app-a', i)),
      ),
    );
    expect(await dropped('dea.heartbeat', 'too_long')).toBe(3);
    expect(await dropped('dea.heartbeat', 'too_many')).toBe(1);
    expect(kinds()).toHaveLength(3);
    expect(logs.every((l) => JSON.stringify(l).length < 2_000)).toBe(true);
  });

  it('a RUNNING entry without state_timestamp is bad (the Ruby HM read it)', async () => {
    const { publish, kinds } = await setup();
    const e: Partial<Entry> = entry('app-a', 0);
    delete e.state_timestamp;
    publish('dea.heartbeat', hb('dea-1', [e, entry('app-b', 0)]));
    expect(kinds()).toEqual(['message dea-1 1/2', 'beat app-b/0']);
  });
});

describe('exit and updated events', () => {
  it('subscribe droplet.exited and droplet.updated only when a policy handles them', async () => {
    const exits = await setup({}, (k) => k === 'exit');
    expect(exits.subscribed).toContain('droplet.exited');
    expect(exits.subscribed).not.toContain('droplet.updated');
    const updates = await setup({ updated_subject: 'app.updated' }, (k) => k === 'updated');
    expect(updates.subscribed).toContain('app.updated');
    expect(updates.subscribed).not.toContain('droplet.exited');
  });

  it('raise exit with crashTimestamp for CRASHED only, and updated, in message order', async () => {
    const { publish, emitted } = await setup();
    const exit = { droplet: 'app-a', version: 'v1', instance: 'app-a-1', index: 1, exit_status: 1 };
    publish('droplet.exited', JSON.stringify({ ...exit, reason: 'CRASHED', crash_timestamp: 1_375_300_123 }));
    publish('droplet.updated', JSON.stringify({ droplet: 'app-b', cc_partition: 'default' }));
    publish('droplet.exited', JSON.stringify({ ...exit, reason: 'DEA_EVACUATION', crash_timestamp: 5 }));
    expect(emitted).toEqual([
      { kind: 'exit', app: 'app-a', version: 'v1', instance: 'app-a-1', index: 1, reason: 'CRASHED', crashTimestamp: 1_375_300_123 },
      { kind: 'updated', app: 'app-b' },
      { kind: 'exit', app: 'app-a', version: 'v1', instance: 'app-a-1', index: 1, reason: 'DEA_EVACUATION' },
    ]);
  });

  it('drop an exit without instance, a CRASHED exit without crash_timestamp and bad JSON, counted', async () => {
    const { publish, emitted, dropped } = await setup();
    publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', index: 1, reason: 'STOPPED' }));
    publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', instance: 'i', index: 1, reason: 'CRASHED' }));
    publish('droplet.exited', '{');
    publish('droplet.updated', JSON.stringify({ app: 'app-a' }));
    expect(emitted).toEqual([]);
    expect(await dropped('droplet.exited', 'invalid')).toBe(2);
    expect(await dropped('droplet.exited', 'bad_json')).toBe(1);
    expect(await dropped('droplet.updated', 'invalid')).toBe(1);
  });
});

describe('cc_partition (the Ruby HM before mid-2013)', () => {
  it('leaves out entries, exits and updates of another partition or none, counting each', async () => {
    const { publish, kinds, dropped } = await setup({ cc_partition: 'default', cc_partition_filter: true });
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), entry('app-b', 0, { cc_partition: 'ng' }), entry('app-c', 0, { cc_partition: undefined })]));
    publish('dea.heartbeat', hb('dea-2', [entry('app-d', 0, { cc_partition: 'ng' })]));
    publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', instance: 'i', index: 0, reason: 'STOPPED', cc_partition: 'ng' }));
    publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', instance: 'i', index: 0, reason: 'STOPPED' }));
    publish('droplet.updated', JSON.stringify({ droplet: 'app-a', cc_partition: 'ng' }));
    publish('droplet.updated', JSON.stringify({ droplet: 'app-a', cc_partition: 'default' }));
    // The message is counted whole (accepted 1 of 3), an all-foreign one too (0 of 1).
    expect(kinds()).toEqual(['message dea-1 1/3', 'beat app-a/0', 'message dea-2 0/1', 'updated app-a']);
    expect(await dropped('dea.heartbeat', 'other_cc_partition')).toBe(3);
    expect(await dropped('droplet.exited', 'other_cc_partition')).toBe(2);
    expect(await dropped('droplet.updated', 'other_cc_partition')).toBe(1);
  });

  it('counts a bad entry of another partition as another partition', async () => {
    const { publish, dropped } = await setup({ cc_partition: 'default', cc_partition_filter: true });
    const e: Partial<Entry> = entry('app-b', 0, { cc_partition: 'ng' });
    delete e.instance;
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), e]));
    expect(await dropped('dea.heartbeat', 'other_cc_partition')).toBe(1);
    expect(await dropped('dea.heartbeat', 'invalid_entry')).toBe(0);
  });

  it('counts an entry with an over-long cc_partition as too_long, and never names that partition', async () => {
    const { publish, dropped, logs, stage } = await setup({ cc_partition: 'default', cc_partition_filter: true });
    publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), entry('app-b', 0, { cc_partition: 'p'.repeat(100_000) })]));
    expect(await dropped('dea.heartbeat', 'too_long')).toBe(1);
    expect(await dropped('dea.heartbeat', 'other_cc_partition')).toBe(0);
    expect(logs.every((l) => JSON.stringify(l).length < 2_000)).toBe(true);
    expect(stage.health().last_error).toBeNull();
    // An exit or update whose strings pass their bounds is dropped the same way.
    publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', instance: 'i', index: 0, reason: 'STOPPED', cc_partition: 'p'.repeat(65) }));
    publish('droplet.updated', JSON.stringify({ droplet: 'a'.repeat(129) }));
    expect(await dropped('droplet.exited', 'too_long')).toBe(1);
    expect(await dropped('droplet.updated', 'too_long')).toBe(1);
  });

  const facts = (s: Setup, liveInstances: number): ProblemFacts => ({
    uptimeMs: 0,
    heartbeatMs: HB,
    actualTtlMs: 3 * HB,
    servers: [],
    stages: [
      { id: 'heartbeats', section: 'sources', plugin: 'heartbeat', definition: heartbeatPlugin, options: { cc_partition: 'default' }, ...s.stage.health() },
    ],
    actual: { fresh: true, reason: null },
    desired: { fresh: true, reason: null },
    state: { desiredApps: 1, liveInstances, heartbeatingApps: liveInstances > 0 ? 1 : 0, desiredHeartbeating: liveInstances > 0, agents: 1 },
    listeners: [],
  });

  it('is named as a problem with both values and the key, once, and clears heartbeat_ttl after such messages stop', async () => {
    const s = await setup({ cc_partition: 'default', cc_partition_filter: true });
    const tracked: Record<string, unknown>[] = [];
    const logger = {
      warn: (o: object, m: string) => tracked.push({ ...o, msg: m, level: 'warn' }),
      info: (o: object, m: string) => tracked.push({ ...o, msg: m, level: 'info' }),
    };
    const problems = new ProblemTracker(logger as never, () => s.clock.now());
    expect(s.stage.health()).toEqual({ healthy: true, last_error: null });

    s.publish('dea.heartbeat', hb('dea-1', [entry('app-a', 0), entry('app-b', 0, { cc_partition: 'ng' })]));
    expect(s.stage.health()).toEqual({
      healthy: true,
      last_error:
        'agents report cc_partition "ng" but this daemon is on "default": their heartbeats, exits and updates are ignored; set sources.heartbeats.cc_partition: ng',
    });
    const [p] = deriveProblems(facts(s, 1));
    expect(p).toMatchObject({
      code: 'CC_PARTITION_IGNORED',
      message:
        'cc_partition of the agents: agents report cc_partition "ng" but this daemon is on "default" (`sources.heartbeats.cc_partition`): their heartbeats, exits and updates are ignored',
      fix: 'set `sources.heartbeats.cc_partition: ng`',
    });
    // Nothing kept at all: the stronger problem of the same cause, instead.
    expect(deriveProblems(facts(s, 0)).map((x) => x.code)).toEqual(['CC_PARTITION_MISMATCH']);

    problems.update(deriveProblems(facts(s, 1)));
    await s.clock.advanceAsync(HB);
    s.publish('droplet.exited', JSON.stringify({ droplet: 'app-a', version: 'v1', instance: 'i', index: 0, reason: 'STOPPED', cc_partition: 'ng' }));
    problems.update(deriveProblems(facts(s, 1)));
    expect(tracked.filter((l) => l.level === 'warn')).toHaveLength(1);
    expect(tracked[0]!.msg).toBe(`${p!.message}; fix: ${p!.fix}`);

    await s.clock.advanceAsync(3 * HB - 1);
    expect(s.stage.health().last_error).not.toBeNull();
    await s.clock.advanceAsync(1);
    expect(s.stage.health()).toEqual({ healthy: true, last_error: null });
    problems.update(deriveProblems(facts(s, 1)));
    expect(problems.list()).toEqual([]);
    expect(tracked.at(-1)).toMatchObject({ level: 'info', problem: 'CC_PARTITION_IGNORED' });
  });

  it('names agents that send no cc_partition, with the key that keeps them (removing cc_partition would still keep only "default")', async () => {
    const s = await setup({ cc_partition: 'default', cc_partition_filter: true });
    s.publish('droplet.updated', JSON.stringify({ droplet: 'app-a' }));
    const [p] = deriveProblems(facts(s, 1));
    expect(p).toMatchObject({
      code: 'CC_PARTITION_IGNORED',
      fix: 'set `sources.heartbeats.cc_partition_filter: false` to keep them, or have the agents send cc_partition',
    });
    expect(p!.message).toContain('without a cc_partition but this daemon is on "default"');
    expect(s.logs.filter((l) => /droplet\.updated messages without a cc_partition are ignored/.test(String(l.msg)))).toHaveLength(1);
  });
});

describe('readEntries under generated input', () => {
  it('never throws; accepts an envelope it can read and sorts every entry into good or bad', () => {
    const anEntry = fc.oneof(
      fc.record(
        {
          droplet: fc.string(),
          version: fc.string(),
          instance: fc.string(),
          index: fc.oneof(fc.nat(), fc.jsonValue()),
          state: fc.constantFrom('RUNNING', 'CRASHED', 'STARTING', 'EVACUATING', 'X'),
          state_timestamp: fc.double(),
        },
        { requiredKeys: [] },
      ),
      fc.jsonValue(),
    );
    const message = fc.oneof(
      fc
        .record({ dea: fc.oneof(fc.string(), fc.jsonValue()), droplets: fc.oneof(fc.array(anEntry, { maxLength: 5 }), fc.jsonValue()) }, { requiredKeys: [] })
        .map((m) => JSON.stringify(m)),
      fc.string({ maxLength: 80 }),
    );
    fc.assert(
      fc.property(message, (text) => {
        const r = readEntries(text);
        if (!r.ok) {
          expect(['bad_json', 'invalid', 'too_large', 'not_utf8']).toContain(r.reason);
          return;
        }
        expect(r.good.length + r.bad.length).toBe(r.total);
        for (const g of r.good) {
          expect(g.droplet !== '' && g.instance !== '' && Number.isSafeInteger(g.index) && g.index >= 0).toBe(true);
          expect(typeof g.state_timestamp).toBe('number');
        }
      }),
      { numRuns: 3_000 },
    );
  });
});
