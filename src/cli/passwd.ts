import { closeSync, existsSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import { stringify } from 'yaml';
import { hashPassword } from '../broker/auth-hash.js';
import { invalidUsername } from '../broker/auth-users.js';
import { formatIssues, type ConfigIssue } from '../config/issues.js';
import { YamlSource } from '../config/source.js';

export interface PasswdOptions {
  file: string;
  user: string;
  delete?: boolean;
}

/** Where the password comes from and where prompts go (the process's stdin/stderr in `main`). */
export interface PasswdIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stderr: NodeJS.WritableStream;
}

/** Longest password read, in characters; a longer stdin is refused rather than cut. */
export const MAX_PASSWORD_LENGTH = 4096;

/**
 * `signalbox passwd <file> <user>`: adds or changes a user's password in a users file (or
 * removes the user with `--delete`). The password is prompted for twice without echo on a
 * terminal, or read from the first line of stdin otherwise. Only its scrypt hash is written,
 * atomically (temp file + rename) with mode 0600. Resolves with the exit code.
 */
export async function passwdCommand(options: PasswdOptions, io: PasswdIo): Promise<number> {
  const fail = (message: string, code = 1): number => {
    io.stderr.write(`passwd: ${message}\n`);
    return code;
  };
  const bad = invalidUsername(options.user);
  if (bad) return fail(bad, 2);
  let users: Record<string, unknown> | undefined;
  try {
    users = readUsers(options.file, io);
  } catch (err) {
    return fail(`cannot read ${options.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!users) return 1;
  if (options.delete) {
    if (!(options.user in users)) return fail(`no user "${options.user}" in ${options.file}`);
    delete users[options.user];
  } else {
    let password: string;
    try {
      password = io.stdin.isTTY && io.stdin.setRawMode ? await promptTwice(io) : await readFirstLine(io.stdin);
    } catch (err) {
      return fail((err as Error).message);
    }
    if (password.length === 0) return fail('the password must not be empty');
    users[options.user] = { password: await hashPassword(password) };
  }
  try {
    writeAtomically(options.file, stringify({ users }));
  } catch (err) {
    return fail(`cannot write ${options.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  io.stderr.write(options.delete ? `passwd: removed "${options.user}" from ${options.file}\n` : `passwd: set the password of "${options.user}" in ${options.file}\n`);
  return 0;
}

/** The users of an existing file (entries kept as they are), {} for a new one, undefined (reported) when unreadable. */
function readUsers(file: string, io: PasswdIo): Record<string, unknown> | undefined {
  if (!existsSync(file)) return {};
  const issues: ConfigIssue[] = [];
  const source = YamlSource.read(file, issues);
  const data = source?.toData(issues) as { users?: unknown } | null | undefined;
  if (source && issues.length === 0) {
    if (data === null || (typeof data === 'object' && data !== undefined && !Array.isArray(data) && Object.keys(data).every((k) => k === 'users'))) {
      const users = data?.users ?? {};
      if (typeof users === 'object' && users !== null && !Array.isArray(users)) return { ...(users as Record<string, unknown>) };
    }
    issues.push(source.issue([], 'SB_AUTH_USERS', 'not a users file (expected `users:` mapping names to { password: <hash> }); left unchanged'));
  }
  io.stderr.write(`${formatIssues(issues)}\n`);
  return undefined;
}

/** Writes `text` to a temp file beside `file` (mode 0600), flushes it, then renames it over `file`. */
function writeAtomically(file: string, text: string): void {
  const tmp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.tmp`);
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, file);
}

/** Reads stdin up to its first newline (or its end). */
function readFirstLine(stdin: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const done = (): void => {
      stdin.off('data', onData);
      stdin.off('end', done);
      stdin.off('error', reject);
      stdin.pause();
      const line = text.split(/\r?\n/)[0]!;
      if (line.length > MAX_PASSWORD_LENGTH) reject(new Error(`the password is longer than ${MAX_PASSWORD_LENGTH} characters`));
      else resolve(line);
    };
    const onData = (chunk: Buffer | string): void => {
      text += chunk.toString();
      if (text.includes('\n') || text.length > MAX_PASSWORD_LENGTH) done();
    };
    stdin.on('data', onData);
    stdin.once('end', done);
    stdin.once('error', reject);
  });
}

/** Prompts on the terminal twice without echo; rejects when the two differ. */
async function promptTwice(io: PasswdIo): Promise<string> {
  const first = await promptHidden(io, 'Password: ');
  const second = await promptHidden(io, 'Repeat password: ');
  if (first !== second) throw new Error('the passwords do not match');
  return first;
}

function promptHidden(io: PasswdIo, prompt: string): Promise<string> {
  const { stdin, stderr } = io;
  // Echo goes off before the prompt shows, so nothing typed early is echoed.
  stdin.setRawMode!(true);
  stdin.resume();
  stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let text = '';
    const finish = (err?: Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode!(false);
      stdin.pause();
      stderr.write('\n');
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (chunk: Buffer | string): void => {
      for (const ch of chunk.toString()) {
        if (ch === '\r' || ch === '\n') return finish();
        if (ch === '\u0003' || ch === '\u0004') return finish(new Error('cancelled'));
        if (ch === '\u007f' || ch === '\b') text = text.slice(0, -1);
        else if (text.length >= MAX_PASSWORD_LENGTH) return finish(new Error(`the password is longer than ${MAX_PASSWORD_LENGTH} characters`));
        else text += ch;
      }
    };
    stdin.on('data', onData);
  });
}
