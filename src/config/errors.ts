/**
 * Config errors always point at a place: FILE:LINE:COL: message. A ConfigError carries every
 * problem found, not only the first, so an operator fixes them all in one go.
 */
import { maskUrl } from './mask.js';

export interface SourcePos {
  file: string;
  line: number;
  col: number;
}

export interface ConfigProblem {
  pos: SourcePos;
  message: string;
}

export function formatProblem(p: ConfigProblem): string {
  // A message may quote the offending value; a URL in it keeps its credentials to itself.
  return `${p.pos.file}:${p.pos.line}:${p.pos.col}: ${maskUrl(p.message)}`;
}

export class ConfigError extends Error {
  constructor(readonly problems: ConfigProblem[]) {
    super(problems.map(formatProblem).join('\n'));
    this.name = 'ConfigError';
  }
}
