import { systemClock } from '../clock.js';
import { ConfigError } from '../config/issues.js';
import { loadProject } from '../config/load.js';
import { createEngine } from '../engine/engine.js';
import { RuleReloader } from '../engine/reload.js';
import { HttpApi } from '../http/api.js';
import type { Logger } from '../log.js';
import { createOutputRegistry } from '../outputs/registry.js';
import { StorageError } from '../storage/errors.js';

function isLoopback(host: string): boolean {
  return host === '::1' || host.startsWith('127.') || host === 'localhost';
}

export interface RunOptions {
  config: string;
  configExplicit: boolean;
}

/**
 * `signalbox run`: loads and checks everything, starts the broker and the rules, reloads
 * rules on change or SIGHUP, and shuts down cleanly on SIGINT or SIGTERM. Resolves with the
 * process exit code.
 */
export async function runCommand(options: RunOptions, log: Logger): Promise<number> {
  const registry = createOutputRegistry();
  let project;
  try {
    project = loadProject(options.config, { explicit: options.configExplicit, registry });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`signalbox: not starting: ${err.issues.length} problem(s)\n${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const { config } = project;
  log.info({ config: config.file ?? '(defaults)', rules: project.compiled.rules.length, ruleFiles: project.ruleFiles.length, storage: config.storage.path }, 'starting signalbox');
  let engine;
  try {
    engine = createEngine(config, project.compiled.rules, { log, registry });
  } catch (err) {
    if (err instanceof StorageError) {
      process.stderr.write(`signalbox: not starting: ${err.code} ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  try {
    await engine.broker.listen();
  } catch (err) {
    log.fatal({ err }, 'could not open a listener');
    await engine.close();
    return 1;
  }
  // The HTTP API starts once the listeners are bound; /readyz goes 503 when shutdown begins.
  let listening = true;
  const httpApi = config.http ? new HttpApi(config.http, engine, { clock: systemClock, log, listening: () => listening }) : undefined;
  if (httpApi) {
    try {
      const address = await httpApi.listen();
      log.info({ host: address.host, port: address.port }, 'HTTP API listening');
      if (!isLoopback(address.host)) log.warn({ host: address.host }, 'the HTTP API has no authentication and listens beyond loopback: anyone who reaches it can read history');
    } catch (err) {
      log.fatal({ err }, (err as Error).message);
      process.stderr.write(`signalbox: not starting: ${(err as Error).message}\n`);
      await engine.close();
      return 1;
    }
  }
  const reloader = new RuleReloader({
    dir: config.rulesDir,
    configFile: config.file,
    load: () => loadProject(options.config, { explicit: options.configExplicit, registry }),
    apply: (next) => engine.reload(next),
    log,
    clock: systemClock,
  });
  reloader.start();
  const onHup = () => reloader.reload('SIGHUP');
  process.on('SIGHUP', onHup);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      reloader.stop();
      process.off('SIGHUP', onHup);
      listening = false;
      const closed = httpApi ? httpApi.close().then(() => engine.close()) : engine.close();
      closed.then(
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
