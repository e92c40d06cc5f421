#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { formatIssues, type ConfigIssue } from '../config/issues.js';
import { loadConfigFile } from '../config/load.js';
import { createLogger } from '../log.js';
import { checkCommand } from './check.js';
import { deadLettersCommand } from './dead-letters.js';
import { historyCommand } from './history.js';
import { passwdCommand } from './passwd.js';
import { runCommand } from './run.js';
import { statusCommand } from './status.js';
import { testCommand } from './test.js';
import { traceCommand } from './trace.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const DEFAULT_CONFIG = 'signalbox.yaml';

/** Exit code for a command line that could not be parsed (unknown option, missing argument). */
const USAGE_EXIT_CODE = 2;

interface ConfigOption {
  config: string;
}

/** `{ config, configExplicit }`: an explicitly named config file must exist; the default may be absent. */
function configOf(opts: ConfigOption, cmd: Command): { config: string; configExplicit: boolean } {
  return { config: opts.config, configExplicit: cmd.getOptionValueSource('config') === 'cli' };
}

function wholeNumber(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`must be a whole number, got '${value}'`);
  return Number(value);
}

/**
 * The database path from the config file alone (not the rules: the storage commands must
 * work while a rule file is being edited). Prints the problems and returns undefined when
 * the config is invalid.
 */
function storagePath(opts: ConfigOption, cmd: Command): string | undefined {
  const { config, configExplicit } = configOf(opts, cmd);
  const issues: ConfigIssue[] = [];
  const loaded = loadConfigFile(config, { explicit: configExplicit, skipOutputs: true }, issues);
  if (!loaded) {
    process.stderr.write(`${formatIssues(issues)}\n${issues.length} problem(s)\n`);
    return undefined;
  }
  return loaded.storage.path;
}

/** Parses the command line and runs one command; nothing else happens here. */
async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  // Before the subcommands are added, so they inherit it: usage errors return instead of exiting.
  const program = new Command().exitOverride();
  program
    .name('signalbox')
    .description('An MQTT broker and declarative YAML rules engine in one process.')
    .version(pkg.version, '-v, --version')
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'))
    .addOption(new Option('--log-format <format>', 'json, or pretty (default: pretty on a terminal)').choices(['json', 'pretty']));

  program
    .command('run')
    .description('start the broker (and, as they land, the rules) from the config file')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (opts: { config: string }, cmd: Command) => {
      const globals = program.opts<{ logLevel: string; logFormat?: string }>();
      const log = createLogger({ level: globals.logLevel, pretty: globals.logFormat === undefined ? undefined : globals.logFormat === 'pretty' });
      exitCode = await runCommand({ config: opts.config, configExplicit: cmd.getOptionValueSource('config') === 'cli' }, log);
      log.flush?.();
    });

  program
    .command('check')
    .description('load the config and every rule file and report every problem; exit 1 on problems')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action((opts: ConfigOption, cmd: Command) => {
      exitCode = checkCommand(configOf(opts, cmd), process.stdout);
    });

  program
    .command('test')
    .description('run the `tests:` cases of the rule files (all, or the files and folders given); exit 1 on a failure')
    .argument('[files...]', 'rule files or folders (default: the rules folder of the config)')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (files: string[], opts: ConfigOption, cmd: Command) => {
      exitCode = await testCommand({ ...configOf(opts, cmd), files }, process.stdout);
    });

  program
    .command('trace')
    .description('explain what the rules would do with one message, without doing it')
    .requiredOption('--topic <topic>', 'topic name of the message')
    .requiredOption('--payload <text>', 'payload as raw text (\'{"celsius":20}\' is JSON)')
    .option('--qos <n>', 'QoS 0, 1 or 2', '0')
    .option('--retain', 'the message is retained')
    .option('--client-id <id>', 'client id the rules see')
    .option('--json', 'print the trace as JSON')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (opts: ConfigOption & { topic: string; payload: string; qos: string; retain?: boolean; clientId?: string; json?: boolean }, cmd: Command) => {
      exitCode = await traceCommand({ ...opts, ...configOf(opts, cmd) }, process.stdout);
    });

  program
    .command('history')
    .description('print stored history matching a topic filter, oldest first')
    .argument('<filter>', 'MQTT topic filter, e.g. greenhouse/+/temperature or #')
    .option('--since <time>', 'a duration ago (30m, 1h, 7d) or an ISO-8601 time; inclusive')
    .option('--until <time>', 'a duration ago or an ISO-8601 time; exclusive')
    .option('--limit <n>', 'show the latest n messages (1 to 10000, default 100)', wholeNumber)
    .option('--json', 'one JSON object per line')
    .option('-c, --config <file>', 'config file (its storage.path is read)', DEFAULT_CONFIG)
    .action((filter: string, opts: ConfigOption & { since?: string; until?: string; limit?: number; json?: boolean }, cmd: Command) => {
      const dbPath = storagePath(opts, cmd);
      if (dbPath === undefined) {
        exitCode = 2;
        return;
      }
      const { since, until, limit, json } = opts;
      exitCode = historyCommand({ dbPath, filter, since, until, limit, json }, process.stdout);
    });

  program
    .command('status')
    .description('show a running signalbox: broker, bridge states, outbox depth, stored sessions and dead letters')
    .option('--json', 'print the status as one JSON object')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .action(async (opts: ConfigOption & { json?: boolean }, cmd: Command) => {
      const { config, configExplicit } = configOf(opts, cmd);
      const issues: ConfigIssue[] = [];
      const loaded = loadConfigFile(config, { explicit: configExplicit }, issues);
      if (!loaded) {
        process.stderr.write(`${formatIssues(issues)}\n${issues.length} problem(s)\n`);
        exitCode = 2;
        return;
      }
      exitCode = await statusCommand(loaded, { json: opts.json }, process.stdout);
    });

  program
    .command('dead-letters')
    .description('list, replay or purge dead letters (messages a rule or an output could not handle)')
    .argument('<action>', 'list, replay or purge')
    .argument('[ids...]', 'letter ids (for replay and purge)')
    .option('--rule <id>', 'only the letters of this rule')
    .option('--all', 'every letter (for replay and purge)')
    .option('--limit <n>', 'list at most n letters (default 100)', wholeNumber)
    .option('--json', 'list as one JSON object per line')
    .option('-c, --config <file>', 'config file (its storage.path is read)', DEFAULT_CONFIG)
    .action((action: string, ids: string[], opts: ConfigOption & { rule?: string; all?: boolean; limit?: number; json?: boolean }, cmd: Command) => {
      if (action !== 'list' && action !== 'replay' && action !== 'purge') {
        process.stderr.write(`dead-letters: unknown action '${action}'; use list, replay or purge\n`);
        exitCode = USAGE_EXIT_CODE;
        return;
      }
      if (ids.some((id) => !/^\d+$/.test(id))) {
        process.stderr.write(`dead-letters: ids must be whole numbers, got ${ids.join(' ')}\n`);
        exitCode = USAGE_EXIT_CODE;
        return;
      }
      const dbPath = storagePath(opts, cmd);
      if (dbPath === undefined) {
        exitCode = 2;
        return;
      }
      exitCode = deadLettersCommand({ dbPath, action, ids: ids.map(Number), rule: opts.rule, all: opts.all, limit: opts.limit, json: opts.json }, process.stdout);
    });

  program
    .command('passwd')
    .description('add a user to a users file or change their password (prompted, or read from stdin); only a scrypt hash is stored')
    .argument('<file>', 'users file (created with mode 0600 when missing)')
    .argument('<user>', 'username')
    .option('--delete', 'remove the user instead')
    .action(async (file: string, user: string, opts: { delete?: boolean }) => {
      exitCode = await passwdCommand({ file, user, delete: opts.delete }, { stdin: process.stdin, stderr: process.stderr });
    });

  try {
    await program.parseAsync(argv);
  } catch (err) {
    // --help and --version "fail" with exit code 0; every other commander error is a usage error.
    if (err instanceof CommanderError) return err.exitCode === 0 ? 0 : USAGE_EXIT_CODE;
    throw err;
  }
  return exitCode;
}

main(process.argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`signalbox: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
