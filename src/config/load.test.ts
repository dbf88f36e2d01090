import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, formatProblem } from './errors.js';
import { findConfigFile, loadConfig } from './load.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-config-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function write(name: string, text: string): Promise<string> {
  const f = join(dir, name);
  await mkdir(join(f, '..'), { recursive: true });
  await writeFile(f, text);
  return f;
}

async function problems(file: string, env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  try {
    await loadConfig(file, { env, plugins: file.includes('stages') });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map(formatProblem);
    throw err;
  }
  return [];
}

/** The problems of a file, its stages validated too. */
async function problemsWithPlugins(file: string): Promise<string[]> {
  try {
    await loadConfig(file, { env: {} });
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map(formatProblem);
    throw err;
  }
  return [];
}

const minimal = 'api:\n  password: pw\n';

describe('loadConfig', () => {
  it('the top-level cc_partition is the default of every stage option of that name; a stage setting its own wins', async () => {
    const f = await write('p.yaml', `extends: ruby-hm-partitioned\ncc_partition: ng\nsinks:\n  cloud_controller:\n    cc_partition: blue\n${minimal}`);
    const { stages, display } = await loadConfig(f, { env: {} });
    const partition = (id: string) => stages.find((s) => s.id === id)!.options.cc_partition;
    expect([partition('heartbeats'), partition('desired'), partition('cloud_controller')]).toEqual(['ng', 'ng', 'blue']);
    expect(stages.find((s) => s.id === 'records')!.options.cc_partition).toBeUndefined(); // no such option there
    expect((display.sources as Record<string, Record<string, unknown>>).desired!.cc_partition).toBe('ng'); // print-config shows what runs
    const hm9000 = await loadConfig(await write('h.yaml', `extends: hm9000\n${minimal}`), { env: {} });
    expect(hm9000.stages.find((s) => s.id === 'heartbeats')!.options.cc_partition).toBeUndefined();
  });

  describe('one Ruby HM setting, one key', () => {
    type Options = Record<string, unknown>;
    const optionsOf = (stages: { id: string; options: Options }[]) => Object.fromEntries(stages.map((s) => [s.id, s.options]));
    const displayed = (display: Record<string, unknown>, section: string, id: string) => (display[section] as Record<string, Options>)[id]!;

    it('intervals.droplet_lost and intervals.flapping_timeout, set once, change every stage option that uses them', async () => {
      for (const preset of ['ruby-hm', 'ruby-hm-partitioned']) {
        const f = await write(`${preset}-once.yaml`, `extends: ${preset}\nintervals:\n  droplet_lost: 45s\n  flapping_timeout: 10m\n${minimal}`);
        const { stages, display } = await loadConfig(f, { env: {} });
        const o = optionsOf(stages);
        expect([o.missing!.droplet_lost, o.extra_instances!.droplet_lost, o.exit_restarts!.droplet_lost, o.heartbeats!.heartbeat_ttl]).toEqual([
          45_000, 45_000, 45_000, 45_000,
        ]);
        expect([o.flapping!.flapping_timeout, o.gc!.flapping_timeout]).toEqual([600_000, 600_000]);
        // print-config shows what runs, as written
        expect(displayed(display, 'policies', 'missing').droplet_lost).toBe('45s');
        expect(displayed(display, 'sources', 'heartbeats').heartbeat_ttl).toBe('45s');
        expect(displayed(display, 'policies', 'gc').flapping_timeout).toBe('10m');
        expect(display.intervals).toEqual({ droplet_lost: '45s', flapping_timeout: '10m' });
      }
    });

    it('a stage option that disagrees is an error naming both places and the key to set; one that agrees is not', async () => {
      const f = await write(
        'split.yaml',
        [
          'extends: ruby-hm',
          'policies:',
          '  missing:',
          '    droplet_lost: 60s',
          '  gc:',
          '    flapping_timeout: 500s',
          'sources:',
          '  heartbeats:',
          '    heartbeat_ttl: 3s',
          minimal,
        ].join('\n'),
      );
      const preset = join(__dirname, '../../presets/ruby-hm.yaml');
      const presetText = readFileSync(preset, 'utf8').split('\n');
      const at = (key: string) => {
        const line = presetText.findIndex((l) => l.startsWith(`  ${key}: `));
        return `${preset}:${line + 1}:${key.length + 5}`;
      };
      const list = await problemsWithPlugins(f);
      expect(list).toEqual([
        `${f}:4:19: policies.missing.droplet_lost (1m) disagrees with intervals.droplet_lost (30s, at ${at('droplet_lost')}): both are the Ruby HM's droplet_lost, one setting for every stage; set intervals.droplet_lost and remove policies.missing.droplet_lost`,
        `${f}:9:20: sources.heartbeats.heartbeat_ttl (3s) disagrees with intervals.droplet_lost (30s, at ${at('droplet_lost')}): both are the Ruby HM's droplet_lost, one setting for every stage; set intervals.droplet_lost and remove sources.heartbeats.heartbeat_ttl`,
      ]);
    });

    it("names where the Ruby HM's other intervals live", async () => {
      const f = await write('elsewhere.yaml', `extends: ruby-hm\nintervals:\n  min_restart_delay: 30s\n  desired_state_update: 30s\n${minimal}`);
      expect(await problemsWithPlugins(f)).toEqual([
        `${f}:3:3: intervals.min_restart_delay: the Ruby HM's min_restart_delay is policies.flapping.min_restart_delay here; intervals holds only the settings several stages use (droplet_lost, flapping_timeout)`,
        `${f}:4:3: intervals.desired_state_update: the Ruby HM's desired_state_update is sources.desired.poll_interval here; intervals holds only the settings several stages use (droplet_lost, flapping_timeout)`,
      ]);
    });

    it('every preset resolves the same stage options as when it wrote each stage its own droplet_lost, heartbeat_ttl and flapping_timeout', async () => {
      // The Ruby presets as they were written before intervals: the same values in every stage.
      const asBefore = [
        'freshness: { desired_ttl: 12hb }',
        'sources:',
        '  heartbeats: { heartbeat_ttl: 30s }',
        'policies:',
        '  exit_restarts: { droplet_lost: 30s }',
        '  flapping: { flapping_timeout: 500s }',
        '  missing: { droplet_lost: 30s }',
        '  extra_instances: { droplet_lost: 30s }',
        '  gc: { flapping_timeout: 500s }',
      ].join('\n');
      for (const preset of ['ruby-hm', 'ruby-hm-partitioned']) {
        const now = await loadConfig(await write(`${preset}-now.yaml`, `extends: ${preset}\n${minimal}`), { env: {} });
        const before = await loadConfig(await write(`${preset}-before.yaml`, `extends: ${preset}\n${asBefore}\n${minimal}`), { env: {} });
        expect(optionsOf(now.stages)).toEqual(optionsOf(before.stages));
        expect(now.config.freshness).toEqual(before.config.freshness);
        expect(now.stages.map((s) => s.id)).toEqual(before.stages.map((s) => s.id));
      }
      const hm9000 = await loadConfig(await write('hm9000-now.yaml', `extends: hm9000\n${minimal}`), { env: {} });
      expect(hm9000.config.freshness.desired_ttl).toBe(120_000);
      expect(hm9000.config.intervals).toBeUndefined();
      expect(hm9000.stages.find((s) => s.id === 'heartbeats')!.options.heartbeat_ttl).toBe(30_000);
    });
  });

  it('desired freshness lasts two polls of the desired source unless freshness.desired_ttl is written, whatever the heartbeat', async () => {
    const ttl = async (text: string) => {
      const { config, display } = await loadConfig(await write(`ttl-${Math.random().toString(36).slice(2)}.yaml`, `${text}\n${minimal}`), { env: {} });
      return [config.freshness.desired_ttl, (display.freshness as Record<string, unknown>).desired_ttl];
    };
    // The Ruby presets poll every 60 s: a 2 s heartbeat must not make desired state stale 24 s after each walk.
    expect(await ttl('extends: ruby-hm\nheartbeat_interval: 2s')).toEqual([120_000, '2m']);
    expect(await ttl('extends: ruby-hm-partitioned\nheartbeat_interval: 2s')).toEqual([120_000, '2m']);
    expect(await ttl('extends: ruby-hm\nsources:\n  desired:\n    poll_interval: 5m')).toEqual([600_000, '10m']);
    expect(await ttl('extends: ruby-hm\nheartbeat_interval: 2s\nfreshness:\n  desired_ttl: 90s')).toEqual([90_000, '90s']);
    // HM9000 writes its own, in heartbeats, as HM9000 did (twice its 6hb poll).
    expect(await ttl('extends: hm9000\nheartbeat_interval: 2s')).toEqual([24_000, '12hb']);
  });

  it('fills defaults and converts durations, hb included', async () => {
    const f = await write('a.yaml', `heartbeat_interval: 500ms\nanalyze_interval: 2hb\n${minimal}`);
    const { config, heartbeatMs, display } = await loadConfig(f, { env: {}, plugins: false });
    expect(heartbeatMs).toBe(500);
    expect(config.analyze_interval).toBe(1000);
    expect(config.freshness).toEqual({
      gate: true,
      actual_ttl: 1500,
      desired_ttl: 6000,
      max_ingest_lag: 500,
      collapse: { share: 0.55, min_agents: 50, silent_after: 1000, window: 1500 },
    });
    expect(config.foundation).toBe('default');
    expect(config.bus.servers).toEqual(['nats://127.0.0.1:4222']);
    expect(config.store).toEqual({ plugin: 'memory' });
    expect(config.api).toEqual({ listen: '127.0.0.1:5155', user: 'magnet', password: 'pw', enabled: true });
    // the display copy keeps durations as written
    expect(display.analyze_interval).toBe('2hb');
    expect((display.freshness as Record<string, unknown>).actual_ttl).toBe('3hb');
  });

  it('reports an unknown key, a bad duration and a wrong type at their positions, all at once', async () => {
    const f = await write('bad.yaml', ['foundation: eu-1', 'heartbeat_interval: 10x', 'api:', '  password: pw', '  listen: [1, 2]', 'bogus: 1', ''].join('\n'));
    expect(await problems(f)).toEqual([
      `${f}:2:21: heartbeat_interval: bad duration "10x": use a number with ms, s, m, h or hb (heartbeats), e.g. "250ms", "10s", "3hb"`,
      `${f}:5:11: api.listen must be string, not a list`,
      `${f}:6:1: unknown key "bogus" (known keys: extends, foundation, heartbeat_interval, analyze_interval, time_resolution, freshness, log, bus, leader, dispatch, clock, cc_partition, intervals, events, store, sources, policies, reporters, sinks, api)`,
    ]);
  });

  it('suggests the key that was probably meant', async () => {
    const f = await write('typo.yaml', `heartbeat_intervall: 10s\n${minimal}`);
    expect(await problems(f)).toEqual([`${f}:1:1: unknown key "heartbeat_intervall" (did you mean "heartbeat_interval"?)`]);
  });

  it('reports a missing required key at its parent', async () => {
    const f = await write('req.yaml', 'foundation: x\napi:\n  user: u\n');
    expect(await problems(f)).toEqual([`${f}:2:1: missing required key "password" in api`]);
  });

  it('reports YAML syntax errors with their position', async () => {
    const f = await write('syntax.yaml', 'foundation: [unclosed\napi:\n  password: pw\n');
    const list = await problems(f);
    expect(list).toHaveLength(1);
    expect(list[0]).toMatch(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: YAML syntax error: `));
  });

  it('reports duplicate keys', async () => {
    const f = await write('dup.yaml', `foundation: a\nfoundation: b\n${minimal}`);
    const list = await problems(f);
    expect(list[0]).toMatch(/dup\.yaml:2:1: YAML syntax error: .*unique/i);
  });

  it('interpolates the environment, and coerces a whole ${VAR} where a number or boolean is expected', async () => {
    const f = await write('env.yaml', 'foundation: ${FND:-dev}\nfreshness:\n  gate: ${GATE}\napi:\n  password: ${PW}\n  user: ${MISSING_USER:-magnet}\n');
    const { config } = await loadConfig(f, { env: { PW: '12345', GATE: 'false' }, plugins: false });
    expect(config.foundation).toBe('dev');
    expect(config.freshness.gate).toBe(false);
    expect(config.api.password).toBe('12345');
    expect(config.api.user).toBe('magnet');
  });

  it('reports a bad ${VAR} at the string that used it', async () => {
    const f = await write('envbad.yaml', 'api:\n  password: ${HM_PW}\nfoundation: "${bad name}"\n');
    expect(await problems(f)).toEqual([
      `${f}:2:13: environment variable HM_PW is not set (write \${HM_PW:-default} to give a default)`,
      `${f}:3:13: bad \${bad name}: "bad name" is not a variable name (letters, digits, _)`,
    ]);
  });

  it('extends a built-in preset: maps merge, the file wins, errors in the preset point at the preset', async () => {
    const f = await write('fnd.yaml', `extends: hm9000\nheartbeat_interval: 1s\n${minimal}`);
    const { config } = await loadConfig(f, { env: {}, plugins: false });
    expect(config.heartbeat_interval).toBe(1000);
    expect(config.freshness.actual_ttl).toBe(3000); // preset's 3hb scaled by this file's heartbeat
    expect(config.api.listen).toBe('0.0.0.0:5155'); // from the preset
    expect(config.api.password).toBe('pw');
  });

  it('extends a path: lists replace, null removes, positions point at the file that wrote the text', async () => {
    const base = await write(
      'base/base.yaml',
      ['bus:', '  servers: [nats://127.0.0.1:1, nats://127.0.0.1:2]', 'log:', '  levels: { a: debug, b: warn }', 'analyze_interval: 3q', ''].join('\n'),
    );
    const f = await write('child.yaml', `extends: ./base/base.yaml\nbus:\n  servers: [nats://127.0.0.1:3]\nlog:\n  levels: { b: null }\n${minimal}`);
    expect(await problems(f)).toEqual([
      expect.stringMatching(new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:5:19: analyze_interval: bad duration "3q"`)),
    ]);
    await write('base/base.yaml', ['bus:', '  servers: [nats://127.0.0.1:1, nats://127.0.0.1:2]', 'log:', '  levels: { a: debug, b: warn }', ''].join('\n'));
    const { config } = await loadConfig(f, { env: {}, plugins: false });
    expect(config.bus.servers).toEqual(['nats://127.0.0.1:3']);
    expect(config.log.levels).toEqual({ a: 'debug' });
  });

  it('names an unknown preset and an extends loop', async () => {
    const f = await write('x.yaml', `extends: hm9001\n${minimal}`);
    expect(await problems(f)).toEqual([expect.stringMatching(/x\.yaml:1:10: extends "hm9001": no such preset \(hm9000.*\) and no file at/)]);
    const a = await write('loop-a.yaml', 'extends: ./loop-b.yaml\n');
    await write('loop-b.yaml', 'extends: ./loop-a.yaml\n');
    expect(await problems(a)).toEqual([expect.stringMatching(/loop-b\.yaml:1:10: extends "\.\/loop-a\.yaml" makes a loop/)]);
  });

  it('rejects a file that is not a map, and a missing file', async () => {
    const f = await write('list.yaml', '- a\n- b\n');
    expect(await problems(f)).toEqual([`${f}:1:1: the config must be a map of keys (foundation, bus, sources, …)`]);
    expect(await problems(join(dir, 'nope.yaml'))).toEqual([`${join(dir, 'nope.yaml')}:1:1: cannot read config: no such file`]);
  });

  it('finds hmgate.config.yaml or .hmgaterc.yaml in the working directory', async () => {
    await write('.hmgaterc.yaml', minimal);
    expect(await findConfigFile(undefined, dir)).toBe(join(dir, '.hmgaterc.yaml'));
    await write('hmgate.config.yaml', minimal);
    expect(await findConfigFile(undefined, dir)).toBe(join(dir, 'hmgate.config.yaml'));
    expect(await findConfigFile('other.yaml', dir)).toBe(join(dir, 'other.yaml'));
    const empty = await mkdtemp(join(tmpdir(), 'hmgate-empty-'));
    await expect(findConfigFile(undefined, empty)).rejects.toThrow(/no config file: give -c FILE/);
    await rm(empty, { recursive: true });
  });
});

describe('loadConfig with plugins', () => {
  const fixtures = join(__dirname, '../../test/fixtures');

  it('validates each stage against its plugin schema, with defaults, durations and positions', async () => {
    const f = await write(
      'stages.yaml',
      [
        `heartbeat_interval: 2s`,
        `sources:`,
        `  extra:`,
        `    plugin: hmgate-plugin-fixture`,
        `    marker_file: /tmp/x`,
        `sinks:`,
        `  rec:`,
        `    plugin: ${fixtures}/plugins/recorder-sink.js`,
        `    marker_file: /tmp/y`,
        minimal,
      ].join('\n'),
    );
    const loaded = await loadConfig(f, { env: {} });
    expect(loaded.stages.map((s) => [s.section, s.id, s.plugin.name])).toEqual([
      ['store', 'store', 'memory'],
      ['sources', 'extra', 'fixture-source'],
      ['sinks', 'rec', 'recorder-sink'],
    ]);
    expect(loaded.stages[1]!.options).toEqual({ marker_file: '/tmp/x', every: 4000 });
    expect(loaded.stages[2]!.options).toEqual({ marker_file: '/tmp/y', label: 'recorder', fail_start: false });
  });

  it('reports plugin option errors, unknown plugins and wrong kinds at their positions', async () => {
    const f = await write(
      'badstages.yaml',
      [
        `sources:`,
        `  extra:`,
        `    plugin: hmgate-plugin-fixture`,
        `    every: soon`,
        `    colour: blue`,
        `  nope:`,
        `    plugin: does-not-exist`,
        `sinks:`,
        `  wrong:`,
        `    plugin: memory`,
        `  off:`,
        `    plugin: does-not-exist-either`,
        `    enabled: false`,
        minimal,
      ].join('\n'),
    );
    const list = await problems(f);
    expect(list).toEqual([
      `${f}:2:3: missing required key "marker_file" in sources.extra`,
      `${f}:4:12: sources.extra.every: bad duration "soon": use a number with ms, s, m, h or hb (heartbeats), e.g. "250ms", "10s", "3hb"`,
      `${f}:5:5: unknown key "colour" in sources.extra (known keys: marker_file, every)`,
      expect.stringMatching(new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:7:13: unknown plugin "does-not-exist"`)),
      `${f}:10:13: plugin "memory" is a store plugin; sinks takes sink plugins`,
    ]);
  });
});
