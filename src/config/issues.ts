/**
 * Every code a configuration or rule problem can carry. The text is the documentation: the
 * README lists each code, and a test checks that it does.
 */
export const CONFIG_ISSUE_CODES = {
  SB_CONFIG_NOT_FOUND: 'A file named on the command line or in the config does not exist.',
  SB_CONFIG_TOO_LARGE: 'A config or rule file is larger than 1 MiB.',
  SB_CONFIG_YAML: 'The file is not valid YAML (syntax, duplicate keys, too many aliases).',
  SB_CONFIG_SCHEMA: 'A value has the wrong type or range, or a key is unknown.',
  SB_CONFIG_ENV: 'A `${env:NAME}` reference names an environment variable that is not set.',
  SB_CONFIG_TLS: "A TLS listener's cert, key or ca file cannot be read or used (not PEM, wrong passphrase, key not matching the certificate).",
  SB_AUTH_USERS: 'The users file is malformed: not `users: { name: { password: <hash> } }`, a plain-text password or a bad hash, or a username with control characters.',
  SB_AUTH_INSECURE_LISTENER: 'A listener on a non-loopback address has no authentication (no users file, no required client certificate, anonymous not explicitly true).',
  SB_ACL_FILTER: 'A filter in `broker.acl` is not a valid MQTT topic filter (after `%u`/`%c`).',
  SB_RULE_DUPLICATE_ID: 'Two rules, in the same file or in different files, share an id.',
  SB_RULE_FILTER: 'A topic filter in `on:` is not a valid MQTT filter.',
  SB_RULE_EXPRESSION: 'A JSONata expression (`when`, `transform`, a `${…}` template) does not compile.',
  SB_RULE_OUTPUT: 'An output in `to:` is unknown, or names an `outputs:` entry that is not defined.',
  SB_RULE_LOOP: 'A rule republishes onto a topic its own `on:` filters match (set `allowLoop: true` if intended).',
  SB_RULE_TEST: 'A `tests:` case is malformed.',
} as const;

export type ConfigIssueCode = keyof typeof CONFIG_ISSUE_CODES;

/** One problem found while loading configuration or rules, with where it is. */
export interface ConfigIssue {
  file: string;
  /** 1-based. */
  line: number;
  /** 1-based. */
  col: number;
  code: ConfigIssueCode;
  message: string;
  /** What would be accepted, when that helps. */
  hint?: string;
}

/** Thrown when loading found problems; carries all of them, never just the first. */
export class ConfigError extends Error {
  readonly code = 'SB_ERR_CONFIG';
  constructor(readonly issues: ConfigIssue[]) {
    super(formatIssues(issues));
  }
}

/** `file:line:col CODE message` per issue, with an indented hint line where there is one. */
export function formatIssues(issues: readonly ConfigIssue[]): string {
  return issues
    .map((i) => `${i.file}:${i.line}:${i.col} ${i.code} ${i.message}${i.hint ? `\n    hint: ${i.hint}` : ''}`)
    .join('\n');
}

/** Sorts issues by file, then position, so reports read top to bottom. */
export function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues.sort((a, b) => (a.file === b.file ? a.line - b.line || a.col - b.col : a.file < b.file ? -1 : 1));
}
