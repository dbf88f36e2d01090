#!/usr/bin/env node
/**
 * The hmgate command line. Bad input gets one clear line and exit 1 (config errors as
 * FILE:LINE:COL: message); usage errors exit 2; a stack trace only with --debug.
 */
import { Command, CommanderError } from 'commander';
import { stringify } from 'yaml';
import { ConfigError, formatProblem } from './config/errors.js';
import { ConfigNotFoundError, findConfigFile, loadConfig, type LoadedConfig } from './config/load.js';
import { maskSecrets } from './config/mask.js';
import { errorText } from './log.js';
import { Engine } from './pipeline/engine.js';

const EXIT_USAGE = 2;

let debug = false;

function fail(err: unknown): never {
  if (err instanceof ConfigError) {
    for (const p of err.problems) process.stderr.write(`${formatProblem(p)}\n`);
  } else {
    process.stderr.write(`hmgate: ${errorText(err)}\n`);
    if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  }
  process.exit(1);
}

async function load(configPath: string | undefined): Promise<LoadedConfig> {
  try {
    return await loadConfig(await findConfigFile(configPath));
  } catch (err) {
    if (err instanceof ConfigError || err instanceof ConfigNotFoundError) fail(err);
    throw err;
  }
}

async function run(configPath: string | undefined): Promise<void> {
  const loaded = await load(configPath);
  const engine = new Engine(loaded);
  const log = engine.loggers.component('engine');
  // Bad input is handled where it arrives; anything that still escapes is logged, never fatal.
  process.on('unhandledRejection', (reason) => log.error({ error: errorText(reason) }, 'unhandled rejection'));
  let stopping: Promise<void> | undefined;
  const shutdown = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, `${signal} received: stopping`);
    stopping = engine.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ error: errorText(err) }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  try {
    await engine.start();
  } catch (err) {
    // The engine logged the failing stage and stopped the others; say it once on stderr too.
    process.stderr.write(`hmgate: ${errorText(err)}\n`);
    if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  }
  log.info(
    { file: loaded.file, stages: loaded.stages.map((s) => `${s.id}:${s.pluginSpec}`) },
    `hmgate running for foundation "${loaded.config.foundation}" (${loaded.file})`,
  );
}

export function buildProgram(): Command {
  const program = new Command('hmgate')
    .description('Health manager for Cloud Foundry style foundations')
    .option('--debug', 'print stack traces for unexpected errors')
    .exitOverride()
    .showHelpAfterError();
  program.hook('preAction', (cmd) => {
    debug = Boolean(cmd.opts().debug);
  });
  const withConfig = (c: Command) => c.option('-c, --config <file>', 'config file (default: hmgate.config.yaml or .hmgaterc.yaml here)');

  withConfig(program.command('run').description('run the daemon until SIGTERM/SIGINT')).action(async (o: { config?: string }) => run(o.config));

  withConfig(program.command('validate').description('check the config; FILE:LINE:COL: message lines and exit 1 if invalid')).action(
    async (o: { config?: string }) => {
      const loaded = await load(o.config);
      process.stdout.write(`${loaded.file}: valid (${loaded.stages.length} stages)\n`);
    },
  );

  withConfig(program.command('print-config').description('print the merged config with defaults, secrets masked')).action(
    async (o: { config?: string }) => {
      const loaded = await load(o.config);
      process.stdout.write(stringify(maskSecrets(loaded.display)));
    },
  );
  return program;
}

async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0) process.exit(0);
      process.exit(EXIT_USAGE);
    }
    fail(err);
  }
}

void main(process.argv);
