import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { CONFIG_ISSUE_CODES } from '../../../src/config/issues.js';
import { STORAGE_ERROR_CODES } from '../../../src/storage/errors.js';

const root = new URL('../../../', import.meta.url);
const readme = readFileSync(new URL('README.md', root), 'utf8');

/**
 * `ExpressionErrorCode` is a type, so its members are read from its declaration in the source:
 * a code added to the union is then checked here without anyone remembering to list it.
 */
function expressionErrorCodes(): string[] {
  const source = readFileSync(new URL('src/rules/expression.ts', root), 'utf8');
  const declaration = /export type ExpressionErrorCode\s*=([^;]+);/.exec(source);
  if (!declaration) throw new Error('src/rules/expression.ts no longer declares `export type ExpressionErrorCode = ...;`: update this test');
  return [...declaration[1]!.matchAll(/'([A-Z0-9_]+)'/g)].map((m) => m[1]!);
}

/** The codes of `codes` that README.md does not mention as a whole word. */
function undocumented(codes: readonly string[]): string[] {
  return codes.filter((code) => !new RegExp(`(^|[^A-Z0-9_])${code}([^A-Z0-9_]|$)`).test(readme));
}

describe('every error code is documented in README.md', () => {
  test('the expression error codes are read from their type', () => {
    // Guards the parser above: an empty or partial list would make the README check pass vacuously.
    expect(expressionErrorCodes()).toEqual(expect.arrayContaining(['SB_EXPR_SYNTAX', 'SB_EXPR_TIMEOUT', 'SB_EXPR_DEPTH', 'SB_EXPR_SEQUENCE', 'SB_EXPR_EVAL']));
  });

  test('a code counts as documented only when written whole', () => {
    // Guards the matcher: a missing code is reported, and a longer code does not document a shorter one.
    expect(undocumented(['SB_NOT_A_REAL_CODE'])).toEqual(['SB_NOT_A_REAL_CODE']);
    expect(readme).toContain('SB_CONFIG_YAML');
    expect(undocumented(['SB_CONFIG_YAM'])).toEqual(['SB_CONFIG_YAM']);
  });

  test.each([
    { kind: 'config issue codes (src/config/issues.ts)', codes: () => Object.keys(CONFIG_ISSUE_CODES) },
    { kind: 'storage error codes (src/storage/errors.ts)', codes: () => Object.keys(STORAGE_ERROR_CODES) },
    { kind: 'expression error codes (src/rules/expression.ts)', codes: expressionErrorCodes },
  ])('README.md lists all $kind', ({ codes }) => {
    const all = codes();
    expect(all.length).toBeGreaterThan(0);
    const missing = undocumented(all);
    expect(missing, `README.md does not document: ${missing.join(', ')}`).toEqual([]);
  });
});
