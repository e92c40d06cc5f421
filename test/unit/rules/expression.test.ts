import { describe, it, expect } from 'vitest';
import { compileExpression, ExpressionError, DEFAULT_EXPRESSION_LIMITS, type ExpressionLimits } from '../../../src/rules/expression.js';

/** A rule input document shaped like the engine's (see src/engine/message.ts). */
function message(topic: string, payload: unknown): Record<string, unknown> {
  return { topic, levels: topic.split('/'), payload, qos: 1, retain: false, clientId: 'sensor-7', timestamp: 1_700_000_000_000, properties: {}, hops: 0 };
}

/** Evaluates and returns the ExpressionError it rejects with, plus the time it took. */
async function failure(source: string, input: unknown = {}, limits?: ExpressionLimits): Promise<{ error: ExpressionError; ms: number }> {
  const expr = compileExpression(source, limits);
  const started = performance.now();
  const error = await expr.evaluate(input).then(
    (value) => {
      throw new Error(`expected ${source} to fail, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(ExpressionError);
  return { error: error as ExpressionError, ms: performance.now() - started };
}

/** For tests not about the timeout: a CPU-starved machine must not turn them into SB_EXPR_TIMEOUT. */
const PATIENT: ExpressionLimits = { ...DEFAULT_EXPRESSION_LIMITS, timeoutMs: 10_000 };

function syntaxError(source: string): ExpressionError {
  try {
    compileExpression(source);
  } catch (err) {
    expect(err).toBeInstanceOf(ExpressionError);
    return err as ExpressionError;
  }
  throw new Error(`expected ${source} not to compile`);
}

describe('compileExpression: syntax errors', () => {
  it.each([
    // source, 0-based offset of the offending token, token
    ['payload.celsius > > 3', 18, '>'],
    ['a.b c', 4, 'c'],
    ['1 +* 2', 5, '2'],
    ['"abc" "d\\"e"', 6, 'd"e'],
    ['a `b c`', 2, 'b c'],
    ['1 2.50', 2, '2.5'],
  ])('a syntax error in %j carries the position (%i) and token of the offending token', (source, position, token) => {
    const err = syntaxError(source);
    expect(err.code).toBe('SB_EXPR_SYNTAX');
    expect(err.position).toBe(position);
    expect(err.token).toBe(token);
    expect(err.message).toContain(`offset ${position}`);
    expect(err.jsonataCode).toMatch(/^S0\d{3}$/);
  });

  it.each([
    ['payload.celsius >', 'Unexpected end of expression'],
    ['a + "abc', 'String literal must be terminated'],
    ['{ "room": levels[1] ', 'Expected "}"'],
    ['', 'Unexpected end of expression'],
  ])('an expression %j that ends too early points at its end', (source, reason) => {
    const err = syntaxError(source);
    expect(err.code).toBe('SB_EXPR_SYNTAX');
    expect(err.position).toBe(source.length);
    expect(err.token).toBeUndefined();
    expect(err.message).toContain(reason);
  });

  it('refuses limits that would silently disable a guardrail', () => {
    expect(() => compileExpression('1', { ...DEFAULT_EXPRESSION_LIMITS, timeoutMs: 0 })).toThrow(/timeoutMs must be a positive integer/);
    expect(() => compileExpression('1', { ...DEFAULT_EXPRESSION_LIMITS, maxDepth: Number.NaN })).toThrow(/maxDepth/);
  });
});

describe('compileExpression: evaluation', () => {
  const greenhouse = message('greenhouse/north/temperature', { celsius: 20 });

  it('evaluates typical rule expressions over the message document', async () => {
    expect(await compileExpression('payload.celsius > -40').evaluate(greenhouse)).toBe(true);
    expect(await compileExpression('payload.celsius > -40').evaluate(message('greenhouse/north/temperature', { celsius: -41 }))).toBe(false);
    expect(await compileExpression('{ "room": levels[1], "f": payload.celsius * 9 / 5 + 32 }').evaluate(greenhouse)).toStrictEqual({ room: 'north', f: 68 });
    expect(await compileExpression('topic & " @ qos " & $string(qos)').evaluate(greenhouse)).toBe('greenhouse/north/temperature @ qos 1');
    expect(await compileExpression('$count(levels)').evaluate(greenhouse)).toBe(3);
    expect(await compileExpression('payload.humidity').evaluate(greenhouse)).toBeUndefined();
  });

  it('passes bindings as $variables', async () => {
    const expr = compileExpression('payload.celsius > $threshold');
    expect(await expr.evaluate(greenhouse, { threshold: 10 })).toBe(true);
    expect(await expr.evaluate(greenhouse, { threshold: 30 })).toBe(false);
  });

  it('returns plain JSON: sequences become plain arrays and objects get the ordinary prototype', async () => {
    const input = message('a/b', { readings: [3, 1, 2] });
    const seq = await compileExpression('payload.readings[[0..1]]').evaluate(input);
    expect(Object.getPrototypeOf(seq)).toBe(Array.prototype);
    expect(Object.keys(seq as object)).toEqual(['0', '1']);
    expect(seq).toStrictEqual([3, 1]);

    const nested = (await compileExpression('{ "first": payload.readings[[0..1]], "sorted": $sort(payload.readings) }').evaluate(input)) as Record<string, unknown>;
    expect(Object.getPrototypeOf(nested)).toBe(Object.prototype);
    expect(Object.keys(nested.first as object)).toEqual(['0', '1']);
    expect(nested).toStrictEqual({ first: [3, 1], sorted: [1, 2, 3] });
    expect(JSON.parse(JSON.stringify(nested))).toStrictEqual(nested);

    // A singleton kept as an array by `[]` stays an array.
    expect(await compileExpression('payload.readings[0][]').evaluate(input)).toStrictEqual([3]);
  });

  it('returns input values it does not change without copying them', async () => {
    const input = message('a/b', { deep: { list: [1, 2, 3] } });
    expect(await compileExpression('payload').evaluate(input)).toBe(input.payload);
  });

  it('keeps a JSON "__proto__" key as data when it copies an object', async () => {
    const payload = JSON.parse('{"__proto__": {"polluted": true}, "x": 1}') as unknown;
    const result = (await compileExpression('{ "copy": $merge([payload, {"y": 2}]) }').evaluate({ payload })) as { copy: object };
    expect(Object.getPrototypeOf(result.copy)).toBe(Object.prototype);
    expect(Object.keys(result.copy)).toEqual(['__proto__', 'x', 'y']);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('maps JSONata runtime errors to SB_EXPR_EVAL keeping JSONata\'s code and message', async () => {
    const t2001 = (await failure('"x" + payload.celsius', greenhouse)).error;
    expect(t2001.code).toBe('SB_EXPR_EVAL');
    expect(t2001.jsonataCode).toBe('T2001');
    expect(t2001.message).toContain('T2001');
    expect(t2001.message).toContain('The left side of the "+" operator must evaluate to a number');
    expect(t2001.message).toContain('"x" + payload.celsius');

    const d3030 = (await failure('$number("twenty")')).error;
    expect(d3030.code).toBe('SB_EXPR_EVAL');
    expect(d3030.message).toMatch(/D3030 Unable to cast value to a number/);
  });

  it('refuses a function as a result, since it is not JSON', async () => {
    const { error } = await failure('{ "f": function($x) { $x } }');
    expect(error.code).toBe('SB_EXPR_EVAL');
    expect(error.message).toMatch(/function/);
  });

  it('evaluates the same compiled expression many times correctly', async () => {
    const expr = compileExpression('{ "room": levels[1], "f": payload.celsius * 9 / 5 + 32 }', PATIENT);
    for (let i = 0; i < 5000; i++) {
      const room = `room${i % 7}`;
      expect(await expr.evaluate(message(`greenhouse/${room}/temperature`, { celsius: i }))).toStrictEqual({ room, f: (i * 9) / 5 + 32 });
    }
  });
});

describe('compileExpression: guardrails', () => {
  it('stops infinite recursion with SB_EXPR_DEPTH within milliseconds', async () => {
    const { error, ms } = await failure('($f := function($x) { 1 + $f($x) }; $f(1))', {}, PATIENT);
    expect(error.code).toBe('SB_EXPR_DEPTH');
    expect(error.message).toContain(`maxDepth ${DEFAULT_EXPRESSION_LIMITS.maxDepth}`);
    expect(ms).toBeLessThan(1000);
  });

  it('stops infinite tail recursion, which JSONata runs as a loop in constant depth, with SB_EXPR_TIMEOUT', async () => {
    const { error, ms } = await failure('($f := function($x) { $f($x) }; $f(1))');
    expect(error.code).toBe('SB_EXPR_TIMEOUT');
    expect(error.message).toContain('timeoutMs 100');
    expect(ms).toBeGreaterThanOrEqual(DEFAULT_EXPRESSION_LIMITS.timeoutMs - 1);
    expect(ms).toBeLessThan(1000);
  });

  it.each([
    ['[1..10000000].($ * 2)', 'SB_EXPR_SEQUENCE', PATIENT],
    ['$count([1..1000000000])', 'SB_EXPR_SEQUENCE', PATIENT],
    ['[1..1000].([1..1000])', 'SB_EXPR_SEQUENCE', PATIENT],
    ['$sum([1..50000].($sum([1..50000])))', 'SB_EXPR_TIMEOUT', DEFAULT_EXPRESSION_LIMITS],
    ['($loop := function($n) { $n < 0 ? $n : $loop($n + 1) }; $loop(0))', 'SB_EXPR_TIMEOUT', DEFAULT_EXPRESSION_LIMITS],
  ])('stops the busy loop %j with %s within a second', async (source, code, limits) => {
    const { error, ms } = await failure(source, {}, limits);
    expect(error.code).toBe(code);
    expect(ms).toBeLessThan(1000);
  });

  it('refuses an array longer than maxSequence even when a native function built it or the input held it', async () => {
    const limits = { ...PATIENT, maxSequence: 100 };
    const split = (await failure('$split($pad("", 101, "a"), "")', {}, limits)).error;
    expect(split.code).toBe('SB_EXPR_SEQUENCE');
    expect(split.message).toContain('maxSequence 100');
    const passthrough = (await failure('payload', { payload: { list: new Array(101).fill(0) } }, limits)).error;
    expect(passthrough.code).toBe('SB_EXPR_SEQUENCE');
    expect(await compileExpression('$split($pad("", 100, "a"), "")', limits).evaluate({})).toHaveLength(100);
  });

  it('runs two concurrent evaluations of one compiled expression without interference, the fast one first', async () => {
    const expr = compileExpression('$sum([1..n].($ * 2))', PATIENT);
    const order: string[] = [];
    const slow = expr.evaluate({ n: 90_000 }).then((v) => (order.push('slow'), v));
    const fast = expr.evaluate({ n: 3 }).then((v) => (order.push('fast'), v));
    expect(await Promise.all([slow, fast])).toEqual([90_000 * 90_001, 12]);
    expect(order).toEqual(['fast', 'slow']);
  });

  it('counts depth per evaluation: two concurrent recursions each within maxDepth both succeed', async () => {
    const source = '($f := function($n) { $n <= 0 ? 0 : 1 + $f($n - 1) }; $f(n))';
    const expr = compileExpression(source, PATIENT);
    // 50 levels fit in maxDepth 200 but 100 do not, so a shared depth counter would fail here.
    expect((await failure(source, { n: 100 }, PATIENT)).error.code).toBe('SB_EXPR_DEPTH');
    expect(await Promise.all([expr.evaluate({ n: 50 }), expr.evaluate({ n: 50 })])).toEqual([50, 50]);
  });

  it('times out a runaway evaluation without failing a fast one running beside it', async () => {
    const expr = compileExpression('n = 0 ? "quick" : ($f := function($x) { $f($x) }; $f(1))');
    const [runaway, quick] = await Promise.allSettled([expr.evaluate({ n: 1 }), expr.evaluate({ n: 0 })]);
    expect(quick).toEqual({ status: 'fulfilled', value: 'quick' });
    expect(runaway.status === 'rejected' && (runaway.reason as ExpressionError).code).toBe('SB_EXPR_TIMEOUT');
  });
});
