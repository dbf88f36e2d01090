import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../paths.js';
import { builtinPluginNames, loadPlugin } from '../pipeline/plugin-loader.js';
import { REFERENCE_END, REFERENCE_START, renderReference, spliceReference } from './reference.js';

describe('config reference', () => {
  it('renders keys with types, defaults and descriptions', () => {
    const text = renderReference([]);
    expect(text).toContain('| `heartbeat_interval` | duration | `"10s"` |');
    expect(text).toContain('| `api.password` | string | **required** |');
    expect(text).toContain('| `freshness.actual_ttl` | duration | `"3hb"` |');
    expect(text).toContain('| `log.level` | "fatal" \\| "error" \\| "warn" \\| "info" \\| "debug" \\| "trace" \\| "silent" |');
    expect(text).toContain('| `log.format` | "auto" \\| "json" \\| "pretty" | `"auto"` |');
  });

  it('splices between the markers only', () => {
    expect(spliceReference(`a\n${REFERENCE_START}\nold\n${REFERENCE_END}\nb`, 'NEW')).toBe('a\nNEW\nb');
    expect(() => spliceReference('no markers', 'x')).toThrow(/markers/);
  });

  it('docs/configuration.md carries the reference of the current schemas (run npm run docs after changing one)', async () => {
    const plugins = await Promise.all(builtinPluginNames().map(async (n) => (await loadPlugin(n, packageRoot)).definition));
    const readme = readFileSync(join(packageRoot, 'docs', 'configuration.md'), 'utf8');
    const start = readme.indexOf(REFERENCE_START);
    const end = readme.indexOf(REFERENCE_END) + REFERENCE_END.length;
    expect(readme.slice(start, end)).toBe(renderReference(plugins));
  });
});
