import { describe, expect, it } from 'vitest';
import { toRuleInput } from '../../../src/engine/message.js';
import { influxAction, influxActionSchema } from '../../../src/outputs/influx-action.js';
import { PointError, type InfluxPoint } from '../../../src/outputs/influx-points.js';
import { ActionConfigError, type Effect } from '../../../src/outputs/types.js';
import { DEFAULT_EXPRESSION_LIMITS } from '../../../src/rules/expression.js';

const T = Date.UTC(2026, 0, 1);
const ctx = { limits: DEFAULT_EXPRESSION_LIMITS, namedOutputs: new Map([['tsdb', 'influx'], ['cloud', 'bridge']]) };

function compile(settings: Record<string, unknown>) {
  return influxAction.compile(influxActionSchema.parse({ output: 'tsdb', ...settings }), ctx);
}

function input(payload: unknown, topic = 'greenhouse/north/temperature') {
  return toRuleInput({ topic, payload: Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload)), qos: 1, retain: false, clientId: 'c1', timestamp: T, hops: 0 });
}

/** The points one message makes, whether the action planned synchronously or not. */
async function points(settings: Record<string, unknown>, payload: unknown, topic?: string): Promise<InfluxPoint[]> {
  const effects: Effect[] = await compile(settings).plan(input(payload, topic), 'r1');
  return effects.flatMap((e) => e.data as InfluxPoint[]);
}

async function pointError(settings: Record<string, unknown>, payload: unknown): Promise<PointError> {
  try {
    await compile(settings).plan(input(payload), 'r1');
  } catch (err) {
    expect(err).toBeInstanceOf(PointError);
    return err as PointError;
  }
  throw new Error('expected a PointError');
}

describe('the influx action builds points', () => {
  it('takes measurement, tags, typed fields and the message time', async () => {
    const got = await points(
      { measurement: 'temperature', tags: { room: 'levels[1]', site: '"a"' }, fields: { c: 'payload.c', n: { value: 'payload.n', type: 'integer' }, ok: 'payload.ok', note: 'payload.note' } },
      { c: 20, n: 3, ok: true, note: 'fine' },
    );
    expect(got).toEqual([{ measurement: 'temperature', tags: { room: 'north', site: 'a' }, fields: { c: 20, n: 3, ok: true, note: 'fine' }, integers: ['n'], time: T }]);
  });

  it('plans without a promise when every expression is in the fast path', () => {
    const effects = compile({ measurement: 'm', fields: { c: 'payload.c' } }).plan(input({ c: 1 }), 'r1');
    expect(effects).not.toBeInstanceOf(Promise);
  });

  it('runs expressions outside the fast path through JSONata', async () => {
    const got = await points({ measurement: 'm-${$uppercase(levels[1])}', fields: { avg: '$average(payload.v)' } }, { v: [1, 2, 3] });
    expect(got).toEqual([{ measurement: 'm-NORTH', fields: { avg: 2 }, time: T }]);
  });

  it('defaults the measurement to the topic and the fields to the payload\'s scalar members', async () => {
    const got = await points({}, { c: 20.5, ok: false, note: 'x', nested: { a: 1 }, list: [1], none: null });
    expect(got).toEqual([{ measurement: 'greenhouse/north/temperature', fields: { c: 20.5, ok: false, note: 'x' }, time: T }]);
  });

  it('writes a lone number payload as field "value"', async () => {
    expect(await points({ measurement: 'm' }, 21.5)).toEqual([{ measurement: 'm', fields: { value: 21.5 }, time: T }]);
  });

  it('writes one point per element when the payload is an array, each evaluated on its element', async () => {
    const got = await points({ measurement: 'm', tags: { id: 'payload.id' }, fields: { v: 'payload.v' }, timestamp: 'payload.t' }, [
      { id: 'a', v: 1, t: T + 1 },
      { id: 'b', v: 2, t: T + 2 },
    ]);
    expect(got).toEqual([
      { measurement: 'm', tags: { id: 'a' }, fields: { v: 1 }, time: T + 1 },
      { measurement: 'm', tags: { id: 'b' }, fields: { v: 2 }, time: T + 2 },
    ]);
  });

  it('plans nothing for an empty array', async () => {
    expect(await compile({ measurement: 'm' }).plan(input([]), 'r1')).toEqual([]);
  });

  it('reads a timestamp as ms since the epoch or as an RFC 3339 date', async () => {
    expect((await points({ fields: { v: '1' }, timestamp: 'payload.t' }, { t: '2026-01-01T00:00:01.5Z' }))[0]!.time).toBe(T + 1500);
    expect((await points({ fields: { v: '1' }, timestamp: 'payload.s * 1000' }, { s: 1767225600 }))[0]!.time).toBe(T);
  });

  it('leaves out missing fields and tags, and empty tags', async () => {
    const got = await points({ measurement: 'm', tags: { a: 'payload.a', b: 'payload.b' }, fields: { x: 'payload.x', y: 'payload.y' } }, { a: '', x: 1 });
    expect(got).toEqual([{ measurement: 'm', fields: { x: 1 }, time: T }]);
  });

  it('takes all tags or all fields from one expression giving an object', async () => {
    const got = await points({ measurement: 'm', tags: 'payload.labels', fields: 'payload.values' }, { labels: { room: 'n', floor: 2 }, values: { c: 1, on: true } });
    expect(got).toEqual([{ measurement: 'm', tags: { room: 'n', floor: '2' }, fields: { c: 1, on: true }, time: T }]);
  });

  it('accepts YAML numbers and booleans as constant fields', async () => {
    expect(await points({ measurement: 'm', fields: { up: 1, ok: true } }, {})).toEqual([{ measurement: 'm', fields: { up: 1, ok: true }, time: T }]);
  });
});

describe('a point that cannot be built is a PointError naming the rule and the setting', () => {
  it.each([
    ['no field has a value', { measurement: 'm', fields: { c: 'payload.c' } }, { other: 1 }, /rule "r1": influx fields: none of c has a value/],
    ['an integer field gets a fraction', { fields: { n: { value: 'payload.n', type: 'integer' } } }, { n: 2.5 }, /influx fields\.n: must be a whole number.*2\.5/],
    ['a boolean field gets a number', { fields: { b: { value: 'payload.b', type: 'boolean' } } }, { b: 1 }, /influx fields\.b: must be true or false/],
    ['a float field gets a string', { fields: { f: { value: 'payload.f', type: 'float' } } }, { f: '1' }, /influx fields\.f: must be a number/],
    ['a field is an object', { fields: { o: 'payload.o' } }, { o: { a: 1 } }, /influx fields\.o: is an object/],
    ['a number is not finite', { fields: { x: '1/0' } }, {}, /influx fields\.x: is Infinity/],
    ['the measurement starts with _', { measurement: '${payload.m}', fields: { v: '1' } }, { m: '_x' }, /influx measurement: "_x" starts with "_"/],
    ['a tag is an object', { fields: { v: '1' }, tags: { t: 'payload' } }, { a: 1 }, /influx tags\.t: is an object/],
    ['the timestamp is not a time', { fields: { v: '1' }, timestamp: 'payload.t' }, { t: 'yesterday' }, /influx timestamp: must be ms since the epoch/],
    ['the payload has nothing to write', {}, { a: { b: 1 } }, /influx fields: the payload gave no number/],
    ['a fields expression gives an array', { fields: 'payload.v' }, { v: [1] }, /influx fields: is an array/],
  ])('when %s', async (_what, settings, payload, message) => {
    const err = await pointError(settings, payload);
    expect(err.code).toBe('SB_ERR_INFLUX_POINT');
    expect(err.ruleId).toBe('r1');
    expect(err.message).toMatch(message);
  });
});

describe('the influx action at load time', () => {
  it('refuses an output that is not defined, or is not an influx output', () => {
    expect(() => compile({ output: 'nowhere' })).toThrow(ActionConfigError);
    expect(() => compile({ output: 'cloud' })).toThrow(/is a bridge output, not an influx/);
  });

  it('points a JSONata syntax error at the setting and the offset inside it', () => {
    let err: ActionConfigError | undefined;
    try {
      compile({ fields: { c: 'payload.c +' } });
    } catch (e) {
      err = e as ActionConfigError;
    }
    expect(err).toBeInstanceOf(ActionConfigError);
    expect(err!.path).toEqual(['fields', 'c']);
    expect(err!.code).toBe('SB_RULE_EXPRESSION');
    expect(() => compile({ fields: { n: { value: '(', type: 'integer' } } })).toThrow(ActionConfigError);
    expect(() => compile({ tags: '{', fields: { v: '1' } })).toThrow(ActionConfigError);
  });

  it.each([
    [{ fields: { _x: 'payload' } }, /field key "_x" starts with "_"/],
    [{ tags: { time: 'payload' } }, /tag key "time" is reserved/],
    [{ measurement: '_m' }, /measurement "_m" starts with "_"/],
    [{ fields: { n: { value: 'payload.n', type: 'int' } } }, /./],
    [{ fields: { n: { value: 'payload.n', kind: 'integer' } } }, /./],
  ])('refuses %j in the schema', (settings, message) => {
    const r = influxActionSchema.safeParse({ output: 'tsdb', ...settings });
    expect(r.success).toBe(false);
    expect(r.error?.issues.map((i) => i.message).join('\n')).toMatch(message);
  });
});
