/**
 * Every built-in plugin describes itself: it declares its family and a summary, and the summary of
 * each stage of the presets is what the start-up log printed when the core described the built-in
 * plugins by name (those lines are pinned here).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import bulkApiPlugin from '../plugins/bulk-api/index.js';
import crashesPlugin from '../plugins/crashes/index.js';
import heartbeatPlugin from '../plugins/heartbeat/index.js';
import notifierPlugin from '../plugins/notifier/index.js';
import reporterPlugin from '../plugins/reporter/index.js';
import { loadConfig, type LoadedConfig } from '../src/config/load.js';
import { stageSummary } from '../src/operator/stage-summary.js';
import { builtinPluginNames, loadPlugin } from '../src/pipeline/plugin-loader.js';
import { PLUGIN_FAMILIES, type PluginDefinition } from '../src/sdk/index.js';

const FAMILIES: Record<string, string> = {
  'app-state': 'hm9000',
  'bulk-api': 'common',
  crashes: 'hm9000',
  'droplet-gc': 'ruby-hm',
  'droplet-records': 'ruby-hm',
  duplicates: 'hm9000',
  etcd: 'common',
  evacuation: 'hm9000',
  evacuator: 'hm9000',
  'exit-restarts': 'ruby-hm',
  'extra-app': 'ruby-hm',
  'extra-instances': 'ruby-hm',
  extras: 'hm9000',
  flapping: 'ruby-hm',
  heartbeat: 'common',
  memory: 'common',
  missing: 'hm9000',
  'missing-instances': 'ruby-hm',
  notifier: 'common',
  reporter: 'ruby-hm',
};

/** The start-up lines of every stage of each preset, by stage id (and of the etcd store and app-state, added to hm9000), before the plugins described themselves — less a stage id said twice ("missing: missing: …" is "missing: …"). */
const STARTUP_LINES: Record<string, Record<string, string>> = {
  hm9000: {
    store: 'store: memory store (state lives in this process)',
    heartbeats: 'heartbeats: heartbeat on dea.heartbeat (and dea.advertise), sync 1s, presence TTL 30s',
    desired: 'desired: bulk-api from http://127.0.0.1:6001/bulk/apps, 500 apps a page, every 1m, timeout 10m',
    evacuator: 'evacuator: evacuator on droplet.exited, keep-alive 30s',
    missing: 'missing: starts missing instances after 30s',
    crashes: 'crashes: restarts crashed instances, back-off after 3 crashes from 30s up to 16m',
    evacuation: 'evacuation: moves instances off evacuating agents, keep-alive 30s',
    extras: 'extras: stops undesired instances, keep-alive 30s',
    duplicates: 'duplicates: stops duplicates one at a time from 4 + k × 30s',
    cloud_controller: 'cloud_controller: notifier publishes starts on hm9000.start and stops on hm9000.stop (NATS)',
  },
  'ruby-hm': {
    store: 'store: memory store (state lives in this process)',
    heartbeats: 'heartbeats: heartbeat on dea.heartbeat (and dea.advertise), sync 1s, presence TTL 30s, cc_partition default only',
    desired:
      'desired: bulk-api from http://api.vcap.me/bulk/apps, 500 apps a page, every 1m, timeout 10m, credentials from cloudcontroller.bulk.credentials.default',
    records:
      'records: droplet-records: instance records from heartbeats and exits; duplicates by guid-stream, stop list cleared-per-beat, exit mark-down state-and-time',
    exit_restarts: 'exit_restarts: exit-restarts: restarts instances of agents that shut down or evacuate, queue priority 1000000',
    flapping:
      'flapping: FLAPPING above 1 crash, count reset after 8m20s (gap-between-crashes), restarts after 1m doubling up to 8m ±10s, gives up above 4 crashes',
    extra_app: 'extra_app: extra-app: stops apps absent from the desired state for 3m',
    missing: 'missing: missing-instances: queues starts of missing instances (alive), grace and silence 30s',
    extra_instances: 'extra_instances: extra-instances: stops instances beyond the desired count, of other versions or of stopped apps',
    gc: 'gc: droplet-gc: drops crash records after 8m20s, forgets apps absent for 4m every 5m',
    reporter: 'reporter: reporter answers healthmanager.status, healthmanager.health and healthmanager.droplet; keeps /varz',
    cloud_controller: 'cloud_controller: notifier publishes health requests: starts on health.start and stops on health.stop (NATS)',
  },
  'ruby-hm-partitioned': {
    store: 'store: memory store (state lives in this process)',
    heartbeats: 'heartbeats: heartbeat on dea.heartbeat (and dea.advertise), sync 1s, presence TTL 30s, cc_partition default only',
    desired:
      'desired: bulk-api from http://api.vcap.me/bulk/apps, 500 apps a page, every 1m, timeout 10m, credentials from cloudcontroller.bulk.credentials.default',
    records:
      'records: droplet-records: instance records from heartbeats and exits; duplicates by instance-mismatch, stop list kept-until-analysis, exit mark-down state-only',
    exit_restarts: 'exit_restarts: exit-restarts: restarts instances of agents that shut down or evacuate, queue priority 1000000',
    flapping:
      'flapping: FLAPPING above 1 crash, count reset after 8m20s (age-of-last-crash), restarts after 1m doubling up to 8m ±10s, gives up above 4 crashes',
    extra_app: 'extra_app: extra-app: stops apps absent from the desired state for 3m',
    missing: 'missing: missing-instances: queues starts of missing instances (by-index), grace and silence 30s',
    extra_instances: 'extra_instances: extra-instances: stops instances beyond the desired indices, of other versions or of stopped apps',
    gc: 'gc: droplet-gc: drops crash records after 8m20s, forgets apps absent for 4m every 5m',
    reporter: 'reporter: reporter answers healthmanager.status, healthmanager.health and healthmanager.droplet; keeps /varz',
    cloud_controller:
      'cloud_controller: notifier publishes cc-partition requests: starts on cloudcontrollers.hm.requests.default and stops on cloudcontrollers.hm.requests.default (NATS)',
  },
  etcd: {
    store: 'store: etcd store at http://127.0.0.1:2379, prefix /hmgate',
    heartbeats: 'heartbeats: heartbeat on dea.heartbeat (and dea.advertise), sync 1s, presence TTL 30s',
    desired: 'desired: bulk-api from http://127.0.0.1:6001/bulk/apps, 500 apps a page, every 1m, timeout 10m',
    evacuator: 'evacuator: evacuator on droplet.exited, keep-alive 30s',
    app_state: 'app_state: app-state answers app.state and app.state.bulk (queue hm9000)',
    missing: 'missing: starts missing instances after 30s',
    crashes: 'crashes: restarts crashed instances, back-off after 3 crashes from 30s up to 16m',
    evacuation: 'evacuation: moves instances off evacuating agents, keep-alive 30s',
    extras: 'extras: stops undesired instances, keep-alive 30s',
    duplicates: 'duplicates: stops duplicates one at a time from 4 + k × 30s',
    cloud_controller: 'cloud_controller: notifier publishes starts on hm9000.start and stops on hm9000.stop (NATS)',
  },
};

/** A foundation file on each preset (the presets leave api.password to it). */
const FILES: Record<string, string> = {
  hm9000: 'extends: hm9000\napi:\n  password: x\n',
  'ruby-hm': 'extends: ruby-hm\napi:\n  password: x\n',
  'ruby-hm-partitioned': 'extends: ruby-hm-partitioned\napi:\n  password: x\n',
  etcd: 'extends: hm9000\napi:\n  password: x\nstore:\n  plugin: etcd\nsources:\n  app_state:\n    plugin: app-state\n',
};

let dir: string;
const loaded: Record<string, LoadedConfig> = {};
const builtins: PluginDefinition[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-describe-'));
  for (const [name, text] of Object.entries(FILES)) {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, text);
    loaded[name] = await loadConfig(file, { env: {} });
  }
  for (const name of builtinPluginNames()) builtins.push((await loadPlugin(name, process.cwd())).definition);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('built-in plugins describe themselves', () => {
  it('every built-in plugin declares its family and a summary', () => {
    expect(builtins.map((d) => d.name).sort()).toEqual(Object.keys(FAMILIES).sort());
    for (const d of builtins) {
      expect(PLUGIN_FAMILIES, d.name).toContain(d.family);
      expect(d.family, d.name).toBe(FAMILIES[d.name]);
      expect(typeof d.summary, d.name).toBe('function');
    }
  });

  it("a plugin's family follows the presets that use it: HM9000's only, the Ruby HM's only, or both", () => {
    const usedBy = new Map<string, Set<string>>();
    for (const preset of ['hm9000', 'ruby-hm', 'ruby-hm-partitioned']) {
      for (const s of loaded[preset]!.stages) {
        const set = usedBy.get(s.plugin.name) ?? new Set<string>();
        set.add(preset === 'hm9000' ? 'hm9000' : 'ruby-hm');
        usedBy.set(s.plugin.name, set);
      }
    }
    for (const d of builtins) {
      const by = usedBy.get(d.name);
      if (!by) continue; // in no preset: the stores and app-state are named in FAMILIES
      expect(d.family, d.name).toBe(by.size === 2 ? 'common' : [...by][0]);
    }
  });

  it('describes each stage of the presets as the start-up log did before', () => {
    for (const [name, lines] of Object.entries(STARTUP_LINES)) {
      const got = Object.fromEntries(
        loaded[name]!.stages.map((s) => [s.id, stageSummary({ id: s.id, kind: s.kind, plugin: s.plugin.name, definition: s.plugin, options: s.options })]),
      );
      expect(got, name).toEqual(lines);
    }
  });

  it('with no definition, a built-in is described by kind and options like any other plugin', () => {
    expect(stageSummary({ id: 'store', kind: 'store', plugin: 'memory', options: {} })).toBe('store: memory (store)');
  });
});

describe('stageSummary of built-in stages', () => {
  it('says what each built-in stage does with its main options', () => {
    expect(
      stageSummary({
        id: 'heartbeats',
        kind: 'source',
        plugin: 'heartbeat',
        definition: heartbeatPlugin,
        options: { subject: 'dea.heartbeat', advertise_subject: '', sync_interval: 1000, heartbeat_ttl: 30_000 },
      }),
    ).toBe('heartbeats: heartbeat on dea.heartbeat, sync 1s, presence TTL 30s');
    expect(
      stageSummary({
        id: 'desired',
        kind: 'source',
        plugin: 'bulk-api',
        definition: bulkApiPlugin,
        options: { url: 'https://u:secret@cc.example.com', batch_size: 500, poll_interval: 60_000, timeout: 600_000, skip_cert_verify: true },
      }),
    ).toBe('desired: bulk-api from https://u:***@cc.example.com/bulk/apps, 500 apps a page, every 1m, timeout 10m, certificate NOT verified');
    expect(
      stageSummary({
        id: 'crashes',
        kind: 'policy',
        plugin: 'crashes',
        definition: crashesPlugin,
        options: { crashes_before_backoff: 3, starting_backoff: 30_000, maximum_backoff: 960_000 },
      }),
    ).toBe('crashes: restarts crashed instances, back-off after 3 crashes from 30s up to 16m');
    expect(
      stageSummary({
        id: 'cc',
        kind: 'sink',
        plugin: 'notifier',
        definition: notifierPlugin,
        options: { protocol: 'hm9000-http', cc_url: 'https://cc:9023', timeout: 10_000 },
      }),
    ).toBe('cc: notifier POSTs starts and stops to https://cc:9023/internal/dea/hm9000/…, timeout 10s');
  });

  it('counts one in the singular', () => {
    expect(
      stageSummary({
        id: 'crashes',
        kind: 'policy',
        plugin: 'crashes',
        definition: crashesPlugin,
        options: { crashes_before_backoff: 1, starting_backoff: 30_000, maximum_backoff: 960_000 },
      }),
    ).toBe('crashes: restarts crashed instances, back-off after 1 crash from 30s up to 16m');
    expect(
      stageSummary({
        id: 'desired',
        kind: 'source',
        plugin: 'bulk-api',
        definition: bulkApiPlugin,
        options: { url: 'https://cc.example.com', batch_size: 1, poll_interval: 60_000, timeout: 600_000 },
      }),
    ).toBe('desired: bulk-api from https://cc.example.com/bulk/apps, 1 app a page, every 1m, timeout 10m');
  });

  it('describes the notifier per protocol and the reporter', () => {
    const notifier = (options: Record<string, unknown>) => stageSummary({ id: 'cc', kind: 'sink', plugin: 'notifier', definition: notifierPlugin, options });
    expect(notifier({ protocol: 'hm9000' })).toBe('cc: notifier publishes starts on hm9000.start and stops on hm9000.stop (NATS)');
    expect(notifier({ protocol: 'health' })).toBe('cc: notifier publishes health requests: starts on health.start and stops on health.stop (NATS)');
    expect(notifier({ protocol: 'cc-partition', cc_partition: 'ng' })).toBe(
      'cc: notifier publishes cc-partition requests: starts on cloudcontrollers.hm.requests.ng and stops on cloudcontrollers.hm.requests.ng (NATS)',
    );
    expect(
      stageSummary({
        id: 'reporter',
        kind: 'policy',
        plugin: 'reporter',
        definition: reporterPlugin,
        options: {
          status_subject: 'healthmanager.status',
          health_subject: 'healthmanager.health',
          droplet_subject: 'healthmanager.droplet',
          component: { enabled: true, password: 'pw' },
        },
      }),
    ).toBe('reporter: reporter answers healthmanager.status, healthmanager.health and healthmanager.droplet; keeps /varz; registers as a VCAP component');
  });
});
