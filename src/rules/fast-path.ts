/**
 * A synchronous fast path for the JSONata expressions most rules use: field paths,
 * literals, object and array constructors, arithmetic, comparisons, `and`/`or`, `? :` and
 * a few pure functions. Such an expression is turned into closures once, at load time, by
 * walking the AST JSONata already parsed; evaluating it is then plain JS with no promises.
 * JSONata 2 `await`s at every AST node, which costs more than the work itself for these.
 *
 * Contract: the compiled function returns exactly what JSONata would return for the input
 * (before expression.ts turns the result into plain JSON), or {@link FALLBACK} whenever it
 * cannot promise that: every case where JSONata throws (T2001, T2009, T2010, D1002, D3001,
 * T0410, D3030, ...) and every case whose JSONata semantics are subtle enough not to
 * re-implement: a path stepping through an array (sequence mapping and flattening), an
 * array value spliced into an array constructor, NaN or ±Infinity anywhere, functions or
 * JSONata function markers in the data, an input document that is itself an array. The
 * caller then evaluates with real JSONata, which gives the right value or the right error.
 * It never throws. The semantics copied here are those of jsonata 2.2's jsonata.js
 * (evaluatePath/evaluateStep/evaluateFilter, evaluateNumericExpression, evaluateComparison
 * Expression, isDeepEqual, fn.string, fn.boolean, ...); test/unit/rules/fast-path.test.ts
 * checks them against JSONata itself on random inputs.
 *
 * Guardrails: none are needed. The subset has no loops, ranges, lambdas, recursion or
 * variable binding, so one evaluation visits each AST node at most once: its cost is
 * bounded by the expression's size plus linear walks of input values (`=` on objects,
 * `&` or `$string` of an object), and the input is bounded by the maximum packet size.
 * The only guardrail JSONata could trip on such an expression is its depth counter, for an
 * absurdly nested expression; {@link FastPathOptions.maxDepth} leaves those to JSONata so
 * they still fail the same way.
 */
import type jsonata from 'jsonata';
import { BUILTINS, add, arithmetic, bail, compare, divide, greater, greaterOrEqual, hasOwn, isDeepEqual, isJsonataFunction, less, lessOrEqual, multiply, numeric, remainder, subtract, toBoolean, toJsonataString } from './fast-path-values.js';

/**
 * Returned by a fast-path function when it cannot give JSONata's answer; the caller must
 * evaluate the expression with JSONata instead. A unique symbol, so it is never a JSON value.
 */
export const FALLBACK: unique symbol = Symbol('signalbox.fast-path.fallback');

/** The type of {@link FALLBACK}. */
export type Fallback = typeof FALLBACK;

/** A compiled fast path: JSONata's result for `input`, or {@link FALLBACK}. Never throws. */
export type FastPathFunction = (input: unknown) => unknown;

/** Options of {@link compileFastPath}. */
export interface FastPathOptions {
  /**
   * The JSONata depth limit (`stack` option) the expression is also compiled with. JSONata
   * counts about one level per AST node plus one per path step; an expression whose AST nests
   * deeper than half of this gets no fast path, so JSONata's depth error is kept. Default: no limit.
   */
  maxDepth?: number;
}

/**
 * Compiles the parsed expression to a synchronous function when every node of its AST is in
 * the supported subset, else returns undefined (the caller keeps using JSONata). Called once
 * per expression at load time. The function assumes the expression is evaluated without
 * bindings: its `$`-functions are JSONata's built-ins and `$`/`$$` are the input.
 *
 * Supported: string, number, `true`/`false`/`null` literals; paths of names (`a.b.c`,
 * `` `a b`.c ``), optionally starting at `$` or `$$`, each step with any number of literal
 * number indexes (`levels[1]`, `levels[-1]`); `(…)` blocks without bindings; `{"k": …}` with
 * distinct literal keys; `[…]`; `+ - * / %`, unary minus, `&`, `= != < <= > >=`, `and`, `or`,
 * `c ? a : b`, `c ? a`, `a ?: b`, `a ?? b`; and `$string`, `$number`, `$round`, `$floor`,
 * `$ceil`, `$abs`, `$uppercase`, `$lowercase`, `$substring`, `$length`, `$exists`,
 * `$boolean`, `$not` called with explicit arguments.
 */
export function compileFastPath(expr: jsonata.Expression, options: FastPathOptions = {}): FastPathFunction | undefined {
  const ast: unknown = expr.ast();
  if (options.maxDepth !== undefined && astDepth(ast, 0, options.maxDepth) * 2 > options.maxDepth) return undefined;
  let compiled: Compiled | undefined;
  try {
    compiled = compileNode(ast);
  } catch {
    return undefined; // an AST too deep for the compiler's own recursion stays with JSONata
  }
  if (compiled === undefined) return undefined;
  return (input: unknown): unknown => {
    // JSONata wraps an array input in a singleton sequence: whole-document mapping semantics.
    if (Array.isArray(input)) return FALLBACK;
    try {
      return compiled(input);
    } catch {
      // BAIL from a closure, or anything unforeseen (a stack overflow in a deep walk): JSONata decides.
      return FALLBACK;
    }
  };
}

/**
 * One compiled node. In the subset the context value never changes (no path step other than
 * a name, no predicate with a context), so every node evaluates against the input document.
 * A node signals "ask JSONata" by throwing BAIL: fallbacks are rare and JSONata's own cost
 * dwarfs a throw, while the common path then needs no check after every child.
 */
type Compiled = (root: unknown) => unknown;

type AstNode = Record<string, unknown>;


function isNode(value: unknown): value is AstNode {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** True when `node` has no property outside `allowed`: an unknown annotation means an unknown feature. */
function only(node: AstNode, allowed: readonly string[]): boolean {
  for (const key of Object.keys(node)) if (!allowed.includes(key)) return false;
  return true;
}

/** Nesting depth of an AST, capped at `cap` (enough to compare against a limit). */
function astDepth(node: unknown, depth: number, cap: number): number {
  if (depth > cap) return depth;
  if (Array.isArray(node)) {
    let max = depth;
    for (const item of node) max = Math.max(max, astDepth(item, depth, cap));
    return max;
  }
  if (!isNode(node)) return depth;
  let max = depth + 1;
  for (const key of Object.keys(node)) {
    const child = node[key];
    if (typeof child === 'object' && child !== null) max = Math.max(max, astDepth(child, depth + 1, cap));
  }
  return max;
}

const LITERAL_KEYS = ['type', 'value', 'position'] as const;

function compileNode(node: unknown): Compiled | undefined {
  if (!isNode(node)) return undefined;
  switch (node.type) {
    case 'string':
    case 'number':
    case 'value': {
      if (!only(node, LITERAL_KEYS)) return undefined;
      const value = node.value;
      const ok = typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' || value === null;
      return ok ? () => value : undefined;
    }
    case 'variable':
      // `$` (the context, which is the input in the subset) and `$$` (the input); any other
      // variable could be a binding or a lambda.
      if (!only(node, LITERAL_KEYS) || (node.value !== '' && node.value !== '$')) return undefined;
      return (root) => root;
    case 'path':
      return compilePath(node);
    case 'block':
      return compileBlock(node);
    case 'condition':
      return compileCondition(node);
    case 'binary':
      return compileBinary(node);
    case 'unary':
      if (node.value === '-') return compileNegation(node);
      if (node.value === '[') return compileArray(node);
      if (node.value === '{') return compileObject(node);
      return undefined;
    case 'function':
      return compileFunction(node);
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------
// Paths

interface Step {
  readonly name: string;
  /** Literal indexes applied in turn (`a[0][-1]`). */
  readonly indexes: readonly number[];
}

function compilePath(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'steps']) || !Array.isArray(node.steps) || node.steps.length === 0) return undefined;
  const steps: Step[] = [];
  for (let i = 0; i < node.steps.length; i++) {
    const step: unknown = node.steps[i];
    if (!isNode(step)) return undefined;
    if (i === 0 && step.type === 'variable') {
      // `$.a`, `$$.a`: the path starts at the input, which is where a path starts anyway.
      if (!only(step, LITERAL_KEYS) || (step.value !== '' && step.value !== '$')) return undefined;
      continue;
    }
    if (step.type !== 'name' || typeof step.value !== 'string' || !only(step, ['type', 'value', 'position', 'stages'])) return undefined;
    const indexes: number[] = [];
    if (step.stages !== undefined) {
      if (!Array.isArray(step.stages)) return undefined;
      for (const stage of step.stages as unknown[]) {
        if (!isNode(stage) || stage.type !== 'filter' || !only(stage, ['type', 'expr', 'position'])) return undefined;
        const index = stage.expr;
        if (!isNode(index) || index.type !== 'number' || typeof index.value !== 'number' || !only(index, LITERAL_KEYS)) return undefined;
        indexes.push(Math.floor(index.value));
      }
    }
    steps.push({ name: step.value, indexes });
  }
  if (steps.length === 0) return (root) => root;
  const last = steps.length - 1;
  // Hot path: a loop over a fixed array, no per-evaluation allocation.
  return (root) => {
    let current = root;
    for (let s = 0; s <= last; s++) {
      const step = steps[s]!;
      let value = lookup(current, step.name);
      for (let x = 0; x < step.indexes.length && value !== undefined; x++) value = selectIndex(value, step.indexes[x]!);
      if (value === undefined) return undefined;
      // An array met mid-path is mapped over by JSONata (sequence semantics): not re-implemented.
      // At the end of the path JSONata returns the input array itself (evaluateStep's
      // `lastStep` case), unless it carries JSONata's own sequence marker.
      if (Array.isArray(value) && (s < last || (value as { sequence?: unknown }).sequence === true)) bail();
      current = value;
    }
    return current;
  };
}

/** JSONata's `lookup` on a non-array: own properties of objects only. */
function lookup(target: unknown, key: string): unknown {
  if (target === null || typeof target !== 'object') return undefined;
  if (Array.isArray(target) || isJsonataFunction(target)) bail();
  // Class instances (a Buffer in a hand-built input) are JSONata's to interpret.
  const proto: unknown = Object.getPrototypeOf(target);
  if (proto !== Object.prototype && proto !== null) bail();
  if (!hasOwn.call(target, key)) return undefined;
  const value = (target as Record<string, unknown>)[key];
  if (typeof value === 'function') bail();
  return value;
}

/**
 * JSONata's numeric filter (`evaluateFilter` with a number predicate): a non-array is a
 * one-item sequence, a negative index counts from the end, and an array item would be spliced
 * into the result (bail).
 */
function selectIndex(value: unknown, index: number): unknown {
  if (!Array.isArray(value)) return index === 0 || index === -1 ? value : undefined;
  if ((value as { sequence?: unknown }).sequence === true) bail();
  const item: unknown = value[index < 0 ? value.length + index : index];
  if (Array.isArray(item) || typeof item === 'function') bail();
  return item;
}

// ---------------------------------------------------------------------------------------
// Blocks, conditions, constructors

function compileAll(nodes: unknown): Compiled[] | undefined {
  if (!Array.isArray(nodes)) return undefined;
  const out: Compiled[] = [];
  for (const n of nodes as unknown[]) {
    const c = compileNode(n);
    if (c === undefined) return undefined;
    out.push(c);
  }
  return out;
}

function compileBlock(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'expressions', 'position'])) return undefined;
  const body = compileAll(node.expressions);
  if (body === undefined) return undefined;
  if (body.length === 0) return () => undefined;
  if (body.length === 1) return body[0]!;
  return (root) => {
    let result: unknown;
    for (let i = 0; i < body.length; i++) result = body[i]!(root);
    return result;
  };
}

function compileCondition(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'condition', 'then', 'else', 'position'])) return undefined;
  const test = compileNode(node.condition);
  const then = compileNode(node.then);
  const otherwise = node.else === undefined ? () => undefined : compileNode(node.else);
  if (test === undefined || then === undefined || otherwise === undefined) return undefined;
  return (root) => (toBoolean(test(root)) === true ? then(root) : otherwise(root));
}

function compileArray(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'value', 'expressions', 'position'])) return undefined;
  const items = compileAll(node.expressions);
  if (items === undefined) return undefined;
  // JSONata keeps a nested `[…]` as one item but splices any other array value in.
  const nested = (node.expressions as AstNode[]).map((n) => n.value === '[');
  return (root) => {
    const out: unknown[] = [];
    for (let i = 0; i < items.length; i++) {
      const value = items[i]!(root);
      if (value === undefined) continue;
      if (Array.isArray(value) && !nested[i]) bail();
      out.push(value);
    }
    return out;
  };
}

function compileObject(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'value', 'lhs', 'position']) || !Array.isArray(node.lhs)) return undefined;
  const keys: string[] = [];
  const values: Compiled[] = [];
  for (const pair of node.lhs as unknown[]) {
    if (!Array.isArray(pair) || pair.length !== 2) return undefined;
    const key: unknown = pair[0];
    if (!isNode(key) || key.type !== 'string' || typeof key.value !== 'string' || !only(key, LITERAL_KEYS)) return undefined;
    // A repeated key is JSONata's D1009 and its marker keys D1013, on every evaluation.
    if (keys.includes(key.value) || key.value === '_jsonata_lambda' || key.value === '_jsonata_function') return undefined;
    const value = compileNode(pair[1]);
    if (value === undefined) return undefined;
    keys.push(key.value);
    values.push(value);
  }
  return (root) => {
    const out: Record<string, unknown> = {};
    for (let i = 0; i < keys.length; i++) {
      const value = values[i]!(root);
      if (value === undefined) continue;
      const key = keys[i]!;
      // A `__proto__` key is data, as in JSONata's null-prototype result.
      if (key === '__proto__') Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      else out[key] = value;
    }
    return out;
  };
}

// ---------------------------------------------------------------------------------------
// Operators

function compileNegation(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'value', 'expression', 'position'])) return undefined;
  const operand = compileNode(node.expression);
  if (operand === undefined) return undefined;
  return (root) => {
    const value = operand(root);
    if (value === undefined) return undefined;
    return -numeric(value);
  };
}

function compileBinary(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'value', 'lhs', 'rhs', 'position'])) return undefined;
  const lhs = compileNode(node.lhs);
  const rhs = compileNode(node.rhs);
  if (lhs === undefined || rhs === undefined) return undefined;
  switch (node.value) {
    case '+':
      return (root) => arithmetic(lhs(root), rhs(root), add);
    case '-':
      return (root) => arithmetic(lhs(root), rhs(root), subtract);
    case '*':
      return (root) => arithmetic(lhs(root), rhs(root), multiply);
    case '/':
      return (root) => arithmetic(lhs(root), rhs(root), divide);
    case '%':
      return (root) => arithmetic(lhs(root), rhs(root), remainder);
    case '=':
      return (root) => {
        const a = lhs(root);
        const b = rhs(root);
        return a !== undefined && b !== undefined && isDeepEqual(a, b);
      };
    case '!=':
      return (root) => {
        const a = lhs(root);
        const b = rhs(root);
        return a !== undefined && b !== undefined && !isDeepEqual(a, b);
      };
    case '<':
      return (root) => compare(lhs(root), rhs(root), less);
    case '<=':
      return (root) => compare(lhs(root), rhs(root), lessOrEqual);
    case '>':
      return (root) => compare(lhs(root), rhs(root), greater);
    case '>=':
      return (root) => compare(lhs(root), rhs(root), greaterOrEqual);
    case '&':
      return (root) => {
        const a = lhs(root);
        const b = rhs(root);
        return (a === undefined ? '' : toJsonataString(a)) + (b === undefined ? '' : toJsonataString(b));
      };
    case 'and':
      // Short-circuits like JSONata: the right side is not evaluated, so cannot fail.
      return (root) => toBoolean(lhs(root)) === true && toBoolean(rhs(root)) === true;
    case 'or':
      return (root) => toBoolean(lhs(root)) === true || toBoolean(rhs(root)) === true;
    default:
      return undefined;
  }
}

function compileFunction(node: AstNode): Compiled | undefined {
  if (!only(node, ['type', 'value', 'arguments', 'procedure', 'name', 'position'])) return undefined;
  const procedure = node.procedure;
  if (!isNode(procedure) || procedure.type !== 'variable' || typeof procedure.value !== 'string' || !only(procedure, LITERAL_KEYS)) return undefined;
  if (!hasOwn.call(BUILTINS, procedure.value)) return undefined;
  const builtin = BUILTINS[procedure.value]!;
  const args = compileAll(node.arguments);
  // Fewer arguments would make JSONata use the context for the first (`$string()`): not in the subset.
  if (args === undefined || args.length < builtin.minArgs || args.length > builtin.maxArgs) return undefined;
  const { apply } = builtin;
  const [first, second, third] = args as [Compiled, Compiled | undefined, Compiled | undefined];
  if (second === undefined) return (root) => apply(argument(first(root)), undefined, undefined);
  if (third === undefined) return (root) => apply(argument(first(root)), argument(second(root)), undefined);
  return (root) => apply(argument(first(root)), argument(second(root)), argument(third(root)));
}

/** JSONata wraps a function-like argument (even a JSON object with its marker keys) as a callable: bail. */
export function argument(value: unknown): unknown {
  if (typeof value === 'function' || (typeof value === 'object' && value !== null && isJsonataFunction(value))) bail();
  return value;
}
