import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../clock.js';
import { ConfigError, formatIssues } from '../config/issues.js';
import { loadProject, type Project } from '../config/load.js';
import { createOutputRegistry } from '../outputs/registry.js';
import { runRuleTests } from '../rules/test-runner.js';

/** Arguments of `signalbox test`, as the command line gave them. */
export interface TestCommandOptions {
  config: string;
  /** `--config` was given (a missing file is then an error, not "run on defaults"). */
  configExplicit: boolean;
  /** Rule files or folders to test instead of the configured rules folder; empty = all rules. */
  files: readonly string[];
}

/** What `signalbox test` needs besides its arguments; defaults are the real ones. */
export interface TestCommandDeps {
  /** Where the config report goes. Default process.stderr. */
  err?: NodeJS.WritableStream;
  env?: NodeJS.ProcessEnv;
  /** Stamps test messages. Default: the runner's fixed time, so results never depend on the day. */
  clock?: Pick<Clock, 'now'>;
}

/**
 * `signalbox test [files...]`: loads the project (with files, only those rule files; a
 * folder stands for its *.yaml / *.yml files), runs every `tests:` case in-process, prints
 * `✓ file:line name` or `✗ file:line name` with the diff, and ends with the summary line
 * `N passed, N failed`, which CI parses: keep its form. Resolves with the exit code: 0 all
 * passed, 1 any failed, 2 configuration problems (the full report on `deps.err`).
 */
export async function testCommand(options: TestCommandOptions, out: NodeJS.WritableStream, deps: TestCommandDeps = {}): Promise<number> {
  const err = deps.err ?? process.stderr;
  const registry = createOutputRegistry();
  let project: Project;
  try {
    const ruleFiles = options.files.length > 0 ? expandRuleFiles(options.files) : undefined;
    project = loadProject(options.config, { explicit: options.configExplicit, registry, env: deps.env, ruleFiles });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    err.write(`${formatIssues(e.issues)}\n${e.issues.length} problem(s)\n`);
    return 2;
  }
  const { rules, tests } = project.compiled;
  const report = await runRuleTests(rules, tests, { registry, maxHops: project.config.engine.maxHops, clock: deps.clock });
  for (const result of report.results) {
    out.write(`${result.passed ? '✓' : '✗'} ${result.file}:${result.line} ${result.name}\n`);
    if (result.diff !== undefined) out.write(`${result.diff.replace(/^/gm, '    ')}\n`);
  }
  out.write(`${report.passed} passed, ${report.failed} failed\n`);
  return report.failed > 0 ? 1 : 0;
}

/**
 * Files as given; each folder replaced by its *.yaml / *.yml files, sorted like the rules
 * folder. A path that does not exist is passed on, so the loader reports it with the others.
 */
function expandRuleFiles(paths: readonly string[]): string[] {
  const files: string[] = [];
  for (const p of paths) {
    let isDir = false;
    try {
      isDir = statSync(p).isDirectory();
    } catch {
      // Missing: reported by the loader as SB_CONFIG_NOT_FOUND.
    }
    if (!isDir) {
      files.push(p);
      continue;
    }
    for (const name of readdirSync(p).sort()) {
      if (name.endsWith('.yaml') || name.endsWith('.yml')) files.push(path.join(p, name));
    }
  }
  // A file named twice (`rules rules/doors.yaml`) would otherwise clash with its own rule ids.
  const seen = new Set<string>();
  return files.filter((f) => !seen.has(path.resolve(f)) && seen.add(path.resolve(f)));
}
