import type { ConfigIssue } from '../config/issues.js';
import { YamlSource } from '../config/source.js';
import { parseHash, type ScryptHash } from './auth-hash.js';

/**
 * The users file: YAML of the form
 *
 * ```yaml
 * users:
 *   alice: { password: "scrypt$16384$8$1$…$…" }
 * ```
 *
 * Passwords are only ever stored as scrypt hashes (see auth-hash.ts); `signalbox passwd`
 * writes them.
 */

/** One user: the hash as written (it keys the credential cache) and parsed. */
export interface UserEntry {
  readonly hashText: string;
  readonly hash: ScryptHash;
}

/** Users by name. */
export type UserTable = ReadonlyMap<string, UserEntry>;

/** Longest username accepted, in characters (MQTT strings hold at most 65,535 bytes). */
export const MAX_USERNAME_LENGTH = 1024;

/**
 * Why `name` cannot be a username, or undefined when it can. Control characters are refused
 * so a name cannot forge log lines or terminal output.
 */
export function invalidUsername(name: string): string | undefined {
  if (name.length === 0) return 'a username must not be empty';
  if (name.length > MAX_USERNAME_LENGTH) return `a username must be at most ${MAX_USERNAME_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f]/.test(name)) return 'a username must not contain control characters';
  return undefined;
}

/**
 * Reads and checks a users file. Every problem (missing file, bad YAML, a password not
 * stored as a scrypt hash, a bad name) is appended to `issues` with its position; the result
 * is undefined when there was any.
 */
export function loadUsersFile(file: string, issues: ConfigIssue[]): UserTable | undefined {
  const before = issues.length;
  let source: YamlSource | undefined;
  try {
    source = YamlSource.read(file, issues);
  } catch (err) {
    // Present but unreadable: a folder, no permission, an I/O error.
    issues.push({ file, line: 1, col: 1, code: 'SB_AUTH_USERS', message: `cannot read the users file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
    return undefined;
  }
  if (!source) return undefined;
  const data = source.toData(issues) as unknown;
  if (data === undefined) return undefined;
  const users = new Map<string, UserEntry>();
  const root = data as { users?: unknown } | null;
  if (typeof root !== 'object' || root === null || Array.isArray(root) || Object.keys(root).some((k) => k !== 'users')) {
    issues.push(source.issue([], 'SB_AUTH_USERS', 'a users file holds one key, `users:`, mapping each username to { password: <scrypt hash> }', 'create it with `signalbox passwd <file> <user>`'));
    return undefined;
  }
  const entries = root.users ?? {};
  if (typeof entries !== 'object' || entries === null || Array.isArray(entries)) {
    issues.push(source.issue(['users'], 'SB_AUTH_USERS', '`users:` must map usernames to { password: <scrypt hash> }'));
    return undefined;
  }
  for (const [name, entry] of Object.entries(entries as Record<string, unknown>)) {
    const path = ['users', name];
    const bad = invalidUsername(name);
    if (bad) {
      issues.push(source.issue(path, 'SB_AUTH_USERS', `user ${JSON.stringify(name.slice(0, 64))}: ${bad}`));
      continue;
    }
    const password = (entry as { password?: unknown } | null)?.password;
    if (typeof entry !== 'object' || entry === null || Object.keys(entry).some((k) => k !== 'password') || typeof password !== 'string') {
      issues.push(source.issue(path, 'SB_AUTH_USERS', `user "${name}": expected { password: <scrypt hash> }`, 'set it with `signalbox passwd <file> <user>`'));
      continue;
    }
    const hash = parseHash(password);
    if (typeof hash === 'string') {
      const plaintext = !password.startsWith('scrypt$');
      issues.push(
        source.issue([...path, 'password'], 'SB_AUTH_USERS', `user "${name}": the password ${plaintext ? 'looks like plain text; only scrypt hashes are accepted' : hash}`, `set it with \`signalbox passwd ${file} ${name}\``),
      );
      continue;
    }
    users.set(name, { hashText: password, hash });
  }
  return issues.length === before ? users : undefined;
}
