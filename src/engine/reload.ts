import { watch, type FSWatcher } from 'node:fs';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { ConfigError } from '../config/issues.js';
import type { Project } from '../config/load.js';

/** Quiet period after the last file change before a reload, so an editor's save burst reloads once. */
export const RELOAD_DEBOUNCE_MS = 200;

export interface ReloaderOptions {
  /** The rules folder to watch; undefined = SIGHUP only. */
  dir: string | undefined;
  /** The config file to watch too; undefined when running on defaults. */
  configFile?: string | undefined;
  /** Loads and compiles the config and every rule file; throws ConfigError listing every problem. */
  load(): Project;
  /** Installs a project that loaded cleanly. */
  apply(project: Project): void | Promise<void>;
  log: Logger;
  clock: Clock;
}

/**
 * Hot reload: rebuilds the whole rule set when the rules folder changes or on `reload()`
 * (SIGHUP). The new set is validated first and swapped in at once; a set with any problem
 * is refused with the full report and the running rules stay.
 */
export class RuleReloader {
  private watchers: FSWatcher[] = [];
  private timer: ReturnType<Clock['setTimeout']> | undefined;

  constructor(private readonly options: ReloaderOptions) {}

  start(): void {
    const { dir, configFile, log } = this.options;
    for (const target of [dir, configFile]) {
      if (!target) continue;
      try {
        const watcher = watch(target, { persistent: false }, () => this.schedule());
        watcher.on('error', (err) => log.warn({ err, target }, 'cannot watch for changes; reload with SIGHUP'));
        this.watchers.push(watcher);
      } catch (err) {
        log.warn({ err, target }, 'cannot watch for changes; reload with SIGHUP');
      }
    }
  }

  private schedule(): void {
    const { clock } = this.options;
    if (this.timer) clock.clearTimeout(this.timer);
    this.timer = clock.setTimeout(() => {
      this.timer = undefined;
      this.reload('file change');
    }, RELOAD_DEBOUNCE_MS);
  }

  /** Reloads now. Returns true when the new rules are running. */
  reload(reason: string): boolean {
    const { log } = this.options;
    let project: Project;
    try {
      project = this.options.load();
    } catch (err) {
      if (err instanceof ConfigError) {
        log.error({ reason, problems: err.issues.length, report: err.message }, `rules not reloaded: ${err.issues.length} problem(s); the previous rules keep running\n${err.message}`);
        return false;
      }
      log.error({ err, reason }, 'rules not reloaded; the previous rules keep running');
      return false;
    }
    // The rules swap at once; outputs that changed restart in the background.
    Promise.resolve(this.options.apply(project)).catch((err: unknown) => log.error({ err, reason }, 'reload failed while restarting outputs'));
    log.info({ reason, rules: project.compiled.rules.length, outputs: Object.keys(project.config.outputs).length }, 'rules reloaded');
    return true;
  }

  stop(): void {
    for (const w of this.watchers.splice(0)) w.close();
    if (this.timer) this.options.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }
}
