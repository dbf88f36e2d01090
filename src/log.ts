/**
 * The one logger factory: pino JSON lines on stdout, `component` and `foundation` on every line,
 * a global level with per-component overrides, and secrets censored by key wherever they appear
 * in a logged object. `format: pretty` renders those same JSON lines with pino-pretty, after
 * redaction, so a readable line carries every field and masks exactly what the JSON line masks.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import pinoPretty from 'pino-pretty';
import type { Config, LogLevel } from './config/schema.js';

export type { Logger };

const SECRET_KEYS = ['password', 'secret', 'token', 'pass', 'authorization', 'client_key', 'private_key', 'api_key'];
// pino's redaction takes explicit paths; cover secrets up to three levels deep in logged objects.
const REDACT_PATHS = SECRET_KEYS.flatMap((k) => [k, `*.${k}`, `*.*.${k}`, `*.*.*.${k}`]);

export interface LogOptions {
  foundation: string;
  level?: LogLevel;
  levels?: Record<string, LogLevel>;
  /** json (the default here), pretty, or auto: pretty when logging to stdout and it is a terminal. */
  format?: LogFormat;
  destination?: DestinationStream;
}

export type LogFormat = 'auto' | 'json' | 'pretty';

export interface LoggerFactory {
  root: Logger;
  /** A child logger for a component (stage id, engine, api, store, …). */
  component(name: string): Logger;
}

/** Whether lines are pretty: `auto` is pretty only when they go to stdout and it is a terminal. */
export function isPretty(format: LogFormat | undefined, destination?: DestinationStream): boolean {
  if (format === 'auto') return !destination && process.stdout.isTTY === true;
  return format === 'pretty';
}

// pino-pretty puts these keys in its header (`(name/pid on hostname) <caller>`) or drops them
// (`timestamp`); hmgate's lines carry them only as facts, so they are shown as facts after the message.
const HEADER_KEYS = ['name', 'pid', 'hostname', 'caller', 'timestamp'];

/**
 * Renders each JSON line pino wrote (already redacted) with pino-pretty, synchronously:
 * `[time] LEVEL: [foundation/component] msg {other fields}`, one line a record (an `err`'s stack
 * on the lines below). Colours only on stdout, as pino-pretty decides (a terminal, NO_COLOR).
 */
function prettyDestination(dest: DestinationStream, colorize: boolean | undefined): DestinationStream {
  let moved = '';
  const render = pinoPretty.prettyFactory({
    ...(colorize === undefined ? {} : { colorize }),
    translateTime: false,
    singleLine: true,
    ignore: 'foundation,component',
    errorLikeObjectKeys: ['err'],
    messageFormat: (log, messageKey) => {
      const where = log.component === undefined ? `${log.foundation}` : `${log.foundation}/${log.component}`;
      return `[${where}] ${log[messageKey] ?? ''}${moved}`;
    },
  });
  return {
    write(line: string) {
      let record: Record<string, unknown>;
      try {
        record = JSON.parse(line) as Record<string, unknown>;
      } catch {
        dest.write(line);
        return;
      }
      const header = HEADER_KEYS.filter((k) => k in record);
      moved = header.length ? ` ${JSON.stringify(Object.fromEntries(header.map((k) => [k, record[k]])))}` : '';
      for (const k of header) delete record[k];
      dest.write(render(record));
    },
  };
}

export function createLoggerFactory(opts: LogOptions): LoggerFactory {
  const destination = opts.destination ?? pino.destination({ dest: 1, sync: true });
  const root = pino(
    {
      level: opts.level ?? 'info',
      base: { foundation: opts.foundation },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: '***' },
      messageKey: 'msg',
    },
    isPretty(opts.format, opts.destination) ? prettyDestination(destination, opts.destination ? false : undefined) : destination,
  );
  return {
    root,
    component(name) {
      const level = opts.levels?.[name];
      return root.child({ component: name }, level ? { level } : {});
    },
  };
}

/** The daemon's loggers, as the config's `foundation` and `log:` say (format included). */
export function configuredLoggers(config: Pick<Config, 'foundation' | 'log'>): LoggerFactory {
  return createLoggerFactory({ foundation: config.foundation, ...config.log });
}

/** One line for an error: its message, without a stack, for logs read by operators. */
export function errorText(err: unknown): string {
  if (err instanceof Error) return err.message.split('\n')[0] || err.name;
  return String(err);
}
