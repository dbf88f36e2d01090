/**
 * Reads one YAML file into a plain value plus the position of every key and value, addressed by
 * JSON pointer, so that errors found later (schema, interpolation, plugins) point at the file and
 * line where the offending text was written.
 */
import { readFile } from 'node:fs/promises';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { ConfigError, type ConfigProblem, type SourcePos } from './errors.js';

export interface Located {
  /** Position of the key that names this value (absent for the root and list items). */
  key?: SourcePos;
  value: SourcePos;
}

export interface SourceFile {
  file: string;
  value: unknown;
  locations: Map<string, Located>;
}

export function pointer(parts: readonly (string | number)[]): string {
  return parts.map((p) => '/' + String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('');
}

export function parsePointer(ptr: string): string[] {
  if (ptr === '') return [];
  return ptr
    .slice(1)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
}

export async function readSourceFile(file: string): Promise<SourceFile> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new ConfigError([{ pos: { file, line: 1, col: 1 }, message: `cannot read config: ${why}` }]);
  }
  return parseSource(file, text);
}

export function parseSource(file: string, text: string): SourceFile {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const posAt = (offset: number): SourcePos => {
    const { line, col } = lineCounter.linePos(offset);
    return { file, line, col };
  };
  if (doc.errors.length > 0) {
    const problems: ConfigProblem[] = doc.errors.map((e) => ({
      pos: posAt(e.pos[0]),
      message: `YAML syntax error: ${e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '')}`,
    }));
    throw new ConfigError(problems);
  }
  const locations = new Map<string, Located>();
  const walk = (node: Node | null | undefined, parts: (string | number)[], key?: SourcePos): void => {
    const value = node?.range ? posAt(node.range[0]) : (key ?? { file, line: 1, col: 1 });
    locations.set(pointer(parts), { key, value });
    if (isMap(node)) {
      for (const pair of node.items) {
        if (!isPair(pair)) continue;
        const k = pair.key as Node | null;
        const name = isScalar(k) ? String(k.value) : String(k);
        const keyPos = k?.range ? posAt(k.range[0]) : value;
        walk(pair.value as Node | null, [...parts, name], keyPos);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => walk(item as Node, [...parts, i]));
    }
  };
  walk(doc.contents as Node | null, []);
  const value = doc.toJS({ maxAliasCount: 100 }) ?? {};
  return { file, value, locations };
}
