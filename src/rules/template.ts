/**
 * `${…}` string templates for action settings (a republish topic
 * `"greenhouse/${payload.room}/fahrenheit"`, a bridge topic `"site-a/${topic}"`): literal text
 * with embedded JSONata expressions, each compiled once at load time and evaluated against
 * the message after the transform.
 */
import { compileExpression, DEFAULT_EXPRESSION_LIMITS, ExpressionError, FALLBACK, type CompiledExpression, type ExpressionLimits } from './expression.js';

/** One piece of a template: literal text, or the source of one `${…}` expression. */
export type TemplatePart = { readonly text: string } | { readonly expression: string };

/** A template compiled once, rendered per message. */
export interface CompiledTemplate {
  /** The template text as written. */
  readonly source: string;
  /** True when the template has no `${…}`: it always renders to the same string. */
  readonly isConstant: boolean;
  /**
   * Renders the template against `input` (the rule input document). Strings are inserted as
   * they are, numbers and booleans via String, null, objects and arrays as JSON. Rejects with
   * an ExpressionError: `SB_EXPR_EVAL` naming the expression when one yields no value (so a
   * topic never silently becomes `a//b`), or whatever the expression's evaluation raised.
   *
   * A constant template returns the same already-resolved promise every time: no JSONata work
   * and no allocation, while callers keep one `await` for both cases. When every expression
   * is in the fast-path subset (see fast-path.ts), the string is built synchronously and
   * returned as a resolved promise; JSONata runs only for a part that falls back.
   */
  render(input: unknown): Promise<string>;
  /**
   * The rendered string without a promise, or FALLBACK when that needs JSONata (a part
   * outside the fast-path subset, a fallback, an error): then call {@link render}.
   */
  renderSync(input: unknown): string | typeof FALLBACK;
  /**
   * Literal text and expression sources in order, for static analysis (loop detection).
   * Adjacent text is merged, `$${` appears as the `${` it stands for, and there are no empty
   * text parts (the empty template has no parts).
   */
  readonly parts: ReadonlyArray<TemplatePart>;
}

/**
 * Compiles a template. `${` opens an expression that runs to the matching `}`; braces inside
 * JSONata string literals ('…', "…", with backslash escapes), `name` literals and comments
 * do not count, so `${ {"a": "}"}.a }` works. `$${` is a literal `${`.
 *
 * Throws an ExpressionError `SB_EXPR_SYNTAX` whose `position` is an offset in the whole
 * template text: at the `${` for an unclosed or empty expression, at the offending token for
 * invalid JSONata. The caller reports it as a config issue at that offset.
 */
export function compileTemplate(text: string, limits: ExpressionLimits = DEFAULT_EXPRESSION_LIMITS): CompiledTemplate {
  const parts: TemplatePart[] = [];
  // Render plan: literal strings and compiled expressions, in order.
  const segments: (string | CompiledExpression)[] = [];
  let literal = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '$' && text.startsWith('$${', i)) {
      literal += '${';
      i += 3;
      continue;
    }
    if (c !== '$' || text[i + 1] !== '{') {
      literal += c;
      i++;
      continue;
    }
    const open = i;
    const start = i + 2;
    const close = findClose(text, start);
    if (close < 0) {
      throw new ExpressionError('SB_EXPR_SYNTAX', `template ${JSON.stringify(text)}: \`\${\` at offset ${open} is never closed; add the closing \`}\`, or write \`$\${\` for a literal \`\${\``, { position: open, token: '${' });
    }
    const source = text.slice(start, close);
    if (source.trim() === '') {
      throw new ExpressionError('SB_EXPR_SYNTAX', `template ${JSON.stringify(text)}: \`\${}\` at offset ${open} has no expression inside; write e.g. \`\${payload.room}\``, { position: open, token: '${' });
    }
    if (literal !== '') {
      parts.push({ text: literal });
      segments.push(literal);
      literal = '';
    }
    parts.push({ expression: source });
    segments.push(compileEmbedded(text, source, start, limits));
    i = close + 1;
  }
  if (literal !== '') {
    parts.push({ text: literal });
    segments.push(literal);
  }

  const isConstant = segments.every((s) => typeof s === 'string');
  const frozenParts = Object.freeze(parts.map((p) => Object.freeze(p)));
  if (isConstant) {
    const constant = segments.join('');
    const rendered = Promise.resolve(constant);
    return { source: text, isConstant, parts: frozenParts, render: () => rendered, renderSync: () => constant };
  }
  // Hot path (every republish): one loop, string concatenation, no per-call closures.
  const renderAsync = async (input: unknown): Promise<string> => {
    let out = '';
    for (let s = 0; s < segments.length; s++) {
      const segment = segments[s]!;
      if (typeof segment === 'string') {
        out += segment;
        continue;
      }
      const value = await segment.evaluate(input);
      if (value === undefined) throw noValue(text, segment.source);
      out += formatValue(value);
    }
    return out;
  };
  const allFast = segments.every((s) => typeof s === 'string' || s.evaluateSync !== undefined);
  if (!allFast) return { source: text, isConstant, parts: frozenParts, render: renderAsync, renderSync: () => FALLBACK };
  // Every part has a synchronous fast path: build the string without a promise per part.
  // Any part that falls back (or yields nothing, which is an error) sends the whole render
  // through renderAsync, which re-evaluates with JSONata and produces the value or error.
  const renderFast = (input: unknown): string | typeof FALLBACK => {
    let out = '';
    for (let s = 0; s < segments.length; s++) {
      const segment = segments[s]!;
      if (typeof segment === 'string') {
        out += segment;
        continue;
      }
      const value = segment.evaluateSync!(input);
      if (value === FALLBACK || value === undefined) return FALLBACK;
      out += formatValue(value);
    }
    return out;
  };
  const renderSync = (input: unknown): string | typeof FALLBACK => {
    try {
      return renderFast(input);
    } catch {
      // JSON.stringify of an odd value (a BigInt in a hand-built input): renderAsync rejects with it.
      return FALLBACK;
    }
  };
  return {
    source: text,
    isConstant,
    parts: frozenParts,
    renderSync,
    render(input: unknown): Promise<string> {
      const out = renderSync(input);
      return out === FALLBACK ? renderAsync(input) : Promise.resolve(out);
    },
  };
}

/** Strings as they are, numbers and booleans via String, null, objects and arrays as JSON. */
function formatValue(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  return JSON.stringify(value);
}

/** Compiles one `${…}` body, moving a syntax error's position from the body to the whole template. */
function compileEmbedded(template: string, source: string, offset: number, limits: ExpressionLimits): CompiledExpression {
  try {
    return compileExpression(source, limits);
  } catch (err) {
    if (!(err instanceof ExpressionError) || err.code !== 'SB_EXPR_SYNTAX') throw err;
    const position = offset + (err.position ?? 0);
    const cause = err.cause as { message?: unknown } | undefined;
    const reason = typeof cause?.message === 'string' ? cause.message : err.message;
    const near = err.token === undefined ? '' : ` near ${JSON.stringify(err.token)}`;
    const code = err.jsonataCode === undefined ? '' : ` (${err.jsonataCode})`;
    throw new ExpressionError('SB_EXPR_SYNTAX', `template ${JSON.stringify(template)}: invalid JSONata in \`\${${source}}\` at offset ${position}${near}: ${reason}${code}`, {
      position,
      ...(err.token === undefined ? {} : { token: err.token }),
      ...(err.jsonataCode === undefined ? {} : { jsonataCode: err.jsonataCode }),
      cause: err,
    });
  }
}

/**
 * Index of the `}` closing an expression that starts at `from`, or -1. Skips JSONata string
 * literals, `name` literals and comments, where braces are text. Regex literals are not
 * recognised (telling `/…/` from a division needs the JSONata parser), so a regex with an
 * unbalanced brace such as `/a\}/` ends the expression early; such a regex belongs in the
 * transform, where no template scanning happens.
 */
function findClose(text: string, from: number): number {
  let depth = 0;
  let j = from;
  while (j < text.length) {
    const ch = text[j];
    if (ch === '"' || ch === "'") {
      j++;
      while (j < text.length && text[j] !== ch) j += text[j] === '\\' ? 2 : 1;
      if (j >= text.length) return -1;
    } else if (ch === '`') {
      j = text.indexOf('`', j + 1);
      if (j < 0) return -1;
    } else if (ch === '/' && text[j + 1] === '*') {
      j = text.indexOf('*/', j + 2);
      if (j < 0) return -1;
      j++;
    } else if (ch === '{') {
      depth++;
    } else if (ch === '}') {
      if (depth === 0) return j;
      depth--;
    }
    j++;
  }
  return -1;
}

function noValue(template: string, expression: string): ExpressionError {
  return new ExpressionError(
    'SB_EXPR_EVAL',
    `template ${JSON.stringify(template)}: \`\${${expression}}\` produced no value; check the field exists in the message, or give a default like \`\${${expression.trim()} ?? "unknown"}\``,
  );
}
