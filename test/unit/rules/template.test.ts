import { describe, it, expect } from 'vitest';
import { compileTemplate } from '../../../src/rules/template.js';
import { DEFAULT_EXPRESSION_LIMITS, ExpressionError } from '../../../src/rules/expression.js';

const doc = {
  topic: 'greenhouse/north/temperature',
  levels: ['greenhouse', 'north', 'temperature'],
  payload: { room: 'north', c: 20, f: 68, ok: true, none: null, tags: ['a', 'b'], meta: { unit: 'C' }, 'x}y': 'braced', empty: '' },
  qos: 1,
};

function compileError(text: string): ExpressionError {
  try {
    compileTemplate(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ExpressionError);
    return err as ExpressionError;
  }
  throw new Error(`expected ${JSON.stringify(text)} not to compile`);
}

describe('compileTemplate', () => {
  it('renders expressions against the message', async () => {
    expect(await compileTemplate('greenhouse/${payload.room}/fahrenheit').render(doc)).toBe('greenhouse/north/fahrenheit');
    expect(await compileTemplate('site-a/${topic}').render(doc)).toBe('site-a/greenhouse/north/temperature');
    expect(await compileTemplate('${levels[0]}-${levels[1]}').render(doc)).toBe('greenhouse-north');
  });

  it('renders strings as they are, numbers and booleans via String, null, objects and arrays as JSON', async () => {
    expect(await compileTemplate('${payload.c}|${payload.c / 3}|${payload.ok}|${payload.none}').render(doc)).toBe(`20|${20 / 3}|true|null`);
    expect(await compileTemplate('${payload.meta}|${payload.tags}|${payload.tags[0]}').render(doc)).toBe('{"unit":"C"}|["a","b"]|a');
    expect(await compileTemplate('${payload.tags[[0..1]]}').render(doc)).toBe('["a","b"]');
    expect(await compileTemplate('<${payload.empty}>').render(doc)).toBe('<>');
  });

  it('refuses to render when an expression yields no value, naming the expression', async () => {
    const template = compileTemplate('greenhouse/${payload.rooom}/fahrenheit');
    const err = await template.render(doc).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExpressionError);
    expect((err as ExpressionError).code).toBe('SB_EXPR_EVAL');
    expect((err as ExpressionError).message).toContain('${payload.rooom}');
    expect((err as ExpressionError).message).toContain('produced no value');
  });

  it('passes on evaluation errors of its expressions, with the limits it was compiled with', async () => {
    const bad = await compileTemplate('x/${$number("north")}').render(doc).catch((e: unknown) => e);
    expect((bad as ExpressionError).code).toBe('SB_EXPR_EVAL');
    expect((bad as ExpressionError).jsonataCode).toBe('D3030');
    const long = await compileTemplate('x/${[1..10]}', { ...DEFAULT_EXPRESSION_LIMITS, maxSequence: 5 }).render(doc).catch((e: unknown) => e);
    expect((long as ExpressionError).code).toBe('SB_EXPR_SEQUENCE');
  });

  it('renders a constant template without JSONata, returning the same resolved promise every time', async () => {
    const template = compileTemplate('greenhouse/all/fahrenheit');
    expect(template.isConstant).toBe(true);
    expect(template.parts).toEqual([{ text: 'greenhouse/all/fahrenheit' }]);
    const first = template.render(doc);
    expect(template.render({})).toBe(first);
    expect(await first).toBe('greenhouse/all/fahrenheit');
    expect(compileTemplate('greenhouse/${payload.room}').isConstant).toBe(false);
  });

  it('treats the empty template as a constant with no parts', async () => {
    const template = compileTemplate('');
    expect(template.isConstant).toBe(true);
    expect(template.parts).toEqual([]);
    expect(await template.render(doc)).toBe('');
  });

  it('lists literal text and expression sources as parts, merging text around an escaped $${', () => {
    expect(compileTemplate('a/${payload.room}/b').parts).toEqual([{ text: 'a/' }, { expression: 'payload.room' }, { text: '/b' }]);
    expect(compileTemplate('${topic}${qos}').parts).toEqual([{ expression: 'topic' }, { expression: 'qos' }]);
    expect(compileTemplate('a$${b}/${ qos }').parts).toEqual([{ text: 'a${b}/' }, { expression: ' qos ' }]);
  });

  it('reads $${ as a literal ${', async () => {
    const template = compileTemplate('cost $${x} in ${payload.room}, $$ and $ stay');
    expect(await template.render(doc)).toBe('cost ${x} in north, $$ and $ stay');
    expect(compileTemplate('$${payload.room}').isConstant).toBe(true);
  });

  it.each([
    ['${ {"a": "}"}.a }', '}'],
    ['${ \'a}b\' & \'c\\"}\' }', 'a}bc"}'],
    ['${ "say \\"}\\"" }', 'say "}"'],
    ['${ payload.`x}y` }', 'braced'],
    ['${ /* } */ payload.room }', 'north'],
    ['${ {"k": {"n": payload.c}}.k.n }', '20'],
  ])('does not end the expression at a brace inside a literal or nested object: %s', async (text, rendered) => {
    expect(await compileTemplate(text).render(doc)).toBe(rendered);
  });

  it.each([
    // template, offset in the whole template, what the message says
    ['greenhouse/${payload.room', 11, 'never closed'],
    ['greenhouse/${payload.room/fahrenheit', 11, 'never closed'],
    ['a/${ "unterminated }', 2, 'never closed'],
    ['a/${ `name }', 2, 'never closed'],
    ['a/${}/b', 2, 'no expression inside'],
    ['a/${   }/b', 2, 'no expression inside'],
    ['greenhouse/${payload.room >}/f', 27, 'Unexpected end of expression'],
    ['x/${payload..room}', 11, 'near ".."'],
    ['x/${ a b }', 7, 'near "b"'],
  ])('refuses the bad template %j with SB_EXPR_SYNTAX at offset %i', (text, position, says) => {
    const err = compileError(text);
    expect(err.code).toBe('SB_EXPR_SYNTAX');
    expect(err.position).toBe(position);
    expect(err.message).toContain(says);
    expect(err.message).toContain(JSON.stringify(text));
  });
});
