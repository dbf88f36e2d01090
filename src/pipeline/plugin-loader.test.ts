import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinPluginNames, loadPlugin, PluginLoadError } from './plugin-loader.js';

const fixtures = resolve(__dirname, '../../test/fixtures');
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hmgate-plugins-'));
  await writeFile(join(dir, 'not-a-plugin.js'), 'export default { hello: "world" };\n');
  await writeFile(join(dir, 'throws.js'), 'throw new Error("boom at import");\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('plugin loader', () => {
  it('resolves a built-in by name, store folders included', async () => {
    expect(builtinPluginNames()).toContain('memory');
    const p = await loadPlugin('memory', dir);
    expect(p.builtin).toBe(true);
    expect(p.definition.name).toBe('memory');
    expect(p.definition.kind).toBe('store');
  });

  it('resolves a path relative to the config file', async () => {
    const p = await loadPlugin('./plugins/recorder-sink.js', fixtures);
    expect(p.builtin).toBe(false);
    expect(p.definition).toMatchObject({ name: 'recorder-sink', kind: 'sink' });
    expect(p.file).toBe(join(fixtures, 'plugins/recorder-sink.js'));
  });

  it('resolves an installed package by name', async () => {
    const p = await loadPlugin('hmgate-plugin-fixture', dir);
    expect(p.definition).toMatchObject({ name: 'fixture-source', kind: 'source' });
    expect(p.file).toMatch(/hmgate-plugin-fixture[/\\]index\.js$/);
  });

  it('names what it tried for an unknown plugin', async () => {
    await expect(loadPlugin('no-such-plugin', dir)).rejects.toThrow(PluginLoadError);
    await expect(loadPlugin('no-such-plugin', dir)).rejects.toThrow(
      /unknown plugin "no-such-plugin": not a built-in \(.*memory.*\), not a path \(start it with \.\/\), and no installed package by that name/,
    );
    await expect(loadPlugin('./missing.js', dir)).rejects.toThrow(`plugin "./missing.js": no file at ${join(dir, 'missing.js')}`);
  });

  it('rejects a module that does not export a plugin, and one that fails to load', async () => {
    await expect(loadPlugin('./not-a-plugin.js', dir)).rejects.toThrow(/does not export a plugin: its default export must have name, kind/);
    await expect(loadPlugin('./throws.js', dir)).rejects.toThrow(/failed to load: boom at import/);
  });
});
