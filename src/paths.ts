/** Where the package's own files are, whether running from dist/ (built) or from source (tests). */
import { existsSync } from 'node:fs';
import { dirname, join, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function findRoot(start: string): string {
  let dir = start;
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'presets'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`hmgate package root not found above ${start}`);
    dir = parent;
  }
}

export const packageRoot = findRoot(here);
const built = here.includes(`${sep}dist${sep}`);
export const presetsDir = join(packageRoot, 'presets');
export const pluginsDir = built ? join(packageRoot, 'dist', 'plugins') : join(packageRoot, 'plugins');
export const schemasDir = join(packageRoot, 'schemas');
