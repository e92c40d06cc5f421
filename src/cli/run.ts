import { createBroker } from '../broker/broker.js';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Logger } from '../log.js';

export interface RunOptions {
  config: string;
  configExplicit: boolean;
}

/**
 * `signalbox run`: loads the config, starts the broker, and shuts down cleanly on SIGINT or
 * SIGTERM. Resolves with the process exit code.
 */
export async function runCommand(options: RunOptions, log: Logger): Promise<number> {
  let config;
  try {
    config = loadConfig(options.config, { explicit: options.configExplicit });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`signalbox: invalid configuration\n${err.problems.map((p) => `  ${p}`).join('\n')}\n`);
      return 2;
    }
    throw err;
  }
  log.info({ config: config.file ?? '(defaults)' }, 'starting signalbox');
  const broker = createBroker(config.broker, { log });
  try {
    await broker.listen();
  } catch (err) {
    log.fatal({ err }, 'could not open a listener');
    await broker.close();
    return 1;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      broker.close().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ err }, 'error during shutdown');
          resolve(1);
        },
      );
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
