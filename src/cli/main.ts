#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { createLogger } from '../log.js';
import { runCommand } from './run.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const DEFAULT_CONFIG = 'signalbox.yaml';

/** Parses the command line and runs one command; nothing else happens here. */
async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  const program = new Command()
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

  await program.parseAsync(argv);
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
