/**
 * Writes what is generated from the TypeBox definitions, so nothing is written twice by hand:
 * schemas/config.schema.json and schemas/plugins/<name>.schema.json for every built-in plugin.
 * With --docs it also rewrites the config reference of docs/configuration.md (npm run docs).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderReference, spliceReference } from '../src/config/reference.js';
import { ConfigSchema } from '../src/config/schema.js';
import { MESSAGE_SCHEMAS } from '../src/messages/schemas.js';
import { packageRoot, schemasDir } from '../src/paths.js';
import { builtinPluginNames, loadPlugin } from '../src/pipeline/plugin-loader.js';
import type { PluginDefinition } from '../src/sdk/plugin.js';

function write(file: string, schema: object, id: string, title: string): void {
  const out = { $schema: 'http://json-schema.org/draft-07/schema#', $id: id, title, ...JSON.parse(JSON.stringify(schema)) };
  writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
}

mkdirSync(join(schemasDir, 'plugins'), { recursive: true });
mkdirSync(join(schemasDir, 'messages'), { recursive: true });
write(join(schemasDir, 'config.schema.json'), ConfigSchema, 'hmgate/config.schema.json', 'hmgate config');
for (const [name, schema] of Object.entries(MESSAGE_SCHEMAS)) {
  write(join(schemasDir, 'messages', `${name}.schema.json`), schema, `hmgate/messages/${name}.schema.json`, `inbound message: ${name}`);
}
const plugins: PluginDefinition[] = [];
for (const name of builtinPluginNames()) {
  const { definition } = await loadPlugin(name, process.cwd());
  plugins.push(definition);
  write(
    join(schemasDir, 'plugins', `${definition.name}.schema.json`),
    definition.optionsSchema,
    `hmgate/plugins/${definition.name}.schema.json`,
    `${definition.kind} plugin "${definition.name}"${definition.description ? `: ${definition.description}` : ''}`,
  );
}
process.stdout.write(`schemas written for the config and ${plugins.length} built-in plugins\n`);
if (process.argv.includes('--docs')) {
  const page = join(packageRoot, 'docs', 'configuration.md');
  writeFileSync(page, spliceReference(readFileSync(page, 'utf8'), renderReference(plugins)));
  process.stdout.write('docs/configuration.md config reference written\n');
}
