/**
 * Loading a config: find the file (cosmiconfig search or -c), follow `extends:` (a built-in preset
 * or a path), deep-merge, interpolate `${VAR}`, validate the whole config and each stage's options
 * against its plugin's schema. Every problem found is reported at FILE:LINE:COL of the file that
 * wrote the offending text — a preset, an extended file, or the operator's own.
 */
import { cosmiconfig } from 'cosmiconfig';
import { existsSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { presetsDir } from '../paths.js';
import { natsConnectSettings } from '../bus/nats-url.js';
import { loadPlugin, PluginLoadError } from '../pipeline/plugin-loader.js';
import type { PluginDefinition, PluginKind } from '../sdk/plugin.js';
import { formatDuration, parseDuration } from './duration.js';
import { ConfigError, type ConfigProblem, type SourcePos } from './errors.js';
import { interpolate } from './interpolate.js';
import { deepMerge, isPlainObject } from './merge.js';
import { noteFilledFrom } from './option-keys.js';
import { ConfigSchema, type Config, type StageSection } from './schema.js';
import { parsePointer, pointer, readSourceFile, type Located, type SourceFile } from './source.js';
import { makeValidator, type SchemaProblem } from './validate.js';

export const SEARCH_PLACES = ['hmgate.config.yaml', 'hmgate.config.yml', '.hmgaterc.yaml', '.hmgaterc.yml', '.hmgaterc'];

export interface ResolvedStage {
  id: string;
  section: StageSection;
  kind: PluginKind;
  plugin: PluginDefinition;
  /** The `plugin:` value as written. */
  pluginSpec: string;
  /** Validated options (defaults filled, durations in ms), without `plugin`/`enabled`. */
  options: Record<string, unknown>;
}

export interface LoadedConfig {
  file: string;
  /** Validated config with defaults; durations in milliseconds. */
  config: Config;
  /** The merged, interpolated config with defaults, durations as written (for print-config). */
  display: Record<string, unknown>;
  heartbeatMs: number;
  stages: ResolvedStage[];
  /** Where a JSON pointer's text was written. */
  locate(ptr: string, atKey?: boolean): SourcePos;
}

export class ConfigNotFoundError extends Error {}

const SECTION_KIND: Record<StageSection, PluginKind> = { store: 'store', sources: 'source', policies: 'policy', reporters: 'reporter', sinks: 'sink' };

/**
 * An original's setting that several stages use, set once at the top level (`key`): every stage
 * option named `option` that the stage does not write takes its value. `strict`: a stage that
 * writes another value is an error (one setting has one value); cc_partition is not strict, a
 * stage may keep its own partition.
 */
interface SharedSetting {
  key: string;
  option: string;
  type: 'string' | 'duration';
  strict: boolean;
}

const SHARED_SETTINGS: readonly SharedSetting[] = [
  { key: 'cc_partition', option: 'cc_partition', type: 'string', strict: false },
  { key: 'intervals.droplet_lost', option: 'droplet_lost', type: 'duration', strict: true },
  { key: 'intervals.droplet_lost', option: 'heartbeat_ttl', type: 'duration', strict: true },
  { key: 'intervals.flapping_timeout', option: 'flapping_timeout', type: 'duration', strict: true },
];

/** Where hmgate keeps the Ruby HM's other intervals, each used by one stage (docs/ruby-hm.md#configuration-keys). */
const RUBY_INTERVALS_ELSEWHERE: Record<string, string> = {
  droplets_analysis: 'analyze_interval',
  desired_state_update: 'sources.desired.poll_interval',
  desired_state_lost: 'policies.extra_app.desired_state_lost',
  request_queue: 'dispatch.queue.interval',
  queue_batch_size: 'dispatch.queue.batch_size',
  bulk_credentials_timeout: 'sources.desired.credentials_timeout',
  nats_request_timeout: 'sources.desired.credentials_timeout',
  run_loop_interval: 'events.run_loop',
  flapping_death: 'policies.flapping.flapping_death',
  giveup_crash_number: 'policies.flapping.giveup_crash_number',
  min_restart_delay: 'policies.flapping.min_restart_delay',
  max_restart_delay: 'policies.flapping.max_restart_delay',
  delay_time_noise: 'policies.flapping.delay_time_noise',
  droplet_gc: 'policies.gc.droplet_gc',
  droplet_gc_grace_period: 'policies.gc.droplet_gc_grace_period',
  max_shadowing_delay: 'dispatch.shadow.window',
};

function valueAt(root: unknown, dotted: string): unknown {
  let v = root;
  for (const part of dotted.split('.')) v = isPlainObject(v) ? v[part] : undefined;
  return v;
}

const dottedPath = (ptr: string) => parsePointer(ptr).join('.');
const posText = (p: SourcePos) => `${p.file}:${p.line}:${p.col}`;

/** The config file to use: -c FILE, or the first of SEARCH_PLACES found from `cwd` upwards. */
export async function findConfigFile(explicit: string | undefined, cwd = process.cwd()): Promise<string> {
  if (explicit) return resolve(cwd, explicit);
  const explorer = cosmiconfig('hmgate', {
    searchPlaces: SEARCH_PLACES,
    searchStrategy: 'global',
    stopDir: cwd,
    // We parse the file ourselves, keeping positions; cosmiconfig only finds it.
    loaders: { '.yaml': () => ({}), '.yml': () => ({}), noExt: () => ({}) },
  });
  const found = await explorer.search(cwd);
  if (!found) throw new ConfigNotFoundError(`no config file: give -c FILE, or put one of ${SEARCH_PLACES.join(', ')} in ${cwd}`);
  return found.filepath;
}

interface Layer {
  source: SourceFile;
}

function presetFile(name: string): string | undefined {
  if (name.includes('/') || name.includes('\\') || /\.ya?ml$/.test(name)) return undefined;
  const f = join(presetsDir, `${name}.yaml`);
  return existsSync(f) ? f : undefined;
}

/** Reads `file` and every file it extends; returns layers from the most specific to the base. */
async function readLayers(file: string): Promise<Layer[]> {
  const layers: Layer[] = [];
  const seen = new Set<string>();
  let current: string | undefined = file;
  while (current) {
    const source = await readSourceFile(current);
    layers.push({ source });
    seen.add(current);
    const ext = isPlainObject(source.value) ? source.value.extends : undefined;
    if (ext === undefined) break;
    const loc = source.locations.get('/extends')!;
    if (typeof ext !== 'string' || ext === '') {
      throw new ConfigError([{ pos: loc.value, message: 'extends must be a preset name (hm9000, ruby-hm, ruby-hm-partitioned) or a path' }]);
    }
    const next = presetFile(ext) ?? (isAbsolute(ext) ? ext : resolve(dirname(source.file), ext));
    if (!existsSync(next)) {
      const presets = ['hm9000', 'ruby-hm', 'ruby-hm-partitioned'].filter((p) => presetFile(p));
      throw new ConfigError([
        { pos: loc.value, message: `extends "${ext}": no such preset (${presets.join(', ') || 'none installed'}) and no file at ${next}` },
      ]);
    }
    if (seen.has(next)) throw new ConfigError([{ pos: loc.value, message: `extends "${ext}" makes a loop (${basename(next)} is already extended)` }]);
    current = next;
  }
  return layers;
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv;
  /** Resolve and validate plugins (default true). */
  plugins?: boolean;
}

export async function loadConfig(file: string, opts: LoadOptions = {}): Promise<LoadedConfig> {
  const env = opts.env ?? process.env;
  const layers = await readLayers(file);
  let merged: unknown = {};
  for (const layer of [...layers].reverse()) merged = deepMerge(merged, layer.source.value);
  if (isPlainObject(merged)) delete merged.extends;
  if (!isPlainObject(merged)) {
    throw new ConfigError([{ pos: { file, line: 1, col: 1 }, message: 'the config must be a map of keys (foundation, bus, sources, …)' }]);
  }

  const locate = (ptr: string, atKey = false): SourcePos => {
    // The most specific layer that wrote this pointer (or its nearest parent) wrote the text.
    let parts = parsePointer(ptr);
    for (;;) {
      const p = pointer(parts);
      for (const { source } of layers) {
        const loc: Located | undefined = source.locations.get(p);
        if (loc) return atKey && p === ptr ? (loc.key ?? loc.value) : p === ptr ? loc.value : (loc.key ?? loc.value);
      }
      if (parts.length === 0) return { file, line: 1, col: 1 };
      parts = parts.slice(0, -1);
    }
  };

  const problems: ConfigProblem[] = [];
  const report = (list: SchemaProblem[]) => {
    for (const p of list) {
      // A Ruby HM interval that one stage uses is not in intervals: say where it is.
      const name = p.atKey && /^\/intervals\/[^/]+$/.test(p.pointer) ? parsePointer(p.pointer)[1]! : undefined;
      const elsewhere = name !== undefined && Object.hasOwn(RUBY_INTERVALS_ELSEWHERE, name) ? RUBY_INTERVALS_ELSEWHERE[name] : undefined;
      const message = elsewhere
        ? `intervals.${name}: the Ruby HM's ${name} is ${elsewhere} here; intervals holds only the settings several stages use (droplet_lost, flapping_timeout)`
        : p.message;
      problems.push({ pos: locate(p.pointer, p.atKey), message });
    }
  };

  const interp = interpolate(merged, env);
  for (const e of interp.errors) problems.push({ pos: locate(e.pointer), message: e.message });
  const raw = interp.value as Record<string, unknown>;

  let heartbeatMs = 10_000;
  try {
    if (raw.heartbeat_interval !== undefined) heartbeatMs = parseDuration(raw.heartbeat_interval);
  } catch {
    // reported by the schema below
  }
  if (heartbeatMs <= 0) {
    problems.push({ pos: locate('/heartbeat_interval'), message: 'heartbeat_interval must be greater than 0' });
    heartbeatMs = 10_000;
  }

  const converting = makeValidator({ heartbeatMs, convertDurations: true });
  const displaying = makeValidator({ heartbeatMs, convertDurations: false });
  const config = coerceAndValidate(converting, ConfigSchema, raw, interp.interpolated, '', report) as Config;
  // Credentials in bus.servers URLs must agree with each other and with bus.user/password/token.
  const bus = isPlainObject(config) ? config.bus : undefined;
  if (isPlainObject(bus) && Array.isArray(bus.servers) && bus.servers.every((u) => typeof u === 'string')) {
    for (const p of natsConnectSettings(bus.servers, bus).problems) problems.push({ pos: locate(p.pointer), message: p.message });
  }
  const display = inSchemaOrder(structuredClone(raw));
  displaying.validate(ConfigSchema, display);

  const stages: ResolvedStage[] = [];
  if (opts.plugins !== false && isPlainObject(config)) {
    for (const section of ['store', 'sources', 'policies', 'reporters', 'sinks'] as StageSection[]) {
      const entries: [string, unknown][] = section === 'store' ? [['store', config.store]] : Object.entries((config[section] as Record<string, unknown>) ?? {});
      for (const [id, entry] of entries) {
        if (!isPlainObject(entry) || entry.enabled === false || typeof entry.plugin !== 'string') continue;
        const base = section === 'store' ? '/store' : `/${section}/${id}`;
        const pluginPos = locate(`${base}/plugin`);
        let definition: PluginDefinition;
        try {
          definition = (await loadPlugin(entry.plugin, dirname(pluginPos.file))).definition;
        } catch (err) {
          if (!(err instanceof PluginLoadError)) throw err;
          problems.push({ pos: pluginPos, message: err.message });
          continue;
        }
        const kind = SECTION_KIND[section];
        if (definition.kind !== kind) {
          problems.push({ pos: pluginPos, message: `plugin "${entry.plugin}" is a ${definition.kind} plugin; ${section} takes ${kind} plugins` });
          continue;
        }
        const { plugin: _p, enabled: _e, ...rawOptions } = stageEntry(raw, section, id);
        // A top-level setting (the top-level cc_partition, intervals) is the value of every stage option it names.
        const props = (definition.optionsSchema as { properties?: Record<string, unknown> }).properties ?? {};
        const filled: SharedSetting[] = [];
        const ownValue: SharedSetting[] = [];
        for (const s of SHARED_SETTINGS) {
          const value = valueAt(config, s.key);
          const valid = s.type === 'string' ? typeof value === 'string' : typeof value === 'number';
          if (!valid || !(s.option in props)) continue;
          if (rawOptions[s.option] === undefined) {
            rawOptions[s.option] = valueAt(raw, s.key);
            filled.push(s);
          } else if (s.strict) ownValue.push(s);
        }
        const options = coerceAndValidate(converting, definition.optionsSchema, rawOptions, interp.interpolated, base, report) as Record<string, unknown>;
        for (const s of filled) noteFilledFrom(options, s.option, s.key);
        for (const s of ownValue) {
          const mine = options[s.option];
          const shared = valueAt(config, s.key) as number;
          if (typeof mine !== 'number' || mine === shared) continue;
          const ptr = `${base}/${s.option}`;
          const keyPtr = `/${s.key.replace(/\./g, '/')}`;
          problems.push({
            pos: locate(ptr),
            message: `${dottedPath(ptr)} (${formatDuration(mine)}) disagrees with ${s.key} (${formatDuration(shared)}, at ${posText(locate(keyPtr))}): both are the Ruby HM's ${s.key.split('.').pop()!}, one setting for every stage; set ${s.key} and remove ${dottedPath(ptr)}`,
          });
        }
        // print-config shows the plugin's defaults too, durations as written.
        const displayed = stageEntry(display, section, id);
        const { plugin: _dp, enabled: _de, ...displayOptions } = displayed;
        for (const s of filled) if (displayOptions[s.option] === undefined) displayOptions[s.option] = rawOptions[s.option];
        displaying.validate(definition.optionsSchema, displayOptions);
        Object.assign(displayed, displayOptions);
        stages.push({ id, section, kind, plugin: definition, pluginSpec: entry.plugin, options });
      }
    }
  }
  // freshness.desired_ttl not written: twice the longest poll of the sources, so desired state
  // stays fresh from one fetch past the next, whatever the heartbeat (the Ruby presets poll every 60 s).
  const polls = stages.filter((s) => s.section === 'sources' && typeof s.options.poll_interval === 'number').map((s) => Number(s.options.poll_interval));
  const ttlWritten = isPlainObject(raw.freshness) && raw.freshness.desired_ttl !== undefined;
  if (!ttlWritten && polls.length > 0 && isPlainObject(config.freshness) && isPlainObject(display.freshness)) {
    config.freshness.desired_ttl = 2 * Math.max(...polls);
    display.freshness.desired_ttl = formatDuration(config.freshness.desired_ttl);
  }
  if (problems.length > 0) throw new ConfigError(sortProblems(problems));
  return { file, config, display, heartbeatMs, stages, locate };
}

/** Top-level keys in the order the schema lists them, so print-config reads like the reference. */
function inSchemaOrder(value: Record<string, unknown>): Record<string, unknown> {
  const order = Object.keys(ConfigSchema.properties);
  const out: Record<string, unknown> = {};
  for (const k of order) if (k in value) out[k] = value[k];
  for (const k of Object.keys(value)) if (!(k in out)) out[k] = value[k];
  return out;
}

function stageEntry(root: Record<string, unknown>, section: StageSection, id: string): Record<string, unknown> {
  const entry = section === 'store' ? root.store : (root[section] as Record<string, unknown> | undefined)?.[id];
  return isPlainObject(entry) ? entry : {};
}

/**
 * Validates a copy of `data`. A string that came whole from `${VAR}` may stand for a number or a
 * boolean where the schema wants one (the environment only has strings), so such type errors are
 * retried with the converted value.
 */
function coerceAndValidate(
  v: ReturnType<typeof makeValidator>,
  schema: Parameters<ReturnType<typeof makeValidator>['validate']>[0],
  data: unknown,
  interpolated: Set<string>,
  base: string,
  report: (p: SchemaProblem[]) => void,
): unknown {
  const input = structuredClone(data);
  for (let attempt = 0; ; attempt++) {
    const copy = structuredClone(input);
    const problems = v.validate(schema, copy, base);
    const fixable = attempt < 3 ? problems.filter((p) => interpolated.has(p.pointer) && / must be (number|integer|boolean)/.test(p.message)) : [];
    let fixed = 0;
    for (const p of fixable) {
      const parts = parsePointer(p.pointer.slice(base.length));
      const last = parts.pop()!;
      let parent = input as Record<string, unknown>;
      for (const part of parts) parent = parent[part] as Record<string, unknown>;
      const s = parent[last];
      if (typeof s !== 'string') continue;
      if (/must be boolean/.test(p.message) && (s === 'true' || s === 'false')) parent[last] = s === 'true';
      else if (/must be (number|integer)/.test(p.message) && s.trim() !== '' && Number.isFinite(Number(s))) parent[last] = Number(s);
      else continue;
      fixed++;
    }
    if (fixed === 0) {
      report(problems);
      return copy;
    }
  }
}

function sortProblems(problems: ConfigProblem[]): ConfigProblem[] {
  return problems.sort((a, b) => a.pos.file.localeCompare(b.pos.file) || a.pos.line - b.pos.line || a.pos.col - b.pos.col);
}
