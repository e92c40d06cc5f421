import { watch, type FSWatcher } from 'node:fs';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { ConfigError } from '../config/issues.js';
import type { CompiledRule } from '../rules/compile.js';

/** Quiet period after the last file change before a reload, so an editor's save burst reloads once. */
export const RELOAD_DEBOUNCE_MS = 200;

export interface ReloaderOptions {
  /** The rules folder to watch; undefined = SIGHUP only. */
  dir: string | undefined;
  /** Loads and compiles the whole rule set; throws ConfigError listing every problem. */
  load(): readonly CompiledRule[];
  /** Installs a rule set that loaded cleanly. */
  apply(rules: readonly CompiledRule[]): void;
  log: Logger;
  clock: Clock;
}

/**
 * Hot reload: rebuilds the whole rule set when the rules folder changes or on `reload()`
 * (SIGHUP). The new set is validated first and swapped in at once; a set with any problem
 * is refused with the full report and the running rules stay.
 */
export class RuleReloader {
  private watcher: FSWatcher | undefined;
  private timer: ReturnType<Clock['setTimeout']> | undefined;

  constructor(private readonly options: ReloaderOptions) {}

  start(): void {
    const { dir, log } = this.options;
    if (!dir) return;
    try {
      this.watcher = watch(dir, { persistent: false }, () => this.schedule());
      this.watcher.on('error', (err) => log.warn({ err, dir }, 'rules folder watch failed; reload with SIGHUP'));
    } catch (err) {
      log.warn({ err, dir }, 'cannot watch the rules folder; reload with SIGHUP');
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
    let rules: readonly CompiledRule[];
    try {
      rules = this.options.load();
    } catch (err) {
      if (err instanceof ConfigError) {
        log.error({ reason, problems: err.issues.length, report: err.message }, `rules not reloaded: ${err.issues.length} problem(s); the previous rules keep running\n${err.message}`);
        return false;
      }
      log.error({ err, reason }, 'rules not reloaded; the previous rules keep running');
      return false;
    }
    this.options.apply(rules);
    log.info({ reason, rules: rules.length }, 'rules reloaded');
    return true;
  }

  stop(): void {
    this.watcher?.close();
    this.watcher = undefined;
    if (this.timer) this.options.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }
}
