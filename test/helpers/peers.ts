import { spawn, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { onTestFinished } from 'vitest';

/** What to tell a developer whose machine lacks the external MQTT clients the interop tests drive. */
export const PEERS_INSTALL_HINT = 'apt-get install -y mosquitto-clients python3-paho-mqtt';

/** Debian's python, which has python3-paho-mqtt; the `python3` on PATH may be another one without paho. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** A program some tests need, looked up once when the test file is collected. */
export interface Peer {
  readonly name: string;
  /** Why the peer cannot run here (with the install hint), or undefined when it can. */
  readonly missing: string | undefined;
  /**
   * Call first in a test or in `beforeEach(ctx => peer.require(ctx))`. When the peer is
   * missing the test is skipped with a note saying how to install it, except in CI
   * (`CI=true`), where a missing peer is a broken machine and the test fails instead.
   */
  require(ctx: SkipContext): void;
}

/** The part of vitest's test context that {@link Peer.require} uses. */
export interface SkipContext {
  skip: (note?: string) => never;
}

export interface RequireCommandOptions {
  /**
   * Arguments for a probe run; the peer counts as present only when it exits 0 within 10 s
   * (e.g. `['-c', 'import paho.mqtt.client']`). Without it, finding the executable is enough.
   */
  probeArgs?: string[];
}

/** True when running in CI (`CI=true`, or `1`), where missing peers fail instead of skipping. */
export function inCI(env: NodeJS.ProcessEnv = process.env): boolean {
  return ['true', '1'].includes((env.CI ?? '').toLowerCase());
}

/**
 * Detects an external program (a bare name is searched on PATH like `command -v`, a path is
 * used as is) and returns a {@link Peer} whose `require(ctx)` skips or fails the test.
 */
export function requireCommand(name: string, installHint: string, options: RequireCommandOptions = {}): Peer {
  const missing = findMissing(name, installHint, options);
  return {
    name,
    missing,
    require(ctx) {
      if (missing === undefined) return;
      if (inCI()) throw new Error(`${missing} (CI=true, so this fails instead of skipping)`);
      ctx.skip(missing);
    },
  };
}

/** Requires every peer in turn; see {@link Peer.require}. */
export function requirePeers(ctx: SkipContext, ...peers: Peer[]): void {
  for (const peer of peers) peer.require(ctx);
}

function findMissing(name: string, installHint: string, { probeArgs }: RequireCommandOptions): string | undefined {
  const path = name.includes('/') ? name : lookUpOnPath(name);
  if (path === undefined || !isExecutable(path)) return `${name} is not installed; install it with: ${installHint}`;
  if (probeArgs === undefined) return undefined;
  const probe = spawnSync(path, probeArgs, { timeout: 10_000, encoding: 'utf8' });
  if (probe.status === 0) return undefined;
  const why = probe.error?.message ?? (probe.stderr.trim().split('\n').at(-1) || `exit ${probe.status ?? probe.signal}`);
  return `${name} ${probeArgs.join(' ')} failed (${why}); install it with: ${installHint}`;
}

function lookUpOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** How a child process ended. */
export interface ExitResult {
  /** The command line, for messages. */
  command: string;
  /** Exit code, or null when killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the deadline passed and the process was killed. */
  timedOut: boolean;
}

export interface StartOptions {
  /** The process is killed (SIGKILL, by PID) if it is still running after this many ms. Default 15000. */
  deadlineMs?: number;
  /** Written to stdin, which is then closed. Default: stdin closed at once. */
  input?: string;
  env?: NodeJS.ProcessEnv;
}

/** A running child process. */
export interface Child {
  readonly pid: number;
  /** Always resolves, never rejects: when the process exits by itself, or once the deadline killed it. */
  readonly exited: Promise<ExitResult>;
  /** Output so far, stdout and stderr, as complete lines in order of arrival. */
  lines(): string[];
  /**
   * Resolves with the first line (stdout or stderr, including lines already seen) that matches;
   * rejects with the output so far when `within` ms pass or the process exits first.
   */
  waitForLine(match: RegExp, options?: { within?: number }): Promise<string>;
  /** Kills the process and its process group by PID (SIGKILL); a no-op once it has exited. */
  kill(): void;
  /**
   * Sends `signal` by PID and resolves once the process exited; after `within` ms it is
   * killed and this rejects with its output, naming it `name`.
   */
  stop(signal: NodeJS.Signals, options: { within: number; name: string }): Promise<ExitResult>;
}

/**
 * Starts `command` with a deadline. Called inside a test, the process is also killed by PID
 * when the test finishes, so no child outlives its test whatever the outcome.
 */
export function startProcess(command: string, args: string[], options: StartOptions = {}): Child {
  const { deadlineMs = 15_000, input, env } = options;
  const commandLine = [command, ...args].join(' ');
  // detached: the child leads its own process group, so kill() also reaches anything it forked.
  const child = spawn(command, args, { env: env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });

  let stdout = '';
  let stderr = '';
  const allLines: string[] = [];
  const partial = { stdout: '', stderr: '' };
  const lineListeners = new Set<(line: string) => void>();
  const takeLines = (stream: 'stdout' | 'stderr', chunk: string, flush = false) => {
    const parts = (partial[stream] + chunk).split('\n');
    partial[stream] = flush ? '' : parts.pop()!;
    for (const line of parts) {
      if (flush && line === '') continue;
      allLines.push(line);
      for (const listener of lineListeners) listener(line);
    }
  };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    takeLines('stdout', chunk);
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    takeLines('stderr', chunk);
  });
  child.stdin.on('error', () => {}); // the peer may exit before reading its input
  child.stdin.end(input ?? '');

  let running = true;
  let timedOut = false;
  const kill = () => {
    if (!running || child.pid === undefined) return;
    for (const target of [-child.pid, child.pid]) {
      try {
        process.kill(target, 'SIGKILL'); // the group first, then the process itself
      } catch {
        // ESRCH: gone already
      }
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill();
  }, deadlineMs);

  const exited = new Promise<ExitResult>((resolve) => {
    const finish = (code: number | null, signal: NodeJS.Signals | null) => {
      if (!running) return;
      running = false;
      clearTimeout(timer);
      takeLines('stdout', '', true);
      takeLines('stderr', '', true);
      resolve({ command: commandLine, code, signal, stdout, stderr, timedOut });
    };
    child.on('error', (error) => {
      stderr += `[spawn error] ${error.message}\n`;
      finish(null, null);
    });
    child.on('close', finish);
  });

  try {
    onTestFinished(kill);
  } catch {
    // not inside a test (e.g. in beforeAll): the deadline still bounds it
  }

  const waitForLine = (match: RegExp, { within = 5000 }: { within?: number } = {}) =>
    new Promise<string>((resolve, reject) => {
      const seen = allLines.find((line) => match.test(line));
      if (seen !== undefined) return resolve(seen);
      const done = () => {
        clearTimeout(deadline);
        lineListeners.delete(onLine);
      };
      const onLine = (line: string) => {
        if (!match.test(line)) return;
        done();
        resolve(line);
      };
      const deadline = setTimeout(() => {
        done();
        reject(new Error(`${commandLine}: no line matching ${match} within ${within} ms; output so far:\n${allLines.join('\n')}`));
      }, within);
      lineListeners.add(onLine);
      void exited.then((result) => {
        if (!lineListeners.has(onLine)) return;
        done();
        reject(new Error(`${commandLine} exited (${result.code ?? result.signal}) before printing a line matching ${match}; output:\n${allLines.join('\n')}`));
      });
    });

  const stop = async (signal: NodeJS.Signals, { within, name }: { within: number; name: string }) => {
    try {
      if (child.pid !== undefined) process.kill(child.pid, signal);
    } catch {
      // ESRCH: it has exited already; `exited` tells how
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        kill();
        reject(new Error(`${name} (pid ${child.pid}) still running ${within} ms after ${signal}; output:\n${allLines.join('\n')}`));
      }, within);
    });
    try {
      return await Promise.race([exited, late]);
    } finally {
      clearTimeout(timer);
    }
  };

  return { pid: child.pid ?? -1, exited, lines: () => [...allLines], waitForLine, kill, stop };
}

/** Runs `command` to completion (or its deadline) and returns how it ended. */
export function runProcess(command: string, args: string[], options: StartOptions = {}): Promise<ExitResult> {
  return startProcess(command, args, options).exited;
}

/** Throws, quoting the whole output, unless the process exited 0 by itself. */
export function expectCleanExit(result: ExitResult): ExitResult {
  if (result.code === 0 && !result.timedOut) return result;
  const how = result.timedOut ? 'was killed at its deadline' : `exited with ${result.code ?? result.signal}`;
  throw new Error(`${result.command} ${how}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}`);
}
