/**
 * JSONata expressions for rules: compiled once at load time, evaluated per message with
 * guardrails, so a runaway expression is stopped with a typed error (which the pipeline
 * counts and logs) instead of stalling the broker.
 *
 * Guardrail mechanism: jsonata 2.2's own public options (`timeout`, `stack`, `sequence`,
 * declared in jsonata.d.ts). Read from node_modules/jsonata/jsonata.js: every `evaluate()`
 * call creates its own execution frame (`exec_env`) holding the start time, the current
 * nesting depth and the sequence factory, and every AST node runs `environment.base
 * .guardrails()` synchronously against that frame; frames made inside the evaluation
 * (blocks, lambdas) share its `base`. So concurrent evaluations of one compiled expression
 * never share guardrail state. The sequence limit is checked on every push and before a
 * range is allocated, so `[1..1e7]` fails without allocating.
 *
 * The alternative, the undocumented `Symbol.for('jsonata.__evaluate_entry')` / `__evaluate_exit`
 * hooks with per-call state passed in `bindings` and `Date.now()` every 64 nodes, was built
 * and measured slower: jsonata `await`s each hook on every node, and those two microtask
 * turns cost more than the one `Date.now()` per node of the built-in check. Node 20, 100k
 * evaluations of `payload.value * 9 / 5 + 32`: no guardrails ~450k/s (2.2 µs), this module
 * ~360k/s (2.8 µs, including the plain-JSON result walk), hooks ~300k/s (3.3 µs).
 *
 * Most rule expressions never reach JSONata's interpreter: fast-path.ts compiles the common
 * subset to synchronous closures (the rules benchmark's transform: ~15 µs through JSONata,
 * ~0.5 µs through the fast path, test/unit/rules/fast-path.test.ts prints both).
 */
import jsonata from 'jsonata';
import { compileFastPath, FALLBACK, type FastPathFunction } from './fast-path.js';

export { FALLBACK, type Fallback } from './fast-path.js';

/** Limits applied to every evaluation of one compiled expression. */
export interface ExpressionLimits {
  /** Wall-clock budget of one evaluation, in milliseconds. */
  timeoutMs: number;
  /** Deepest nesting of evaluated nodes (JSONata's own depth counter, which user-function recursion grows). */
  maxDepth: number;
  /** Longest sequence (array) an evaluation may build or return. */
  maxSequence: number;
}

/**
 * Defaults, chosen for one process handling tens of thousands of messages a second:
 * - `timeoutMs: 100`: a typical rule expression takes 2–20 µs, so 100 ms is thousands of
 *   times the normal cost, yet a runaway stalls the event loop (evaluation never yields to
 *   I/O) for at most a tenth of a second before it is stopped. It is wall-clock time: a
 *   process starved of CPU for longer than this fails the evaluation it was in (seen twice
 *   in a few million trivial evaluations on a 2-core machine at load 5); that costs one
 *   counted message, and a deployment on a busy host may raise it.
 * - `maxDepth: 200`: ordinary expressions nest fewer than 30 levels; 200 still allows 65
 *   levels of non-tail recursion in a user function. JSONata runs tail calls as a loop, so
 *   tail recursion never grows depth and only the timeout stops an endless one.
 * - `maxSequence: 100_000`: a payload is at most 256 KiB by default (`maxPacketSize`), whose
 *   largest possible array (one-digit numbers) has ~130k elements; real payload arrays are
 *   far smaller. 100k leaves room for them and stops `[1..1e7]` before it is allocated.
 */
export const DEFAULT_EXPRESSION_LIMITS: ExpressionLimits = Object.freeze({
  timeoutMs: 100,
  maxDepth: 200,
  maxSequence: 100_000,
});

/**
 * - `SB_EXPR_SYNTAX`: the source does not parse (load time; `position` and `token` say where).
 * - `SB_EXPR_TIMEOUT`: one evaluation ran longer than `timeoutMs`.
 * - `SB_EXPR_DEPTH`: nesting (recursion) went deeper than `maxDepth`.
 * - `SB_EXPR_SEQUENCE`: a sequence grew past `maxSequence` (or past JSONata's 1e7 range cap).
 * - `SB_EXPR_EVAL`: any other runtime failure (JSONata's T…/D… errors, a function as a result).
 */
export type ExpressionErrorCode = 'SB_EXPR_SYNTAX' | 'SB_EXPR_TIMEOUT' | 'SB_EXPR_DEPTH' | 'SB_EXPR_SEQUENCE' | 'SB_EXPR_EVAL';

/** Optional details of an {@link ExpressionError}. */
export interface ExpressionErrorDetails {
  /** 0-based character offset in the source where the offending token starts. */
  position?: number;
  /** The offending token, as JSONata reports it. */
  token?: string;
  /** JSONata's own error code (e.g. `S0201`, `T2001`, `D1012`). */
  jsonataCode?: string;
  cause?: unknown;
}

/**
 * Thrown by {@link compileExpression} (code `SB_EXPR_SYNTAX`, config time: the caller turns it
 * into a config issue at `position`) and by {@link CompiledExpression.evaluate} (every other
 * code, run time: the caller counts and logs it and drops the message for that rule).
 * Never retryable: the same input fails the same way.
 */
export class ExpressionError extends Error {
  override readonly name = 'ExpressionError';
  readonly code: ExpressionErrorCode;
  /** 0-based character offset in the source, for syntax errors. */
  readonly position?: number;
  readonly token?: string;
  readonly jsonataCode?: string;
  readonly retryable = false;

  constructor(code: ExpressionErrorCode, message: string, details: ExpressionErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    if (details.position !== undefined) this.position = details.position;
    if (details.token !== undefined) this.token = details.token;
    if (details.jsonataCode !== undefined) this.jsonataCode = details.jsonataCode;
  }
}

/** A JSONata expression compiled once, evaluated any number of times, concurrently if need be. */
export interface CompiledExpression {
  readonly source: string;
  /**
   * Evaluates against `input` (the rule input document), with `bindings` as `$name`
   * variables. Resolves to a plain JSON value (or undefined for "no result"): JSONata
   * sequences become plain arrays, its null-prototype objects plain objects, so the result
   * can be JSON.stringify'd and deep-compared. Rejects with an {@link ExpressionError}.
   */
  evaluate(input: unknown, bindings?: Record<string, unknown>): Promise<unknown>;
  /**
   * Present only when the expression is in the fast-path subset (see fast-path.ts): evaluates
   * `input` synchronously, without bindings, and returns the same plain JSON value `evaluate`
   * would resolve to, or {@link FALLBACK} when it cannot promise that (the expression would
   * fail, or the input needs JSONata's sequence semantics). It never throws. On FALLBACK the
   * caller awaits `evaluate(input)`, which gives the value or the error:
   *
   * ```ts
   * let value = expr.evaluateSync ? expr.evaluateSync(doc) : FALLBACK;
   * if (value === FALLBACK) value = await expr.evaluate(doc);
   * ```
   *
   * Hot-path callers use it to skip promise allocation and microtask turns entirely.
   */
  evaluateSync?(input: unknown): unknown;
}

/** Options of {@link compileExpression}. */
export interface CompileOptions {
  /**
   * Whether expressions in the fast-path subset run as plain synchronous JS (default true).
   * False forces JSONata for every evaluation: for benchmarks and differential tests.
   */
  fastPath?: boolean;
}

/**
 * Compiles `source` with `limits`. Throws an {@link ExpressionError} with code
 * `SB_EXPR_SYNTAX`, `position` (0-based offset of the offending token, or the source length
 * for an unexpected end) and `token`; throws a RangeError for limits that are not positive
 * integers, which is a programming error (the config schema validates them).
 *
 * An expression in the fast-path subset (fast-path.ts: paths, literals, constructors,
 * arithmetic, comparisons, conditionals, a few pure functions) is also compiled to plain JS;
 * `evaluate` without bindings then runs that and only falls back to JSONata when it returns
 * FALLBACK. The limits do not apply to it: it has no loops or recursion, so it cannot run
 * away, and it leaves to JSONata any expression nested deep enough to meet `maxDepth`.
 */
export function compileExpression(source: string, limits: ExpressionLimits = DEFAULT_EXPRESSION_LIMITS, options: CompileOptions = {}): CompiledExpression {
  for (const key of ['timeoutMs', 'maxDepth', 'maxSequence'] as const) {
    // jsonata treats 0 as "no limit", so a zero here would silently disable a guardrail.
    if (!Number.isSafeInteger(limits[key]) || limits[key] <= 0) throw new RangeError(`expression limit ${key} must be a positive integer, got ${limits[key]}`);
  }
  let compiled: jsonata.Expression;
  try {
    compiled = jsonata(source, { timeout: limits.timeoutMs, stack: limits.maxDepth, sequence: limits.maxSequence });
  } catch (err) {
    throw syntaxError(source, err);
  }
  const { maxSequence } = limits;
  const evaluateJsonata = async (input: unknown, bindings?: Record<string, unknown>): Promise<unknown> => {
    let result: unknown;
    try {
      result = await compiled.evaluate(input, bindings);
    } catch (err) {
      throw runtimeError(source, limits, err);
    }
    try {
      return toPlain(result, maxSequence);
    } catch (err) {
      if (err instanceof ExpressionError) throw new ExpressionError(err.code, `${describe(source)}: ${err.message}`);
      throw runtimeError(source, limits, err);
    }
  };
  const fast = options.fastPath === false ? undefined : compileFastPath(compiled, { maxDepth: limits.maxDepth });
  if (fast === undefined) return { source, evaluate: evaluateJsonata };
  const evaluateSync = (input: unknown): unknown => evaluateFast(fast, input, maxSequence);
  return {
    source,
    // Hot path: no async function, so a fast result costs one already-resolved promise.
    evaluate(input: unknown, bindings?: Record<string, unknown>): Promise<unknown> {
      // Bindings may shadow the built-ins the fast path assumes, or define variables it lacks.
      if (bindings === undefined || !hasKeys(bindings)) {
        const value = evaluateFast(fast, input, maxSequence);
        if (value !== FALLBACK) return Promise.resolve(value);
      }
      return evaluateJsonata(input, bindings);
    },
    evaluateSync,
  };
}

/**
 * Runs the fast path and makes its result plain JSON as `evaluate` does. toPlain copies
 * nothing here (the fast path builds ordinary objects and arrays) but still checks input
 * values passed through for maxSequence and functions; when that fails, JSONata's run
 * produces the error with its proper message.
 */
function evaluateFast(fast: FastPathFunction, input: unknown, maxSequence: number): unknown {
  const value = fast(input);
  if (typeof value === 'function') return FALLBACK; // only `$` of a function input; toPlain would refuse it
  if (value === null || typeof value !== 'object') return value;
  try {
    return toPlain(value, maxSequence);
  } catch {
    return FALLBACK;
  }
}

function hasKeys(record: Record<string, unknown>): boolean {
  for (const key in record) if (Object.prototype.hasOwnProperty.call(record, key)) return true;
  return false;
}

interface JsonataFailure {
  code?: unknown;
  message?: unknown;
  position?: unknown;
  token?: unknown;
}

function syntaxError(source: string, err: unknown): ExpressionError {
  const e = (typeof err === 'object' && err !== null ? err : {}) as JsonataFailure;
  const jsonataCode = typeof e.code === 'string' ? e.code : undefined;
  const text = typeof e.message === 'string' ? e.message : String(err);
  const token = e.token === undefined || e.token === '(end)' ? undefined : String(e.token);
  const position = tokenStart(source, typeof e.position === 'number' ? e.position : source.length, token);
  const near = token === undefined ? '' : ` near ${JSON.stringify(token)}`;
  return new ExpressionError('SB_EXPR_SYNTAX', `invalid JSONata at offset ${position}${near}: ${text}${jsonataCode ? ` (${jsonataCode})` : ''}`, {
    position,
    ...(token === undefined ? {} : { token }),
    ...(jsonataCode === undefined ? {} : { jsonataCode }),
    cause: err,
  });
}

/**
 * JSONata reports the offset just after the offending token; users want the caret on its
 * first character, so walk back over the token's source text.
 */
function tokenStart(source: string, end: number, token: string | undefined): number {
  const at = Math.min(Math.max(end, 0), source.length);
  if (token === undefined) return at;
  // Names, operators and plainly written numbers appear verbatim.
  if (at >= token.length && source.startsWith(token, at - token.length)) return at - token.length;
  const quote = source[at - 1];
  if (quote === '"' || quote === "'" || quote === '`') {
    // A string or `name` literal whose escapes differ from its value: find its opening quote.
    for (let i = at - 2; i >= 0; i--) {
      if (source[i] !== quote) continue;
      let slashes = 0;
      while (i - 1 - slashes >= 0 && source[i - 1 - slashes] === '\\') slashes++;
      if (quote === '`' || slashes % 2 === 0) return i;
    }
  }
  // A number written differently from its value (2.50, 1e3).
  let i = at;
  while (i > 0 && /[0-9.eE+-]/.test(source[i - 1]!)) i--;
  return i;
}

/** Names an expression in run-time messages, which have no file position to point at. */
function describe(source: string): string {
  const oneLine = source.trim().replace(/\s+/g, ' ');
  return `expression \`${oneLine.length > 80 ? `${oneLine.slice(0, 77)}...` : oneLine}\``;
}

function runtimeError(source: string, limits: ExpressionLimits, err: unknown): ExpressionError {
  if (err instanceof ExpressionError) return err;
  const where = describe(source);
  // A JS stack overflow (very deep input walked by a native function) is a depth problem.
  if (err instanceof RangeError && /call stack/i.test(err.message)) {
    return new ExpressionError('SB_EXPR_DEPTH', `${where} overflowed the stack: ${err.message}`, { cause: err });
  }
  const e = (typeof err === 'object' && err !== null ? err : {}) as JsonataFailure;
  const jsonataCode = typeof e.code === 'string' ? e.code : undefined;
  const text = typeof e.message === 'string' ? e.message : String(err);
  const detail = jsonataCode ? `${jsonataCode} ${text}` : text;
  const details: ExpressionErrorDetails = jsonataCode === undefined ? { cause: err } : { jsonataCode, cause: err };
  switch (jsonataCode) {
    case 'D1011':
      return new ExpressionError('SB_EXPR_DEPTH', `${where} nested deeper than maxDepth ${limits.maxDepth} (runaway recursion?): ${detail}`, details);
    case 'D1012':
      return new ExpressionError('SB_EXPR_TIMEOUT', `${where} ran longer than timeoutMs ${limits.timeoutMs} (endless loop?): ${detail}`, details);
    case 'D2014': // JSONata's own hard cap on ranges (1e7), applied before maxSequence
    case 'D2015':
      return new ExpressionError('SB_EXPR_SEQUENCE', `${where} built a sequence longer than maxSequence ${limits.maxSequence}: ${detail}`, details);
    default:
      return new ExpressionError('SB_EXPR_EVAL', `${where} failed: ${detail}`, details);
  }
}

/** JSONata function values: lambdas and wrapped natives are plain objects with these markers. */
function isJsonataFunction(value: object): boolean {
  const v = value as { _jsonata_lambda?: unknown; _jsonata_function?: unknown };
  return v._jsonata_lambda === true || v._jsonata_function === true;
}

/**
 * Turns a JSONata result into plain JSON, copying only what needs it: sequences (arrays with
 * a `sequence` flag and, under a sequence limit, an own `push`) and JSONata's null-prototype
 * objects. Input values returned unchanged are not copied, so passing a payload through costs
 * a walk, not an allocation. Also enforces maxSequence on arrays JSONata built outside its
 * sequence factory (`$split`, array constructors) or took from the input.
 */
function toPlain(value: unknown, maxSequence: number): unknown {
  if (typeof value === 'function') throw producedFunction();
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) {
    if (value.length > maxSequence) {
      throw new ExpressionError('SB_EXPR_SEQUENCE', `result has an array of ${value.length} elements, longer than maxSequence ${maxSequence}`);
    }
    let out: unknown[] | undefined = (value as { sequence?: unknown }).sequence === true ? [] : undefined;
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i];
      const plain = toPlain(item, maxSequence);
      if (out === undefined && plain !== item) out = value.slice(0, i);
      if (out !== undefined) out.push(plain);
    }
    return out ?? value;
  }
  const proto: unknown = Object.getPrototypeOf(value);
  // Class instances (a Buffer or Date the caller put in the input) are the caller's to render.
  if (proto !== null && proto !== Object.prototype) return value;
  if (isJsonataFunction(value)) throw producedFunction();
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record);
  let out: Record<string, unknown> | undefined = proto === null ? {} : undefined;
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    const item = record[key];
    const plain = toPlain(item, maxSequence);
    if (out === undefined && plain !== item) {
      out = {};
      for (let j = 0; j < i; j++) setOwn(out, keys[j]!, record[keys[j]!]);
    }
    if (out !== undefined) setOwn(out, key, plain);
  }
  return out ?? value;
}

/** Assignment would turn a `__proto__` key (legal in JSON) into a prototype change. */
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
  else target[key] = value;
}

function producedFunction(): ExpressionError {
  return new ExpressionError('SB_EXPR_EVAL', 'result contains a function, which is not a JSON value; call it instead of returning it');
}
