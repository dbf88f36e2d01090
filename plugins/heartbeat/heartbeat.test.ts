/**
 * The heartbeat source on a virtual clock with the real memory store and an in-process bus:
 * batching, write-only-on-state-change, presence expiry, the freshness bump rules, dea.advertise,
 * the cc_partition filter and bad input.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Registry } from 'prom-client';
import { makeValidator } from '../../src/config/validate.js';
import { createLoggerFactory } from '../../src/log.js';
import type { Bus, BusMessage } from '../../src/sdk/bus.js';
import { VirtualClock } from '../../src/sdk/clock.js';
import { DropletRegistry } from '../../src/sdk/droplets.js';
import { FreshnessBoard } from '../../src/pipeline/freshness/board.js';
import { isActualFresh } from '../../src/sdk/freshness.js';
import { isPluginDefinition, type StageContext } from '../../src/sdk/plugin.js';
import { appKey } from '../../src/sdk/app-key.js';
import { type SaveHeartbeatsResult } from '../../src/sdk/store.js';
import { type StoreSnapshot } from '../../src/sdk/state.js';
import { MemoryStore } from '../memory-store/memory-store.js';
import heartbeatPlugin, { HeartbeatSource, roundStateTimestamp } from './index.js';

const START = 1_700_000_000_000;
const HB = 10_000;
const ACTUAL_TTL = 3 * HB;

/** Routes published messages to subscribers in-process, synchronously. */
class MemoryBus implements Bus {
  readonly connected = true;
  private readonly subs = new Map<string, Set<(msg: BusMessage) => void>>();

  subscribe(subject: string, handler: (msg: BusMessage) => void): () => void {
    let set = this.subs.get(subject);
    if (!set) this.subs.set(subject, (set = new Set()));
    const own = (msg: BusMessage) => handler(msg);
    set.add(own);
    return () => {
      set.delete(own);
    };
  }

  publish(subject: string, data: string | Uint8Array, reply?: string): void {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    for (const h of [...(this.subs.get(subject) ?? [])]) h({ subject, data: bytes, ...(reply ? { reply } : {}) });
  }

  request(): Promise<BusMessage> {
    return Promise.reject(new Error('the in-memory bus answers no requests'));
  }

  async flush(): Promise<void> {}

  subscribers(subject: string): number {
    return this.subs.get(subject)?.size ?? 0;
  }
}

/** The options as the plugin's create() receives them: validated, defaults filled. */
type HeartbeatOptions = Parameters<typeof heartbeatPlugin.create>[0];

const DEFAULTS: HeartbeatOptions = {
  subject: 'dea.heartbeat',
  advertise_subject: 'dea.advertise',
  sync_interval: 1_000,
  heartbeat_ttl: 3 * HB,
  cc_partition_filter: false,
};

interface Droplet {
  droplet: string;
  version: string;
  instance: string;
  index: number;
  state: string;
  state_timestamp: number;
  cc_partition?: string;
}

function droplet(app: string, index: number, state = 'RUNNING', ts = 1_700_000_000.1, extra: Partial<Droplet> = {}): Droplet {
  return { cc_partition: 'default', droplet: app, version: 'v1', instance: `${app}-v1-${index}`, index, state, state_timestamp: ts, ...extra };
}

function hb(dea: string, droplets: Droplet[]): string {
  return JSON.stringify({ dea, droplets });
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: Partial<HeartbeatOptions> = {}) {
  const clock = new VirtualClock(START);
  const store = new MemoryStore(clock);
  store.start();
  const bus = new MemoryBus();
  const lines: Record<string, any>[] = [];
  const loggers = createLoggerFactory({ foundation: 'unit', level: 'debug', destination: { write: (s: string) => void lines.push(JSON.parse(s)) } });
  const metrics = new Registry();
  const freshness = new FreshnessBoard(() => clock.now(), ACTUAL_TTL, 12 * HB);
  const ctx: StageContext = {
    id: 'heartbeats',
    kind: 'source',
    foundation: 'unit',
    logger: loggers.component('heartbeats'),
    clock,
    heartbeatMs: HB,
    configDir: '/nonexistent',
    metrics,
    bus,
    store,
    freshness,
    isLeader: () => true,
    events: { emit: () => undefined, wants: () => false, droplets: new DropletRegistry() },
  };
  const stage = (await heartbeatPlugin.create({ ...DEFAULTS, ...opts }, ctx)) as HeartbeatSource;
  await stage.start();
  cleanups.push(async () => {
    await stage.stop();
    store.stop();
  });
  const saves = vi.spyOn(store, 'saveHeartbeats');
  const publish = (data: string | Uint8Array, subject = 'dea.heartbeat') => bus.publish(subject, data);
  const metric = async (name: string, labels: Record<string, string> = {}) => {
    const m = metrics.getSingleMetric(name);
    if (!m) return 0;
    const values = (await m.get()).values as { value: number; labels: Record<string, unknown>; metricName?: string }[];
    return values
      .filter(
        (v) =>
          (v.metricName === undefined || v.metricName === name || v.metricName === `${name}_count`) &&
          Object.entries(labels).every(([k, x]) => v.labels[k] === x),
      )
      .filter((v) => !name.endsWith('_seconds') || v.metricName === `${name}_count`)
      .reduce((s, v) => s + v.value, 0);
  };
  const lastResult = async (): Promise<SaveHeartbeatsResult> => (await saves.mock.results.at(-1)!.value) as SaveHeartbeatsResult;
  return { clock, store, bus, lines, metrics, freshness, ctx, stage, saves, publish, metric, lastResult };
}

/** A snapshot without its read time, for before/after comparisons. */
function stateOf(s: StoreSnapshot): unknown {
  const instances = [...s.instances.entries()].map(([k, list]) => [k, [...list].sort((a, b) => a.instance.localeCompare(b.instance))]).sort();
  return structuredClone({ instances, freshness: s.freshness });
}

async function agentsOf(store: MemoryStore) {
  return Object.fromEntries([...(await store.getAgents()).entries()].map(([k, v]) => [k, { ...v, instances: [...v.instances] }]));
}

describe('heartbeat plugin definition', () => {
  const validator = makeValidator({ heartbeatMs: HB, convertDurations: true });

  it('is a source plugin named heartbeat whose defaults reproduce HM9000', () => {
    expect(isPluginDefinition(heartbeatPlugin)).toBe(true);
    expect(heartbeatPlugin.name).toBe('heartbeat');
    expect(heartbeatPlugin.kind).toBe('source');
    const opts: Record<string, unknown> = {};
    expect(validator.validate(heartbeatPlugin.optionsSchema, opts)).toEqual([]);
    expect(opts).toEqual({
      subject: 'dea.heartbeat',
      advertise_subject: 'dea.advertise',
      advertise_payload: 'checked',
      sync_interval: 1_000,
      heartbeat_ttl: 30_000,
      exited_subject: 'droplet.exited',
      updated_subject: 'droplet.updated',
      cc_partition_filter: false,
    });
  });

  it('describes every option, naming the HM9000 key it replaces', () => {
    const walk = (schema: any, path: string, out: [string, string][]) => {
      for (const [k, s] of Object.entries<any>(schema.properties ?? {})) {
        out.push([`${path}${k}`, String(s.description ?? '')]);
        if (s.properties) walk(s, `${path}${k}.`, out);
      }
      return out;
    };
    const described = walk(heartbeatPlugin.optionsSchema, '', []);
    expect(described.map(([k]) => k)).toEqual(
      expect.arrayContaining([
        'subject',
        'advertise_subject',
        'sync_interval',
        'heartbeat_ttl',
        'save_deadline',
        'cc_partition',
        'cc_partition_filter',
        'exited_subject',
        'updated_subject',
        'http_listener',
        'http_listener.listen',
        'http_listener.ca_file',
      ]),
    );
    for (const [key, text] of described) {
      expect(text, key).toMatch(/\S{3}/);
      // The Ruby HM's keys name the Ruby HM.
      expect(text, key).toMatch(['cc_partition', 'cc_partition_filter', 'exited_subject', 'updated_subject'].includes(key) ? /Ruby HM/ : /HM9000/);
    }
  });

  it('converts durations, requires the TLS files of an http_listener and refuses unknown keys', () => {
    const opts: Record<string, unknown> = {
      sync_interval: '0.25hb',
      heartbeat_ttl: '5s',
      save_deadline: '2s',
      http_listener: { cert_file: 'c', key_file: 'k', ca_file: 'a' },
    };
    expect(validator.validate(heartbeatPlugin.optionsSchema, opts)).toEqual([]);
    expect(opts).toMatchObject({ sync_interval: 2_500, heartbeat_ttl: 5_000, save_deadline: 2_000, http_listener: { listen: '0.0.0.0:5335' } });
    const missing = validator.validate(heartbeatPlugin.optionsSchema, { http_listener: { cert_file: 'c' } });
    expect(missing.map((p) => p.message).join('\n')).toMatch(/key_file/);
    expect(missing.map((p) => p.message).join('\n')).toMatch(/ca_file/);
    expect(validator.validate(heartbeatPlugin.optionsSchema, { subjet: 'x' })).not.toEqual([]);
  });

  it('refuses zero intervals with the option named', async () => {
    await expect(setup({ sync_interval: 0 })).rejects.toThrow(/sources\.heartbeats\.sync_interval must be a duration greater than 0/);
  });
});

describe('roundStateTimestamp (HM9000 stores %.1f)', () => {
  it('rounds to one decimal like Go, ties to even', () => {
    expect(roundStateTimestamp(1123.2)).toBe(1123.2);
    expect(roundStateTimestamp(1123.24)).toBe(1123.2);
    expect(roundStateTimestamp(1123.26)).toBe(1123.3);
    expect(roundStateTimestamp(1123.25)).toBe(1123.2);
    expect(roundStateTimestamp(1123.75)).toBe(1123.8);
    expect(roundStateTimestamp(-0.75)).toBe(-0.8);
    expect(roundStateTimestamp(1.05)).toBe(1.1); // 1.05 is slightly above 1.05 in binary
    expect(roundStateTimestamp(1_700_000_000)).toBe(1_700_000_000);
    expect(roundStateTimestamp(1e22)).toBe(1e22);
  });
});

describe('heartbeat source', () => {
  it('syncs once at start, then every sync_interval, saving the last heartbeat of each agent', async () => {
    const { clock, store, publish, saves } = await setup();
    await clock.advanceAsync(0);
    expect(saves).not.toHaveBeenCalled(); // the first run had nothing to save
    publish(hb('dea-1', [droplet('app-a', 0)]));
    publish(hb('dea-2', [droplet('app-c', 0)]));
    publish(hb('dea-1', [droplet('app-b', 0)]));
    await clock.advanceAsync(999);
    expect(saves).not.toHaveBeenCalled();
    await clock.advanceAsync(1);
    expect(saves).toHaveBeenCalledTimes(1);
    const [batch, ttl] = saves.mock.calls[0]!;
    expect(ttl).toBe(30_000);
    expect(batch.map((b) => [b.agent, b.instances.map((i) => i.app)])).toEqual([
      ['dea-1', ['app-b']],
      ['dea-2', ['app-c']],
    ]);
    expect(batch[0]!.instances[0]).toEqual({
      app: 'app-b',
      version: 'v1',
      instance: 'app-b-v1-0',
      index: 0,
      state: 'RUNNING',
      stateTimestamp: 1_700_000_000.1,
      agent: 'dea-1',
      ccPartition: 'default',
    });
    const snap = await store.snapshot();
    expect([...snap.instances.keys()].sort()).toEqual([appKey('app-b', 'v1'), appKey('app-c', 'v1')]);
    // Nothing new: no save.
    await clock.advanceAsync(5_000);
    expect(saves).toHaveBeenCalledTimes(1);
  });

  it('writes only state changes: a new state_timestamp or index alone does not reach the store', async () => {
    const { clock, store, publish, lastResult } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0, 'RUNNING', 1000.04), droplet('app-b', 0, 'RUNNING', 7)]));
    await clock.advanceAsync(1_000);
    expect((await lastResult()).changed).toEqual(['dea-1']);
    const stored = () => store.getAgents().then((a) => [...a.get('dea-1')!.instances]);
    expect((await stored()).find((i) => i.app === 'app-a')).toMatchObject({ index: 0, stateTimestamp: 1000, state: 'RUNNING' });

    publish(hb('dea-1', [droplet('app-a', 0, 'RUNNING', 2000.55, { index: 4 }), droplet('app-b', 0, 'RUNNING', 8)]));
    await clock.advanceAsync(1_000);
    expect((await lastResult()).changed).toEqual([]);
    expect((await stored()).find((i) => i.app === 'app-a')).toMatchObject({ index: 0, stateTimestamp: 1000, state: 'RUNNING' });

    publish(hb('dea-1', [droplet('app-a', 0, 'CRASHED', 3000.25, { index: 4 }), droplet('app-b', 0, 'RUNNING', 9)]));
    await clock.advanceAsync(1_000);
    expect((await lastResult()).changed).toEqual(['dea-1']);
    const after = await stored();
    expect(after.find((i) => i.app === 'app-a')).toMatchObject({ index: 4, stateTimestamp: 3000.2, state: 'CRASHED' });
    // The unchanged instance kept what was saved first.
    expect(after.find((i) => i.app === 'app-b')).toMatchObject({ stateTimestamp: 7 });
  });

  it('carries unknown states through', async () => {
    const { clock, store, publish } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0, 'DOWN')]));
    await clock.advanceAsync(1_000);
    expect((await store.snapshot()).instances.get(appKey('app-a', 'v1'))?.[0]?.state).toBe('DOWN');
  });

  it('drops an instance the next heartbeat of its agent omits', async () => {
    const { clock, store, publish, lastResult } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0), droplet('app-a', 1)]));
    publish(hb('dea-2', [droplet('app-a', 2)]));
    await clock.advanceAsync(1_000);
    const ids = async () => ((await store.snapshot()).instances.get(appKey('app-a', 'v1')) ?? []).map((i) => i.instance).sort();
    expect(await ids()).toEqual(['app-a-v1-0', 'app-a-v1-1', 'app-a-v1-2']);
    publish(hb('dea-1', [droplet('app-a', 0)]));
    await clock.advanceAsync(1_000);
    expect((await lastResult()).changed).toEqual(['dea-1']);
    expect(await ids()).toEqual(['app-a-v1-0', 'app-a-v1-2']);
  });

  it("removes all of an agent's instances heartbeat_ttl after its last saved heartbeat", async () => {
    const { clock, store, publish } = await setup();
    await clock.advanceAsync(100);
    publish(hb('dea-1', [droplet('app-a', 0), droplet('app-b', 0)]));
    await clock.advanceToAsync(START + 1_000); // saved here: presence until START + 31 000
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-1']);
    await clock.advanceToAsync(START + 30_999);
    expect([...(await store.getAgents()).keys()]).toEqual(['dea-1']);
    expect((await store.snapshot()).instances.size).toBe(2);
    await clock.advanceToAsync(START + 31_000);
    expect((await store.getAgents()).size).toBe(0);
    expect((await store.snapshot()).instances.size).toBe(0);
  });

  it('after a lapse, an agent that comes back is written in full again', async () => {
    const { clock, store, publish } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0, 'RUNNING', 10)]));
    await clock.advanceAsync(1_000);
    await clock.advanceAsync(40_000);
    expect((await store.getAgents()).size).toBe(0);
    publish(hb('dea-1', [droplet('app-a', 0, 'RUNNING', 20, { index: 3 })]));
    await clock.advanceAsync(1_000);
    expect((await store.getAgents()).get('dea-1')?.instances[0]).toMatchObject({ index: 3, stateTimestamp: 20 });
  });

  it('bumps actual freshness on the first save; actual is fresh exactly actual_ttl after it', async () => {
    const { clock, store, publish, freshness } = await setup();
    await clock.advanceToAsync(START + 500);
    publish(hb('dea-1', [droplet('app-a', 0)]));
    await clock.advanceToAsync(START + 1_000);
    const first = await store.getFreshness('actual');
    expect(first).toEqual({ timestamp: START + 1_000, expiresAt: START + 1_000 + ACTUAL_TTL });
    for (let n = 1; n <= 3; n++) {
      await clock.advanceToAsync(START + 500 + n * HB);
      publish(hb('dea-1', [droplet('app-a', 0)]));
    }
    await clock.advanceToAsync(first!.timestamp + 29_999);
    let marker = await store.getFreshness('actual');
    expect(isActualFresh(marker, clock.now(), ACTUAL_TTL)).toBe(false);
    expect(freshness.verdict('actual', marker, clock.now(), ACTUAL_TTL)).toMatchObject({
      fresh: false,
      reason: expect.stringMatching(/less than the freshness window/),
    });
    await clock.advanceToAsync(first!.timestamp + 30_000);
    marker = await store.getFreshness('actual');
    expect(marker?.timestamp).toBe(first!.timestamp);
    expect(isActualFresh(marker, clock.now(), ACTUAL_TTL)).toBe(true);
  });

  it('a failing save revokes actual freshness, says why, and marks the stage unhealthy until a save succeeds', async () => {
    const { clock, store, publish, freshness, stage, saves, lines, metric } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0)]));
    await clock.advanceAsync(1_000);
    expect(await store.getFreshness('actual')).toBeDefined();
    saves.mockRejectedValueOnce(new Error('etcd is down'));
    publish(hb('dea-1', [droplet('app-a', 0, 'CRASHED')]));
    await clock.advanceAsync(1_000);
    expect(await store.getFreshness('actual')).toBeUndefined();
    expect(freshness.reason('actual')?.reason).toBe('saving heartbeats to the store failed: etcd is down');
    expect(stage.health()).toEqual({ healthy: false, last_error: 'saving heartbeats to the store failed: etcd is down' });
    expect(lines.some((l) => l.level === 'error' && l.msg === 'saving heartbeats to the store failed: etcd is down')).toBe(true);
    expect(await metric('hmgate_heartbeat_save_failures_total')).toBe(1);

    await clock.advanceAsync(3_000);
    publish(hb('dea-1', [droplet('app-a', 0, 'CRASHED')]));
    await clock.advanceAsync(1_000);
    // A new streak begins at this save.
    expect(await store.getFreshness('actual')).toEqual({ timestamp: clock.now(), expiresAt: clock.now() + ACTUAL_TTL });
    expect(stage.health()).toEqual({ healthy: true, last_error: null });
    expect(freshness.reason('actual')).toBeUndefined();
    expect((await store.getAgents()).get('dea-1')?.instances[0]?.state).toBe('CRASHED');
  });

  it('a save slower than save_deadline (default sync_interval) does not bump; saves never overlap', async () => {
    const { clock, store, publish, freshness, saves, lines } = await setup();
    const original = MemoryStore.prototype.saveHeartbeats;
    let active = 0;
    let maxActive = 0;
    saves.mockImplementation(async function (this: MemoryStore, batch, ttl) {
      active++;
      maxActive = Math.max(maxActive, active);
      await clock.sleep(1_500);
      active--;
      return original.call(store, batch, ttl);
    });
    for (let i = 0; i < 5; i++) {
      publish(hb('dea-1', [droplet('app-a', 0)]));
      await clock.advanceAsync(700);
    }
    await clock.advanceAsync(3_000);
    expect(saves.mock.calls.length).toBeGreaterThanOrEqual(2);
    expect(maxActive).toBe(1);
    expect(await store.getFreshness('actual')).toBeUndefined();
    expect(lines.some((l) => l.msg === 'save took too long (1500ms); not bumping freshness')).toBe(true);
    expect(freshness.reason('actual')?.reason).toMatch(/took 1500ms, not less than save_deadline \(1000ms\)/);
  });

  it('with save_deadline longer than the save, the same slow save bumps', async () => {
    const { clock, store, publish, saves } = await setup({ save_deadline: 2_000 });
    const original = MemoryStore.prototype.saveHeartbeats;
    saves.mockImplementation(async (batch, ttl) => {
      await clock.sleep(1_500);
      return original.call(store, batch, ttl);
    });
    publish(hb('dea-1', [droplet('app-a', 0)]));
    await clock.advanceAsync(3_000);
    expect(await store.getFreshness('actual')).toBeDefined();
  });

  describe('dea.advertise', () => {
    /** An advertise as a DEA sent it; `apps` is its app_id_to_count. */
    const advertise = (id: string, apps: Record<string, number> = {}) =>
      JSON.stringify({
        id,
        stacks: ['lucid64'],
        available_memory: 30_720,
        available_disk: 61_440,
        app_id_to_count: apps,
        placement_properties: { zone: 'default' },
      });

    it('bumps before any heartbeat when it names no instance', async () => {
      const { clock, store, publish, stage } = await setup();
      await clock.advanceAsync(0);
      publish(advertise('dea-1'), 'dea.advertise');
      await stage.idle();
      expect(await store.getFreshness('actual')).toEqual({ timestamp: START, expiresAt: START + ACTUAL_TTL });
      expect((await store.getAgents()).size).toBe(0);
    });

    it('with advertise_payload: ignored (HM9000), bumps before any heartbeat whatever its payload, and counts nothing', async () => {
      const { clock, store, publish, stage, metric } = await setup({ advertise_payload: 'ignored' });
      await clock.advanceAsync(0);
      publish(new Uint8Array([0xff, 0x00, 0x13]), 'dea.advertise');
      await stage.idle();
      expect(await store.getFreshness('actual')).toEqual({ timestamp: START, expiresAt: START + ACTUAL_TTL });
      publish(advertise('dea-1', { 'app-a': 3 }), 'dea.advertise');
      await clock.advanceAsync(1_000);
      publish(advertise('dea-1', { 'app-a': 3 }), 'dea.advertise');
      await stage.idle();
      expect(await store.getFreshness('actual')).toEqual({ timestamp: START, expiresAt: START + 1_000 + ACTUAL_TTL });
      expect(await metric('hmgate_dropped_messages_total')).toBe(0);
    });

    it('bumps only once no heartbeat was received for actual_ttl', async () => {
      const { clock, store, publish, stage } = await setup();
      const bumps = vi.spyOn(store, 'bumpFreshness');
      await clock.advanceToAsync(START + 200);
      publish(hb('dea-1', [droplet('app-a', 0)])); // lastReceivedHeartbeat = START + 200
      await clock.advanceToAsync(START + 200 + 29_999);
      const before = bumps.mock.calls.length;
      publish(advertise('dea-2'), 'dea.advertise');
      await stage.idle();
      expect(bumps.mock.calls.length).toBe(before);
      await clock.advanceToAsync(START + 200 + 30_000);
      publish(advertise('dea-2'), 'dea.advertise');
      await stage.idle();
      expect(bumps.mock.calls.length).toBe(before + 1);
      expect(bumps.mock.calls.at(-1)).toEqual(['actual', ACTUAL_TTL]);
      expect(await store.getFreshness('actual')).toMatchObject({ expiresAt: clock.now() + ACTUAL_TTL });
    });

    it('drops bad advertises, counted by reason and logged rate-limited; they never bump', async () => {
      const { clock, store, publish, stage, metric, lines } = await setup();
      const bumps = vi.spyOn(store, 'bumpFreshness');
      await clock.advanceAsync(0);
      const bad: [string | Uint8Array, string][] = [
        ['abcd', 'bad_json'],
        [new Uint8Array([0xff, 0x00, 0x13, 0x7b]), 'not_utf8'],
        ['', 'bad_json'],
        ['{}', 'invalid'],
        ['null', 'invalid'],
        [JSON.stringify({ id: 'dea-1' }), 'invalid'],
        [JSON.stringify({ id: '', app_id_to_count: {} }), 'invalid'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: { 'app-a': -1 } }), 'invalid'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: { 'app-a': '1' } }), 'invalid'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: [] }), 'invalid'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: {}, stacks: 'lucid64' }), 'invalid'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: {}, available_memory: '1' }), 'invalid'],
        [JSON.stringify({ id: 'd'.repeat(900_000), app_id_to_count: {} }), 'too_long'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: { ['a'.repeat(129)]: 1 } }), 'too_long'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: {}, stacks: ['s'.repeat(65)] }), 'too_long'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: {}, placement_properties: { zone: 'z'.repeat(129) } }), 'too_long'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: Object.fromEntries(Array.from({ length: 2_001 }, (_, i) => [`app-${i}`, 0])) }), 'too_many'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: {}, stacks: Array.from({ length: 33 }, () => 's') }), 'too_many'],
        [JSON.stringify({ id: 'dea-1', app_id_to_count: {}, padding: 'x'.repeat(1024 * 1024) }), 'too_large'],
      ];
      for (let i = 0; i < 30; i++) publish('abcd', 'dea.advertise');
      for (const [data] of bad) publish(data, 'dea.advertise');
      await stage.idle();
      expect(bumps).not.toHaveBeenCalled();
      expect(await store.getFreshness('actual')).toBeUndefined();
      const expected = new Map<string, number>([['bad_json', 30]]);
      for (const [, reason] of bad) expected.set(reason, (expected.get(reason) ?? 0) + 1);
      for (const [reason, n] of expected) expect(await metric('hmgate_dropped_messages_total', { subject: 'dea.advertise', reason }), reason).toBe(n);
      for (const reason of expected.keys()) {
        expect(
          lines.filter((l) => l.level === 'warn' && l.msg.startsWith(`dropped a message on dea.advertise: ${reason} `)),
          reason,
        ).toHaveLength(1);
      }
      // No log line carries the over-long value.
      expect(lines.every((l) => JSON.stringify(l).length < 2_000)).toBe(true);
    });

    it('one naming instances while nothing heartbeats revokes the freshness advertises made, says why, and stops them bumping for actual_ttl', async () => {
      const { clock, store, publish, stage, freshness, lines } = await setup();
      await clock.advanceAsync(0);
      // An empty foundation: advertises alone make actual state fresh.
      for (let t = 0; t <= ACTUAL_TTL; t += 5_000) {
        publish(advertise('dea-1'), 'dea.advertise');
        publish(advertise('dea-2'), 'dea.advertise');
        await stage.idle();
        if (t < ACTUAL_TTL) await clock.advanceAsync(5_000);
      }
      expect(isActualFresh(await store.getFreshness('actual'), clock.now(), ACTUAL_TTL)).toBe(true);

      // dea-2 now runs an instance but its heartbeats are lost.
      publish(advertise('dea-2', { 'app-a': 1 }), 'dea.advertise');
      await stage.idle();
      expect(await store.getFreshness('actual')).toBeUndefined();
      const reason =
        'agent dea-2 advertises 1 instance but no heartbeat arrived within the actual freshness TTL (30000ms): its heartbeats are missing, so advertises do not keep actual state fresh until heartbeats arrive';
      expect(freshness.reason('actual')?.reason).toBe(reason);
      const busyAt = clock.now();

      // dea-1's empty advertises do not bump while dea-2's claim is younger than actual_ttl.
      const bumps = vi.spyOn(store, 'bumpFreshness');
      for (let t = 5_000; t < ACTUAL_TTL; t += 5_000) {
        await clock.advanceAsync(5_000);
        publish(advertise('dea-1'), 'dea.advertise');
        await stage.idle();
      }
      expect(bumps).not.toHaveBeenCalled();
      expect(await store.getFreshness('actual')).toBeUndefined();
      expect(lines.filter((l) => l.msg === reason)).toHaveLength(1);

      // dea-2 stopped its instance: a whole actual_ttl after its last claim, empty advertises bump again.
      await clock.advanceToAsync(busyAt + ACTUAL_TTL);
      publish(advertise('dea-2'), 'dea.advertise');
      await stage.idle();
      expect(bumps).toHaveBeenCalledTimes(1);
      expect(await store.getFreshness('actual')).toEqual({ timestamp: clock.now(), expiresAt: clock.now() + ACTUAL_TTL });
      expect(freshness.reason('actual')).toBeUndefined();
    });

    it('naming instances while heartbeats flow changes nothing; once they stop, it does not keep state fresh', async () => {
      const { clock, store, publish, stage } = await setup();
      const revokes = vi.spyOn(store, 'revokeFreshness');
      await clock.advanceAsync(0);
      publish(hb('dea-1', [droplet('app-a', 0)]));
      publish(advertise('dea-1', { 'app-a': 1 }), 'dea.advertise');
      await clock.advanceAsync(1_000);
      const marker = await store.getFreshness('actual');
      expect(marker).toBeDefined();
      publish(advertise('dea-1', { 'app-a': 1 }), 'dea.advertise');
      await stage.idle();
      expect(await store.getFreshness('actual')).toEqual(marker);
      // The heartbeats stop; the advertises go on. HM9000 would bump here.
      const bumps = vi.spyOn(store, 'bumpFreshness');
      for (let t = 0; t < 2 * ACTUAL_TTL; t += 5_000) {
        await clock.advanceAsync(5_000);
        publish(advertise('dea-1', { 'app-a': 1 }), 'dea.advertise');
        await stage.idle();
      }
      expect(bumps).not.toHaveBeenCalled();
      // The marker heartbeats made lapses by itself; advertises made none, so none is revoked.
      expect(revokes).not.toHaveBeenCalled();
      expect(await store.getFreshness('actual')).toBeUndefined();
    });

    it('a standby never bumps', async () => {
      const { clock, store, publish, stage, ctx } = await setup();
      ctx.isLeader = () => false;
      await clock.advanceAsync(0);
      publish(advertise('dea-1'), 'dea.advertise');
      await stage.idle();
      expect(await store.getFreshness('actual')).toBeUndefined();
    });

    it('is not subscribed when advertise_subject is empty', async () => {
      const { bus, clock, store, publish } = await setup({ advertise_subject: '' });
      expect(bus.subscribers('dea.advertise')).toBe(0);
      expect(bus.subscribers('dea.heartbeat')).toBe(1);
      publish('{}', 'dea.advertise');
      await clock.advanceAsync(0);
      expect(await store.getFreshness('actual')).toBeUndefined();
    });
  });

  it('with cc_partition keeps only that partition, counts the others and names each agent and value once', async () => {
    const { clock, store, publish, lines, metric, stage } = await setup({ cc_partition: 'default', cc_partition_filter: true });
    const message = 'agent dea-1 heartbeats instances of cc_partition "ng", this stage keeps only "default": set sources.heartbeats.cc_partition: ng';
    const beat = () =>
      publish(
        hb('dea-1', [
          droplet('app-a', 0),
          droplet('app-b', 0, 'RUNNING', 1, { cc_partition: 'ng' }),
          droplet('app-c', 0, 'RUNNING', 1, { cc_partition: 'ng' }),
        ]),
      );
    beat();
    beat();
    publish(hb('dea-2', [droplet('app-d', 0, 'RUNNING', 1, { cc_partition: undefined })]));
    await clock.advanceAsync(1_000);
    expect([...(await store.snapshot()).instances.keys()]).toEqual([appKey('app-a', 'v1')]);
    expect([...(await store.getAgents()).keys()].sort()).toEqual(['dea-1', 'dea-2']); // still present
    expect(await metric('hmgate_dropped_messages_total', { subject: 'dea.heartbeat', reason: 'other_cc_partition' })).toBe(5);
    expect(lines.filter((l) => l.msg === message)).toHaveLength(1);
    expect(lines.filter((l) => /agent dea-2 heartbeats instances without a cc_partition/.test(l.msg))).toHaveLength(1);
    expect(lines.find((l) => l.msg === message)).toMatchObject({ level: 'warn', agent: 'dea-1', cc_partition: 'ng', kept_cc_partition: 'default' });
    expect(stage.health().healthy).toBe(true);
    expect(stage.health().last_error).toMatch(/cc_partition/);
  });

  it('leaves out an instance with an empty version (the store cannot key it), keeping the rest of the batch', async () => {
    const { clock, store, publish, metric, stage } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0), droplet('app-b', 0, 'RUNNING', 1, { version: '' }), droplet('app-c', 0)]));
    publish(hb('dea-2', [droplet('app-d', 0)]));
    await clock.advanceAsync(1_000);
    expect([...(await store.snapshot()).instances.keys()].sort()).toEqual([appKey('app-a', 'v1'), appKey('app-c', 'v1'), appKey('app-d', 'v1')]);
    expect(await metric('hmgate_dropped_messages_total', { subject: 'dea.heartbeat', reason: 'empty_version' })).toBe(1);
    expect(stage.health()).toEqual({ healthy: true, last_error: null });
  });

  it('counts received heartbeats, saved instance heartbeats and save durations', async () => {
    const { clock, publish, metric } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0), droplet('app-a', 1)]));
    publish(hb('dea-1', [droplet('app-a', 0), droplet('app-a', 1)]));
    publish(hb('dea-2', [droplet('app-b', 0)]));
    await clock.advanceAsync(1_000);
    expect(await metric('hmgate_heartbeats_received_total')).toBe(3);
    expect(await metric('hmgate_heartbeats_saved_total')).toBe(3);
    expect(await metric('hmgate_heartbeat_save_duration_seconds')).toBe(1);
    expect(await metric('hmgate_heartbeat_save_failures_total')).toBe(0);
  });

  it('two heartbeat stages share one registry', async () => {
    const a = await setup();
    const ctx2 = { ...a.ctx, id: 'second' };
    const second = await heartbeatPlugin.create({ ...DEFAULTS, subject: 'dea.heartbeat.2', advertise_subject: '' }, ctx2);
    await second.start();
    a.bus.publish('dea.heartbeat.2', hb('dea-9', [droplet('app-z', 0)]));
    await a.clock.advanceAsync(1_000);
    await second.stop();
    expect(await a.metric('hmgate_heartbeats_received_total', { stage: 'second' })).toBe(1);
    expect((await a.store.getAgents()).has('dea-9')).toBe(true);
  });

  it('stop() unsubscribes and leaves no timer behind', async () => {
    const { clock, store, bus, stage } = await setup();
    await clock.advanceAsync(2_500);
    await stage.stop();
    store.stop();
    expect(bus.subscribers('dea.heartbeat')).toBe(0);
    expect(bus.subscribers('dea.advertise')).toBe(0);
    expect(clock.pendingTimers()).toBe(0);
  });

  it('drops every kind of bad input, counted by reason and logged rate-limited, with the store unchanged', async () => {
    const { clock, store, publish, saves, lines, metric } = await setup();
    publish(hb('dea-1', [droplet('app-a', 0)]));
    await clock.advanceAsync(1_000);
    saves.mockClear();
    const before = stateOf(await store.snapshot());
    const agentsBefore = await agentsOf(store);

    const good = JSON.parse(hb('dea-1', [droplet('app-a', 0, 'CRASHED'), droplet('app-b', 0)]));
    const withDroplet = (patch: (d: Record<string, unknown>) => void) => {
      const m = structuredClone(good);
      patch(m.droplets[0]);
      return JSON.stringify(m);
    };
    const bad: [string, string | Uint8Array, string][] = [
      ['malformed JSON', '{"dea": "dea-1", "droplets": [', 'bad_json'],
      ['trailing garbage', `${hb('dea-1', [])}}`, 'bad_json'],
      ['empty payload', '', 'bad_json'],
      ['not UTF-8', new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 'not_utf8'],
      ['over 1 MiB', JSON.stringify({ ...good, padding: 'x'.repeat(1024 * 1024) }), 'too_large'],
      ['null', 'null', 'invalid'],
      ['a list', '[1,2]', 'invalid'],
      ['a string', '"dea.heartbeat"', 'invalid'],
      ['dea is a number', JSON.stringify({ ...good, dea: 7 }), 'invalid'],
      ['dea is empty', JSON.stringify({ ...good, dea: '' }), 'invalid'],
      ['droplets is a map', JSON.stringify({ ...good, droplets: {} }), 'invalid'],
      ['no dea', JSON.stringify({ droplets: good.droplets }), 'invalid'],
      ['no droplets', JSON.stringify({ dea: 'dea-1' }), 'invalid'],
      ['index is a string', withDroplet((d) => (d.index = '0')), 'invalid'],
      ['index is negative', withDroplet((d) => (d.index = -1)), 'invalid'],
      ['index is fractional', withDroplet((d) => (d.index = 0.5)), 'invalid'],
      ['state is a number', withDroplet((d) => (d.state = 3)), 'invalid'],
      ['state_timestamp is a string', withDroplet((d) => (d.state_timestamp = '1.5')), 'invalid'],
      ['cc_partition is a number', withDroplet((d) => (d.cc_partition = 1)), 'invalid'],
      ['no instance', withDroplet((d) => delete d.instance), 'invalid'],
      ['no droplet', withDroplet((d) => delete d.droplet), 'invalid'],
      ['no state_timestamp', withDroplet((d) => delete d.state_timestamp), 'invalid'],
      ['a droplet is null', JSON.stringify({ ...good, droplets: [null] }), 'invalid'],
      ['dea of 900 KB', JSON.stringify({ ...good, dea: 'd'.repeat(900_000) }), 'too_long'],
      ['dea of 129 characters', JSON.stringify({ ...good, dea: 'd'.repeat(129) }), 'too_long'],
      ['an app guid of 129 characters', withDroplet((d) => (d.droplet = 'a'.repeat(129))), 'too_long'],
      ['a version of 129 characters', withDroplet((d) => (d.version = 'v'.repeat(129))), 'too_long'],
      ['an instance guid of 129 characters', withDroplet((d) => (d.instance = 'i'.repeat(129))), 'too_long'],
      ['a state of 33 characters', withDroplet((d) => (d.state = 'S'.repeat(33))), 'too_long'],
      ['a cc_partition of 65 characters', withDroplet((d) => (d.cc_partition = 'p'.repeat(65))), 'too_long'],
      ['2001 instances', JSON.stringify({ ...good, droplets: Array.from({ length: 2_001 }, (_, i) => droplet('app-a', i)) }), 'too_many'],
    ];
    for (const [, data] of bad) publish(data);
    await clock.advanceAsync(1_000);
    expect(saves).not.toHaveBeenCalled();
    expect(stateOf(await store.snapshot())).toEqual(before);
    expect(await agentsOf(store)).toEqual(agentsBefore); // not even the presence was renewed

    const expected = new Map<string, number>();
    for (const [, , reason] of bad) expected.set(reason, (expected.get(reason) ?? 0) + 1);
    for (const [reason, n] of expected) expect(await metric('hmgate_dropped_messages_total', { subject: 'dea.heartbeat', reason }), reason).toBe(n);
    expect(await metric('hmgate_heartbeats_received_total')).toBe(1);
    // One line per reason within the rate-limit window, however many were dropped.
    for (const reason of expected.keys()) {
      expect(lines.filter((l) => l.level === 'warn' && l.msg.startsWith(`dropped a message on dea.heartbeat: ${reason} `))).toHaveLength(1);
    }
    // An over-long value never reaches a log line.
    expect(lines.every((l) => JSON.stringify(l).length < 2_000)).toBe(true);
  });
});
