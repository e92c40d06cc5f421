import { ConfigError, formatIssues } from '../config/issues.js';
import { loadProject } from '../config/load.js';
import { createOutputRegistry } from '../outputs/registry.js';

/** Arguments of `signalbox check`. */
export interface CheckCommandOptions {
  config: string;
  /** `--config` was given (a missing file is then a problem, not "run on defaults"). */
  configExplicit: boolean;
}

/**
 * `signalbox check`: loads and compiles the config and every rule file without starting
 * anything. Prints the full report (`file:line:col CODE message`, hints, then
 * `N problem(s)`) and returns 1 when there are problems; otherwise prints one `ok:` line
 * with what was loaded and returns 0. The report is this command's product, so it goes to
 * `out`, not to stderr.
 */
export function checkCommand(options: CheckCommandOptions, out: NodeJS.WritableStream, deps: { env?: NodeJS.ProcessEnv } = {}): number {
  try {
    const project = loadProject(options.config, { explicit: options.configExplicit, registry: createOutputRegistry(), env: deps.env });
    const { rules, tests } = project.compiled;
    const config = project.config.file === undefined ? 'no config file (defaults)' : `config ${project.config.file}`;
    out.write(`ok: ${plural(rules.length, 'rule')} in ${plural(project.ruleFiles.length, 'file')}, ${plural(tests.length, 'test')}; ${config}\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    out.write(`${formatIssues(err.issues)}\n${err.issues.length} problem(s)\n`);
    return 1;
  }
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
