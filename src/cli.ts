#!/usr/bin/env node
/**
 * The hmgate command line. Bad input gets one clear line and exit 1 (config errors as
 * FILE:LINE:COL: message); usage errors (an unknown command or flag, a missing or bad flag value)
 * get one line and exit 2; a stack trace only with --debug.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { stringify } from 'yaml';
import { ConfigError, formatProblem } from './config/errors.js';
import { ConfigNotFoundError, findConfigFile, loadConfig, type LoadedConfig } from './config/load.js';
import { maskSecrets } from './config/mask.js';
import { errorText } from './log.js';
import { Engine } from './pipeline/engine.js';
import { runSimulate, runTests, UsageError, type SimulateArgs } from './sim/commands.js';
import { formatResult, runDoctor, type CheckResult } from './doctor/index.js';
import { DoctorOutput } from './doctor/progress.js';
import { DumpUnavailableError, fetchDump } from './dump/client.js';
import { callDaemon, DaemonUnavailableError } from './api/daemon-client.js';
import { renderDump } from './dump/render.js';
import { rawDump } from './dump/raw.js';
import { packageRoot } from './paths.js';
import { registerDemo } from './sim/demo.js';

const EXIT_USAGE = 2;

let debug = false;

/** A usage error: one line, exit 2. */
function usage(message: string): never {
  process.stderr.write(`hmgate: ${message}\n`);
  process.exit(EXIT_USAGE);
}

/** Commander's error message ("error: unknown option '--x'\n(Did you mean …?)") as one line, naming where the usage is. */
function usageLine(command: string): (str: string, write: (s: string) => void) => void {
  return (str, write) =>
    write(
      `hmgate: ${str
        .trim()
        .replace(/^error: /, '')
        .replace(/\s*\n\s*/g, ' ')} (see ${command} --help)\n`,
    );
}

function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

function fail(err: unknown): never {
  if (err instanceof UsageError) usage(err.message);
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
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .option('--debug', 'print stack traces for unexpected errors')
    .exitOverride()
    .configureOutput({ outputError: usageLine('hmgate') });
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

  withConfig(program.command('print-config').description('print the merged config with defaults, secrets masked')).action(async (o: { config?: string }) => {
    const loaded = await load(o.config);
    process.stdout.write(stringify(maskSecrets(loaded.display)));
  });

  withConfig(
    program.command('doctor').description('check every dependency the config names: one ok / FAIL line per check, with the fix; exit 1 if any fails'),
  ).action(async (o: { config?: string }) => {
    const loaded = await load(o.config);
    // Each line as soon as it is known; on a terminal, a spinner line says what is being waited for.
    const out = new DoctorOutput(process.stdout);
    let results: CheckResult[];
    try {
      results = await runDoctor(loaded, { onResult: (r) => out.line(formatResult(r)), onWaiting: (what) => out.waiting(what) });
    } finally {
      out.close();
    }
    const failed = results.filter((r) => !r.ok).length;
    if (failed > 0) {
      process.stdout.write(`${failed} of ${results.length} checks failed\n`);
      process.exitCode = 1;
    }
  });

  withConfig(
    program
      .command('dump')
      .description("a running daemon's state, as HM9000's dump: freshness, then per app desired, instances, crash counts, pending starts and stops")
      .option('--json', 'print JSON (schemas/dump.schema.json) for scripts')
      .addOption(new Option('--raw', "print the shared store's keys and values as they lie in it (etcd), without a daemon").conflicts('json')),
  ).action(async (o: { config?: string; json?: boolean; raw?: boolean }) => {
    const loaded = await load(o.config);
    if (o.raw) {
      try {
        for (const line of await rawDump(loaded)) process.stdout.write(`${line}\n`);
      } catch (err) {
        fail(err);
      }
      return;
    }
    try {
      const doc = await fetchDump(loaded);
      process.stdout.write(o.json ? `${JSON.stringify(doc, null, 2)}\n` : renderDump(doc));
    } catch (err) {
      if (err instanceof DumpUnavailableError) fail(err);
      throw err;
    }
  });

  withConfig(
    program
      .command('confirm-loss')
      .description('tell the leading daemon that the agents that went silent together (ACTUAL_COLLAPSE) are gone, so their instances are started elsewhere'),
  ).action(async (o: { config?: string }) => {
    const loaded = await load(o.config);
    try {
      const { status, text } = await callDaemon(loaded, 'POST', '/v1/actual/confirm-loss', { accept: [409] });
      const body = JSON.parse(text) as { confirmed?: number; error?: string };
      if (status === 409) fail(new Error(`${body.error ?? 'this daemon does not lead'} (confirm-loss goes to the leader's api.listen)`));
      process.stdout.write(
        body.confirmed
          ? `confirmed: ${body.confirmed} silent agent(s) forgotten; their instances count as missing now\n`
          : 'no collapse holds: nothing to confirm\n',
      );
    } catch (err) {
      if (err instanceof DaemonUnavailableError) fail(err);
      throw err;
    }
  });

  program
    .command('test')
    .description('run policy scenarios (YAML) on a virtual clock; FILES are files or folders (default test/scenarios)')
    .argument('[files...]')
    .action(async (files: string[]) => {
      process.exitCode = await runTests(files);
    });

  withConfig(
    program
      .command('simulate')
      .description("simulate a foundation under the config's rules on a virtual clock: a timeline of orders and a summary")
      .option('--agents <n>', 'agents', '20')
      .option('--instances <n>', 'instances per agent', '10')
      .option('--per-app <n>', 'instances per app', '5')
      .option('--crash-rate <r>', 'share of instances that crash during the run (0-1)', '0.02')
      .option('--agent-dies-at <time>', 'when one agent stops heartbeating for good (e.g. 2m)')
      .option('--evacuate-at <time>', 'when one agent evacuates all its instances')
      .option('--version-change-at <time>', 'when one app changes to a new version')
      .option('--cc-outage <from-to>', 'a Cloud Controller outage, e.g. 5m-8m')
      .option('--duration <time>', 'time to run: virtual, or real with --live', '15m')
      .option('--seed <n>', 'random seed, for a repeatable run', '1')
      .option('--timeline', 'print every order with its time and reason')
      .option('--live', "live: real heartbeats on the config's NATS and a bulk API on a loopback port, in real time (until --duration or SIGINT/SIGTERM)")
      .option('--churn <r>', 'live: share of instances restarted every heartbeat interval (0-1)', '0')
      .option('--obey', 'live: carry out the start and stop orders heard')
      .option('--cc-port <n>', "live: the bulk API's port (default: the port of the config's bulk-api url on 127.0.0.1, else any free one)")
      .option('--remove-at <time>', 'live: when instance 0 of app 0 vanishes from its agent'),
  ).action(async (o: SimulateArgs & { config?: string }) => {
    const loaded = await load(o.config);
    try {
      process.exitCode = await runSimulate(loaded, o);
    } catch (err) {
      fail(err);
    }
  });
  // Each sub-command's usage errors name its own --help.
  for (const c of program.commands) c.configureOutput({ outputError: usageLine(`hmgate ${c.name()}`) });
  registerDemo(program);
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
