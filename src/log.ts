/**
 * The one logger factory: pino JSON lines on stdout, `component` and `foundation` on every line,
 * a global level with per-component overrides, and secrets censored by key wherever they appear
 * in a logged object.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config/schema.js';

export type { Logger };

const SECRET_KEYS = ['password', 'secret', 'token', 'pass', 'authorization', 'client_key', 'private_key', 'api_key'];
// pino's redaction takes explicit paths; cover secrets up to three levels deep in logged objects.
const REDACT_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`, `*.*.*.${k}`]);

export interface LogOptions {
  foundation: string;
  level?: LogLevel;
  levels?: Record<string, LogLevel>;
  destination?: DestinationStream;
}

export interface LoggerFactory {
  root: Logger;
  /** A child logger for a component (stage id, engine, api, store, …). */
  component(name: string): Logger;
}

export function createLoggerFactory(opts: LogOptions): LoggerFactory {
  const root = pino(
    {
      level: opts.level ?? 'info',
      base: { foundation: opts.foundation },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '***' },
      messageKey: 'msg',
    },
    opts.destination ?? pino.destination({ dest: 1, sync: true }),
  );
  return {
    root,
    component(name) {
      const level = opts.levels?.[name];
      return root.child({ component: name }, level ? { level } : {});
    },
  };
}

/** One line for an error: its message, without a stack, for logs read by operators. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] || err.name;
  return String(err);
}
