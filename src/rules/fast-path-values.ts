/**
 * The value semantics of the JSONata fast path (see fast-path.ts): arithmetic, comparison,
 * equality, truthiness, string conversion and the built-in functions it supports, each
 * copied from jsonata 2.2's jsonata.js and checked against it by the fast-path tests. A
 * helper that meets a case JSONata would treat differently (or reject) calls bail().
 */

/** Thrown (never escapes compileFastPath's wrapper). A frozen constant: no module state. */
export const BAIL: Readonly<{ bail: true }> = Object.freeze({ bail: true });

export function bail(): never {
  throw BAIL;
}

export const hasOwn = Object.prototype.hasOwnProperty;

export const add = (a: number, b: number): number => a + b;
export const subtract = (a: number, b: number): number => a - b;
export const multiply = (a: number, b: number): number => a * b;
export const divide = (a: number, b: number): number => a / b;
export const remainder = (a: number, b: number): number => a % b;

/** evaluateNumericExpression: both sides are checked before undefined short-circuits. */
export function arithmetic(a: unknown, b: unknown, op: (a: number, b: number) => number): unknown {
  if (a !== undefined) numeric(a); // T2001
  if (b !== undefined) numeric(b); // T2002
  if (a === undefined || b === undefined) return undefined;
  const result = op(a as number, b as number);
  // JSONata returns NaN/±Infinity as is and fails on them later (D1001): leave both to it.
  return Number.isFinite(result) ? result : bail();
}

/** A finite number, else bail (T2001/T2002/D1002 for non-numbers, D1001 for ±Infinity). */
export function numeric(value: unknown): number {
  return Number.isFinite(value) ? (value as number) : bail();
}

export const less = (a: number | string, b: number | string): boolean => a < b;
export const lessOrEqual = (a: number | string, b: number | string): boolean => a <= b;
export const greater = (a: number | string, b: number | string): boolean => a > b;
export const greaterOrEqual = (a: number | string, b: number | string): boolean => a >= b;

/** evaluateComparisonExpression: undefined on either side gives undefined (not false). */
export function compare(a: unknown, b: unknown, op: (a: number | string, b: number | string) => boolean): boolean | undefined {
  const ta = typeof a;
  const tb = typeof b;
  if ((ta !== 'undefined' && ta !== 'string' && ta !== 'number') || (tb !== 'undefined' && tb !== 'string' && tb !== 'number')) bail(); // T2010
  if (ta === 'undefined' || tb === 'undefined') return undefined;
  if (ta !== tb) bail(); // T2009
  return op(a as number | string, b as number | string);
}

/** utils.isDeepEqual, verbatim in behaviour. */
export function isDeepEqual(lhs: unknown, rhs: unknown): boolean {
  if (lhs === rhs) return true;
  if (typeof lhs !== 'object' || typeof rhs !== 'object' || lhs === null || rhs === null) return false;
  if (Array.isArray(lhs) && Array.isArray(rhs)) {
    if (lhs.length !== rhs.length) return false;
    for (let i = 0; i < lhs.length; i++) if (!isDeepEqual(lhs[i], rhs[i])) return false;
    return true;
  }
  const lkeys = Object.getOwnPropertyNames(lhs);
  const rkeys = Object.getOwnPropertyNames(rhs);
  if (lkeys.length !== rkeys.length) return false;
  lkeys.sort();
  rkeys.sort();
  for (let i = 0; i < lkeys.length; i++) if (lkeys[i] !== rkeys[i]) return false;
  for (const key of lkeys) if (!isDeepEqual((lhs as Record<string, unknown>)[key], (rhs as Record<string, unknown>)[key])) return false;
  return true;
}

export function isJsonataFunction(value: object): boolean {
  const v = value as { _jsonata_lambda?: unknown; _jsonata_function?: unknown };
  return v._jsonata_lambda === true || v._jsonata_function === true;
}

/** fn.boolean: JSONata's truthiness; undefined stays undefined. */
export function toBoolean(value: unknown): boolean | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value)) {
    if (value.length === 1) return toBoolean(value[0]);
    let any = false;
    // No short-circuit: JSONata tests every item, so an item it fails on must bail here too.
    for (let i = 0; i < value.length; i++) if (toBoolean(value[i]) === true) any = true;
    return any;
  }
  switch (typeof value) {
    case 'string':
      return value.length > 0;
    case 'number':
      if (Number.isNaN(value)) return false;
      return Number.isFinite(value) ? value !== 0 : bail(); // D1001
    case 'boolean':
      return value;
    case 'object':
      if (value === null) return false;
      if (isJsonataFunction(value)) bail();
      for (const key in value) if (hasOwn.call(value, key)) return true;
      return false;
    default:
      // functions are false in JSONata; bigint and symbol are not JSONata values.
      return typeof value === 'function' ? false : bail();
  }
}

/** fn.string for a defined value: strings as is, numbers to 15 significant digits, the rest as JSON. */
export function toJsonataString(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return value;
    case 'number':
      if (!Number.isFinite(value)) bail(); // D3001
      return String(Number.isInteger(value) ? value : Number(value.toPrecision(15)));
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (isJsonataFunction(value) || (Array.isArray(value) && (value as { outerWrapper?: unknown }).outerWrapper)) bail();
      const text: unknown = JSON.stringify(value, jsonReplacer);
      return typeof text === 'string' ? text : bail();
    }
    default:
      return bail();
  }
}

/** fn.string's replacer: non-integers to 15 significant digits; bails where JSONata errs or blanks functions. */
export function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) bail();
    return Number.isInteger(value) ? value : Number(value.toPrecision(15));
  }
  if (typeof value === 'function' || (typeof value === 'object' && value !== null && isJsonataFunction(value))) bail();
  return value;
}

// ---------------------------------------------------------------------------------------
// Functions

/** A built-in: its argument counts and an implementation that gets evaluated arguments. */
export interface Builtin {
  readonly minArgs: number;
  readonly maxArgs: number;
  /** Gets the evaluated arguments; missing ones are undefined, as JSONata passes them. */
  readonly apply: (a: unknown, b: unknown, c: unknown) => unknown;
}

/** Arguments a signature type `s`/`n` accepts in the subset; anything else is T0410 (bail). */
export function optionalString(value: unknown): string | undefined {
  return value === undefined || typeof value === 'string' ? value : bail();
}

export function optionalNumber(value: unknown): number | undefined {
  // Non-finite numbers pass JSONata's signature check but make its results NaN/Infinity.
  return value === undefined || Number.isFinite(value) ? (value as number | undefined) : bail();
}

export function finiteResult(value: number): number {
  return Number.isFinite(value) ? value : bail();
}

export const JSON_NUMBER = /^-?[0-9]+(\.[0-9]+)?([Ee][-+]?[0-9]+)?$/;
export const RADIX_NUMBER = /^(0[xX][0-9A-Fa-f]+)|(0[oO][0-7]+)|(0[bB][0-1]+)$/;

export function codePoints(text: string): string[] {
  return Array.from(text);
}

/** Functions looked up by name; a frozen table built once, no state. */
export const BUILTINS: Readonly<Record<string, Builtin>> = Object.freeze({
  string: {
    minArgs: 1,
    maxArgs: 1,
    apply: (v) => (v === undefined ? undefined : toJsonataString(v)),
  },
  number: {
    minArgs: 1,
    maxArgs: 1,
    apply: (v) => {
      if (v === undefined) return undefined;
      if (typeof v === 'number') return finiteResult(v);
      if (typeof v === 'boolean') return v ? 1 : 0;
      if (typeof v !== 'string') return bail(); // T0410
      if (JSON_NUMBER.test(v) && !Number.isNaN(parseFloat(v)) && Number.isFinite(Number(v))) return parseFloat(v);
      if (RADIX_NUMBER.test(v)) return finiteResult(Number(v));
      return bail(); // D3030
    },
  },
  round: {
    minArgs: 1,
    maxArgs: 2,
    apply: (v, p) => {
      const arg = optionalNumber(v);
      const precision = optionalNumber(p);
      return arg === undefined ? undefined : finiteResult(round(arg, precision));
    },
  },
  floor: { minArgs: 1, maxArgs: 1, apply: (v) => mapNumber(v, Math.floor) },
  ceil: { minArgs: 1, maxArgs: 1, apply: (v) => mapNumber(v, Math.ceil) },
  abs: { minArgs: 1, maxArgs: 1, apply: (v) => mapNumber(v, Math.abs) },
  uppercase: {
    minArgs: 1,
    maxArgs: 1,
    apply: (v) => optionalString(v)?.toUpperCase(),
  },
  lowercase: {
    minArgs: 1,
    maxArgs: 1,
    apply: (v) => optionalString(v)?.toLowerCase(),
  },
  substring: {
    minArgs: 2,
    maxArgs: 3,
    apply: (s, st, len) => {
      const str = optionalString(s);
      const start = optionalNumber(st);
      const length = optionalNumber(len);
      return str === undefined ? undefined : substring(str, start, length);
    },
  },
  length: {
    minArgs: 1,
    maxArgs: 1,
    apply: (v) => {
      const str = optionalString(v);
      return str === undefined ? undefined : codePoints(str).length;
    },
  },
  exists: { minArgs: 1, maxArgs: 1, apply: (v) => v !== undefined },
  boolean: { minArgs: 1, maxArgs: 1, apply: (v) => toBoolean(v) },
  not: {
    minArgs: 1,
    maxArgs: 1,
    apply: (v) => (v === undefined ? undefined : !toBoolean(v)),
  },
});

export function mapNumber(value: unknown, op: (n: number) => number): number | undefined {
  const n = optionalNumber(value);
  return n === undefined ? undefined : op(n);
}

/** fn.round: round half to even, shifting the decimal point in the string form. */
export function round(value: number, precision: number | undefined): number {
  let arg = value;
  if (precision) {
    const shifted = arg.toString().split('e');
    arg = +(shifted[0] + 'e' + (shifted[1] ? +shifted[1] + precision : precision));
  }
  let result = Math.round(arg);
  const diff = result - arg;
  if (Math.abs(diff) === 0.5 && Math.abs(result % 2) === 1) result = result - 1;
  if (precision) {
    const shifted = result.toString().split('e');
    result = +(shifted[0] + 'e' + (shifted[1] ? +shifted[1] - precision : -precision));
  }
  return Object.is(result, -0) ? 0 : result;
}

/** fn.substring: by code points; a negative start counts from the end. */
export function substring(str: string, startArg: number | undefined, length: number | undefined): string {
  const chars = codePoints(str);
  const strLength = chars.length;
  let start = startArg;
  // `start` may be undefined (`$substring(s, missing)`): JSONata then slices from 0, as here.
  if (strLength + (start as number) < 0) start = 0;
  if (length !== undefined) {
    if (length <= 0) return '';
    const end = (start as number) >= 0 ? (start as number) + length : strLength + (start as number) + length;
    return chars.slice(start, end).join('');
  }
  return chars.slice(start).join('');
}
