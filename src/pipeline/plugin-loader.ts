/**
 * Resolves a stage's `plugin:` the same way for built-in and users' plugins: a built-in name (a
 * folder under plugins/), a path relative to the file that named it, or an installed package.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot, pluginsDir } from '../paths.js';
import { isPluginDefinition, type PluginDefinition } from '../sdk/plugin.js';

export class PluginLoadError extends Error {}

const BUILTIN_NAME = /^[a-z][a-z0-9-]*$/;
/** Store plugins live in `<name>-store/` folders so they read as stores in the tree. */
const FOLDER_SUFFIXES = ['', '-store'];

function indexFile(dir: string): string | undefined {
  for (const f of ['index.js', 'index.ts']) {
    const p = join(dir, f);
    if (existsSync(p)) return p;
  }
  return undefined;
}

export function builtinPluginNames(): string[] {
  if (!existsSync(pluginsDir)) return [];
  return readdirSync(pluginsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && indexFile(join(pluginsDir, d.name)))
    .map((d) => d.name.replace(/-store$/, ''))
    .sort();
}

function builtinFile(name: string): string | undefined {
  if (!BUILTIN_NAME.test(name)) return undefined;
  for (const suffix of FOLDER_SUFFIXES) {
    const dir = join(pluginsDir, name + suffix);
    const f = existsSync(dir) ? indexFile(dir) : undefined;
    if (f) return f;
  }
  return undefined;
}

/** A package's ESM entry point from its package.json (exports "." import/default, then main). */
function packageEntry(pkgDir: string): string {
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as {
    exports?: unknown;
    main?: string;
  };
  const pick = (e: unknown): string | undefined => {
    if (typeof e === 'string') return e;
    if (e && typeof e === 'object') {
      const o = e as Record<string, unknown>;
      return pick(o['.']) ?? pick(o.import) ?? pick(o.node) ?? pick(o.default);
    }
    return undefined;
  };
  return join(pkgDir, pick(pkg.exports) ?? pkg.main ?? 'index.js');
}

function findPackage(name: string, fromDirs: string[]): string | undefined {
  for (const start of fromDirs) {
    let dir = start;
    for (;;) {
      const candidate = join(dir, 'node_modules', name);
      if (existsSync(join(candidate, 'package.json'))) return packageEntry(candidate);
      const parent = dirname(dir);
      if (parent === dir) break;
      dir = parent;
    }
  }
  return undefined;
}

function pathEntry(spec: string, baseDir: string): string | undefined {
  const p = isAbsolute(spec) ? spec : resolve(baseDir, spec);
  if (!existsSync(p)) return undefined;
  if (statSync(p).isDirectory()) {
    return existsSync(join(p, 'package.json')) ? packageEntry(p) : indexFile(p);
  }
  return p;
}

export interface ResolvedPlugin {
  definition: PluginDefinition;
  /** The file it was loaded from. */
  file: string;
  builtin: boolean;
}

const cache = new Map<string, Promise<ResolvedPlugin>>();

/** Resolve and import a plugin. `baseDir` is the directory of the config file that named it. */
export function loadPlugin(spec: string, baseDir: string): Promise<ResolvedPlugin> {
  const isPath = spec.startsWith('.') || isAbsolute(spec);
  let file: string | undefined;
  let builtin = false;
  if (isPath) {
    file = pathEntry(spec, baseDir);
    if (!file) return Promise.reject(new PluginLoadError(`plugin "${spec}": no file at ${resolve(baseDir, spec)}`));
  } else {
    file = builtinFile(spec);
    builtin = file !== undefined;
    // Next to the config, where hmgate runs, and beside hmgate itself (installed together).
    file ??= findPackage(spec, [baseDir, process.cwd(), packageRoot]);
    if (!file) {
      return Promise.reject(
        new PluginLoadError(
          `unknown plugin "${spec}": not a built-in (${builtinPluginNames().join(', ')}), not a path (start it with ./), and no installed package by that name`,
        ),
      );
    }
  }
  const key = file;
  let pending = cache.get(key);
  if (!pending) {
    pending = importPlugin(spec, file, builtin);
    cache.set(key, pending);
    pending.catch(() => cache.delete(key));
  }
  return pending;
}

async function importPlugin(spec: string, file: string, builtin: boolean): Promise<ResolvedPlugin> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    throw new PluginLoadError(`plugin "${spec}" (${file}) failed to load: ${(err as Error).message.split('\n')[0]}`);
  }
  const candidate = mod.default ?? mod.plugin;
  if (!isPluginDefinition(candidate)) {
    throw new PluginLoadError(
      `plugin "${spec}" (${file}) does not export a plugin: its default export must have name, kind (source|store|policy|sink), optionsSchema and create()`,
    );
  }
  return { definition: candidate, file, builtin };
}
