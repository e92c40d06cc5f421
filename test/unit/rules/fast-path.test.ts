import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import jsonata from 'jsonata';
import { compileFastPath, FALLBACK, type FastPathFunction } from '../../../src/rules/fast-path.js';
import { compileExpression, DEFAULT_EXPRESSION_LIMITS, ExpressionError, type ExpressionLimits } from '../../../src/rules/expression.js';
import { compileTemplate } from '../../../src/rules/template.js';

/** A rule input document shaped like the engine's (see src/engine/message.ts). */
function message(topic: string, payload: unknown): Record<string, unknown> {
  return { topic, levels: topic.split('/'), payload, qos: 1, retain: false, clientId: 'sensor-7', timestamp: 1_700_000_000_000, properties: {}, hops: 0 };
}

function fastPath(source: string): FastPathFunction | undefined {
  return compileFastPath(jsonata(source));
}

function mustCompile(source: string): FastPathFunction {
  const fast = fastPath(source);
  if (fast === undefined) throw new Error(`expected ${source} to have a fast path`);
  return fast;
}

/** For tests not about the timeout: a CPU-starved machine must not turn them into SB_EXPR_TIMEOUT. */
const PATIENT: ExpressionLimits = { ...DEFAULT_EXPRESSION_LIMITS, timeoutMs: 10_000 };

/** The rule measured in the broker benchmark (bench/rules-spec.js). */
const BENCH_TRANSFORM = '{"id": levels[1], "c": payload.value, "f": payload.value*9/5+32, "ts": payload.ts}';

describe('compileFastPath: what compiles', () => {
  it.each([
    BENCH_TRANSFORM,
    'payload.id',
    '"text"',
    '42',
    'true',
    'null',
    '$',
    '$$',
    '$.payload.a',
    '$$.levels[0]',
    '`odd key`.x',
    'levels[1][0]',
    '[payload.a, [1, 2]]',
    '-payload.value',
    '(payload.value - 32) * 5 / 9 % 2',
    'topic & "/" & qos',
    'payload.a = payload.b and payload.c != 1 or payload.d < 2 and payload.e <= 3 and payload.f > 4 and payload.g >= 5',
    'payload.x ? 1 : 2',
    'payload.x ? 1',
    'payload.x ?: "default"',
    'payload.x ?? "default"',
    '()',
    '(1; 2)',
    '$string(1) & $number("2") & $round(1.5) & $round(1.25, 1) & $floor(1) & $ceil(1) & $abs(1)',
    '$uppercase("a") & $lowercase("B") & $substring("abc", 1) & $substring("abc", 1, 1) & $length("abc")',
    '$exists(a) and $boolean(b) and $not(c)',
  ])('compiles %s', (source) => {
    expect(fastPath(source)).toBeTypeOf('function');
  });

  it.each([
    '$map(payload.items, function($x) { $x * 2 })',
    'function($x) { $x }',
    'payload.items[value > 3]',
    'payload.items[$ > 3]',
    'payload.items[[0..1]]',
    'payload.items[0][]',
    'payload.**.value',
    'payload.*',
    'payload.items.(value)',
    'payload.items#$i.value',
    'payload.items@$x.value',
    'payload.items^(value)',
    'payload{"k": value}',
    'payload.a.%.b',
    '[1, 2][0]',
    '$string(1)[0]',
    '$string()',
    '$substring("abc")',
    '$sum(payload.items)',
    '$count(levels)',
    '$threshold',
    '($a := 1; $a)',
    '[1..3]',
    '"a" in ["a", "b"]',
    '/ab+c/',
    'payload ~> $string',
    '$string ~> $uppercase',
    '{"a": 1, "a": 2}',
    '{payload.key: 1}',
    '$$ ~> |payload|{"x": 1}|',
  ])('leaves %s to JSONata', (source) => {
    expect(fastPath(source)).toBeUndefined();
  });

  it('leaves an expression nested deeper than half the depth limit to JSONata', () => {
    const deep = `${'('.repeat(60)}1${')'.repeat(60)}`;
    expect(compileFastPath(jsonata(deep), { maxDepth: 200 })).toBeTypeOf('function');
    expect(compileFastPath(jsonata(deep), { maxDepth: 100 })).toBeUndefined();
    expect(compileExpression(deep, { ...PATIENT, maxDepth: 100 }).evaluateSync).toBeUndefined();
  });
});

describe('compileFastPath: evaluation', () => {
  const reading = message('sensors/greenhouse/temperature', { id: 's1', value: 20, ts: 1_700_000_000_123 });

  it('computes the benchmark transform as JSONata does', () => {
    expect(mustCompile(BENCH_TRANSFORM)(reading)).toStrictEqual({ id: 'greenhouse', c: 20, f: 68, ts: 1_700_000_000_123 });
  });

  it('follows JSONata on missing fields: undefined values, omitted keys, "" in &, undefined comparisons', () => {
    const doc = message('a', { x: 1 });
    expect(mustCompile('payload.nope.deeper')(doc)).toBeUndefined();
    expect(mustCompile('payload.nope * 2')(doc)).toBeUndefined();
    expect(mustCompile('{"a": payload.nope, "b": payload.x}')(doc)).toStrictEqual({ b: 1 });
    expect(mustCompile('"<" & payload.nope & ">"')(doc)).toBe('<>');
    expect(mustCompile('payload.nope < 3')(doc)).toBeUndefined();
    expect(mustCompile('payload.nope = payload.nope')(doc)).toBe(false);
    expect(mustCompile('[payload.nope, 1]')(doc)).toStrictEqual([1]);
  });

  it('stringifies numbers in & the way $string does', () => {
    const f = mustCompile('"" & payload');
    expect(f(message('a', 1e21))).toBe('1e+21');
    expect(f(message('a', 0.1 + 0.2))).toBe('0.3');
    expect(f(message('a', -0))).toBe('0');
    expect(f(message('a', { n: 1 / 3 }))).toBe('{"n":0.333333333333333}');
  });

  it('keeps -0 where JSONata keeps it and deep-compares objects with =', () => {
    expect(Object.is(mustCompile('payload * -1')(message('a', 0)), -0)).toBe(true);
    expect(mustCompile('payload = {"a": [1, {"b": 2}]}')(message('a', { a: [1, { b: 2 }] }))).toBe(true);
  });

  it('returns an input array reached at the end of a path as it is, and indexes into one', () => {
    const items = [{ value: 1 }, { value: 2 }];
    const doc = message('a/b/c', { items });
    expect(mustCompile('payload.items')(doc)).toBe(items);
    expect(mustCompile('payload.items[-1].value')(doc)).toBe(2);
    expect(mustCompile('levels[-1]')(doc)).toBe('c');
    expect(mustCompile('levels[7]')(doc)).toBeUndefined();
  });

  it.each([
    // JSONata would throw
    ['"x" + payload.value', { value: 1 }],
    ['payload.value + 1', { value: 'one' }],
    ['payload.value < "a"', { value: 1 }],
    ['payload.value < 1', { value: { a: 1 } }],
    ['-payload.value', { value: 'one' }],
    ['$number(payload.value)', { value: 'twenty' }],
    ['$uppercase(payload.value)', { value: 1 }],
    ['$floor(payload.value)', { value: null }],
    // JSONata returns NaN or Infinity, which it then fails on elsewhere
    ['payload.value / 0', { value: 1 }],
    // Sequence semantics: mapping over an array met mid-path
    ['payload.items.value', { items: [{ value: 1 }, { value: 2 }] }],
    ['payload.items[0].value', { items: [[{ value: 1 }], [{ value: 2 }]] }],
    ['[payload.items]', { items: [1, 2] }],
  ])('returns FALLBACK for %s on %j, where JSONata throws or maps', (source, payload) => {
    expect(mustCompile(source)(message('a', payload))).toBe(FALLBACK);
  });

  it('returns FALLBACK for an input document that is itself an array', () => {
    expect(mustCompile('$')([1, 2])).toBe(FALLBACK);
  });
});

// ---------------------------------------------------------------------------------------
// Differential property test against JSONata itself.

const KEYS = ['value', 'ts', 'id', 'celsius', 'state', 'name', 'a', 'b', 'items', 'x', 'zero'] as const;

const numbers = fc.oneof(
  fc.integer({ min: -1000, max: 1000 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(0, -0, 20, -40, -41, 100, 1e21, 1e-7, 0.1, 0.5, 2.5, -2.5, 1.005, 1 / 3, 123.456, 1.23456789012345678, Number.MAX_SAFE_INTEGER, 1e308),
);
const strings = fc.oneof(fc.constantFrom('', 'open', 'closed', 'north', 'm', '12', '-3.5', '1e3', '0x1F', '0b101', ' 1', 'ABC', '😀x', 'Straße'), fc.string({ maxLength: 6 }));
const scalars = fc.oneof(numbers, strings, fc.boolean(), fc.constant(null));

/** Objects are built with Object.fromEntries so a "__proto__" key is data, as JSON.parse makes it. */
const json = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalars, scalars, fc.array(tie('value'), { maxLength: 3 }), objectOf(tie('value'))),
})).value;

function objectOf(values: fc.Arbitrary<unknown>): fc.Arbitrary<Record<string, unknown>> {
  const key = fc.oneof({ weight: 12, arbitrary: fc.constantFrom(...KEYS) }, { weight: 1, arbitrary: fc.constantFrom('__proto__', 'constructor', '0', '_jsonata_function') });
  return fc.array(fc.tuple(key, values), { maxLength: 5 }).map((entries) => Object.fromEntries(entries) as Record<string, unknown>);
}

const payloads = fc.oneof({ weight: 6, arbitrary: objectOf(json) }, { weight: 1, arbitrary: scalars }, { weight: 1, arbitrary: fc.array(json, { maxLength: 3 }) });

const levels = fc.oneof(
  { weight: 8, arbitrary: fc.array(fc.constantFrom('sensors', 'greenhouse', 'north', 'temp', ''), { maxLength: 5 }) },
  { weight: 1, arbitrary: fc.array(json, { maxLength: 3 }) },
);

const messages = fc.record(
  {
    topic: fc.constantFrom('sensors/greenhouse/temp', 'a/b', ''),
    levels,
    payload: payloads,
    qos: fc.constantFrom(0, 1, 2),
    retain: fc.boolean(),
    clientId: fc.constantFrom('sensor-7', ''),
    timestamp: fc.constant(1_700_000_000_000),
    properties: fc.oneof(fc.constant({}), fc.constant({ userProperties: { x: 'y' }, contentType: 'application/json' })),
    hops: fc.nat({ max: 3 }),
  },
  { requiredKeys: ['topic', 'qos', 'retain', 'clientId', 'timestamp', 'properties', 'hops'] },
);

/** Mostly message documents; now and then a bare value or nothing, which JSONata also accepts. */
const docs = fc.oneof({ weight: 20, arbitrary: messages }, { weight: 1, arbitrary: fc.oneof(scalars, fc.constant(undefined)) });

/** At least 30 expressions rules really use, each also run with the inputs that break it. */
const SUPPORTED = [
  BENCH_TRANSFORM,
  'payload.id',
  'payload.celsius > -40',
  'payload = "open" or payload.state = "open"',
  '"temp=" & payload.value & "C at " & payload.ts',
  'payload.value & "/" & payload.celsius',
  'payload.missing * 2',
  'payload.value + payload.missing',
  '-payload.value',
  'payload.value % 7',
  'payload.value / payload.b',
  '(payload.value - 32) * 5 / 9',
  'levels[-1]',
  'levels[0] & "/" & levels[5]',
  'levels[1][0]',
  '$.payload.a.b',
  '$$.topic',
  'payload.a.b.x',
  'payload.items[0]',
  'payload.items[-1].value',
  'payload.items',
  'payload',
  '{"room": levels[1], "data": payload, "none": payload.missing}',
  '[payload.value, payload.ts, [levels[0]], []]',
  'payload.value ? "yes" : "no"',
  'payload.x ? payload.x',
  'payload.celsius >= 30 and payload.state != "closed"',
  'payload.a = payload.b',
  'payload.name < "m"',
  'payload.value <= payload.ts',
  '"" & payload',
  'payload.a & payload.b',
  '$string(payload.value)',
  '$number(payload.name)',
  '$round(payload.value, 2) & "|" & $round(payload.value)',
  '$floor(payload.value) + $ceil(payload.value) + $abs(payload.value)',
  '$uppercase(payload.name) & $lowercase(levels[0])',
  '$substring(payload.name, 1, 2) & $substring(payload.name, -2)',
  '$length(payload.name)',
  '$exists(payload.value) and $not(payload.state)',
  '$boolean(payload.items)',
  'payload.id ?? "unknown"',
  'payload.name ?: "default"',
  'topic & "@" & $string(qos) & "#" & (hops + 1)',
  'properties.userProperties.x',
  '$ = $$',
];

/**
 * A result in comparable form: sequences as plain arrays, objects (null-prototype or not) as
 * Maps, so keys such as "constructor" or "__proto__" are compared as data. Keeps -0, which
 * toStrictEqual tells from 0.
 */
function plain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plain);
  if (value === null || typeof value !== 'object') return value;
  return new Map(Object.keys(value).map((key) => [key, plain((value as Record<string, unknown>)[key])]));
}

describe('compileFastPath agrees with JSONata on random messages', () => {
  it('covers at least 30 expressions', () => {
    expect(SUPPORTED.length).toBeGreaterThanOrEqual(30);
  });

  it.each(SUPPORTED)('%s: same value, or FALLBACK where JSONata throws', async (source) => {
    const reference = jsonata(source);
    const fast = mustCompile(source);
    let answered = 0;
    await fc.assert(
      fc.asyncProperty(docs, async (doc) => {
        let expected: unknown;
        let error: unknown;
        try {
          expected = plain(await reference.evaluate(doc));
        } catch (err) {
          error = err;
        }
        const actual = fast(doc);
        if (actual === FALLBACK) return;
        answered++;
        expect(error, `JSONata threw ${JSON.stringify(error)} but the fast path returned ${String(actual)}`).toBeUndefined();
        expect(plain(actual)).toStrictEqual(expected);
      }),
      { numRuns: 300 },
    );
    // A differential test that always falls back would test nothing.
    expect(answered).toBeGreaterThan(0);
  });

  it.each(SUPPORTED)('%s: compileExpression gives the same value or error with and without the fast path', async (source) => {
    const withFast = compileExpression(source, PATIENT);
    const without = compileExpression(source, PATIENT, { fastPath: false });
    expect(withFast.evaluateSync).toBeTypeOf('function');
    expect(without.evaluateSync).toBeUndefined();
    await fc.assert(
      fc.asyncProperty(docs, async (doc) => {
        const settle = (p: Promise<unknown>) => p.then((value) => ({ value }), (err: ExpressionError) => ({ code: err.code, jsonataCode: err.jsonataCode, message: err.message }));
        const expected = await settle(without.evaluate(doc));
        expect(await settle(withFast.evaluate(doc))).toStrictEqual(expected);
        const sync = withFast.evaluateSync!(doc);
        if (sync !== FALLBACK) expect({ value: sync }).toStrictEqual(expected);
      }),
      { numRuns: 100 },
    );
  });
});

describe('compileExpression and compileTemplate with the fast path', () => {
  const reading = message('sensors/greenhouse/temperature', { id: 's1', value: 20, ts: 5 });

  it('exposes evaluateSync only for expressions in the subset', () => {
    expect(compileExpression(BENCH_TRANSFORM).evaluateSync?.(reading)).toStrictEqual({ id: 'greenhouse', c: 20, f: 68, ts: 5 });
    expect(compileExpression('$count(levels)').evaluateSync).toBeUndefined();
  });

  it('still rejects with JSONata\'s error when the fast path falls back', async () => {
    const expr = compileExpression('payload.value * 2');
    const doc = message('a', { value: 'twenty' });
    expect(expr.evaluateSync!(doc)).toBe(FALLBACK);
    const err = (await expr.evaluate(doc).catch((e: unknown) => e)) as ExpressionError;
    expect(err).toBeInstanceOf(ExpressionError);
    expect(err.code).toBe('SB_EXPR_EVAL');
    expect(err.jsonataCode).toBe('T2001');
  });

  it('uses JSONata when bindings are given, since they may shadow a built-in', async () => {
    const expr = compileExpression('$string(payload.value)');
    expect(await expr.evaluate(reading)).toBe('20');
    expect(await expr.evaluate(reading, { string: () => 'shadowed' })).toBe('shadowed');
  });

  it('renders a template whose parts are all fast, and falls back per render when a part needs JSONata', async () => {
    const template = compileTemplate('out/${payload.id}/temp');
    expect(await template.render(reading)).toBe('out/s1/temp');
    // payload.items.id maps over an array: JSONata's answer, rendered as JSON.
    const mapped = compileTemplate('out/${payload.items.id}');
    expect(await mapped.render(message('a', { items: [{ id: 'a' }, { id: 'b' }] }))).toBe('out/["a","b"]');
    const missing = await template.render(message('a', {})).catch((e: unknown) => e);
    expect((missing as ExpressionError).message).toContain('produced no value');
  });
});

describe('fast path micro-benchmark (printed, not asserted)', () => {
  it('measures evaluate() of the benchmark transform with and without the fast path', async () => {
    const doc = message('sensors/greenhouse/temperature', { id: 's1', value: 21.5, ts: 1_700_000_000_123 });
    const rate = async (run: () => Promise<unknown>, n: number): Promise<number> => {
      for (let i = 0; i < n / 10; i++) await run(); // warm-up
      const started = performance.now();
      for (let i = 0; i < n; i++) await run();
      return n / ((performance.now() - started) / 1000);
    };
    const rateSync = (run: () => unknown, n: number): number => {
      for (let i = 0; i < n / 10; i++) run();
      const started = performance.now();
      for (let i = 0; i < n; i++) run();
      return n / ((performance.now() - started) / 1000);
    };
    const jsonataOnly = compileExpression(BENCH_TRANSFORM, PATIENT, { fastPath: false });
    const withFast = compileExpression(BENCH_TRANSFORM, PATIENT);
    const before = await rate(() => jsonataOnly.evaluate(doc), 20_000);
    const after = await rate(() => withFast.evaluate(doc), 200_000);
    const sync = rateSync(() => withFast.evaluateSync!(doc), 200_000);
    const fmt = (r: number) => `${Math.round(r).toLocaleString('en-US')}/s (${(1e6 / r).toFixed(2)} µs)`;
    console.log(
      `benchmark transform, evaluate(): JSONata ${fmt(before)}; fast path ${fmt(after)}, x${(after / before).toFixed(1)}; evaluateSync ${fmt(sync)}, x${(sync / before).toFixed(1)}`,
    );
    expect(after).toBeGreaterThan(0);
  });
});
