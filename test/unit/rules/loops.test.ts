import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { filtersOverlap, templateToFilter } from '../../../src/rules/loops.js';
import { compileTemplate } from '../../../src/rules/template.js';
import { matchesFilter } from '../../../src/topics/match.js';

const filterOf = (template: string) => templateToFilter(compileTemplate(template));

describe('templateToFilter', () => {
  it.each([
    ['greenhouse/${payload.room}/fahrenheit', 'greenhouse/+/fahrenheit'],
    ['out/${levels[1]}/temp', 'out/+/temp'],
    ['site-a/${topic}', 'site-a/#'],
    ['${topic}', '#'],
    ['${topic}/copy', '#'],
    ['a/room-${payload.n}-x/b', 'a/+/b'],
    ['a/${payload.site}${payload.room}/b', 'a/+/b'],
    ['${payload.site}/${payload.room}', '+/+'],
    ['a/${payload.x}/', 'a/+/'],
    ['fixed/topic/name', 'fixed/topic/name'],
    ['cost/$${x}', 'cost/${x}'],
    ['a/${payload.topic}/b', 'a/#'],
    ['a/${properties.responseTopic}', 'a/#'],
    ['a/${$substringAfter(topic, "/")}', 'a/#'],
    ['a/${$join(levels, "/")}/b', 'a/#'],
    ['a/${$lookup($, "topic")}', 'a/#'],
    ['a/${$$.payload.room}', 'a/#'],
    ['a/${*.room}', 'a/#'],
    ['a/${**.room}', 'a/#'],
    ['a/${$eval(payload.expr)}', 'a/#'],
    ['a/${($t := topic; $uppercase($t))}', 'a/#'],
    ['a/${$uppercase(levels[1])}/${payload.n * 2}', 'a/+/+'],
  ])('%s covers its topics with %s', (template, filter) => {
    expect(filterOf(template)).toBe(filter);
  });

  it('tells a republish topic apart from the filter of the rule that feeds it', () => {
    const target = filterOf('greenhouse/${payload.room}/fahrenheit');
    expect(filtersOverlap('greenhouse/+/temperature', target)).toBe(false);
    expect(filtersOverlap('greenhouse/#', target)).toBe(true);
    expect(filtersOverlap('site-a/x', filterOf('site-a/${topic}'))).toBe(true);
    expect(filtersOverlap('sensors/+/temp', filterOf('out/${levels[1]}/temp'))).toBe(false);
    expect(filtersOverlap('out/+/temp', filterOf('out/${levels[1]}/temp'))).toBe(true);
  });

  const level = fc.string({ minLength: 1, maxLength: 6 }).filter((s) => !/[/+#\u0000]/.test(s));
  const topic = fc.array(fc.oneof(level, fc.constant('')), { minLength: 1, maxLength: 5 }).map((ls) => ls.join('/')).filter((t) => t !== '');

  // A room starting with '$' is left out: a rule cannot publish to a '$' topic (see templateToFilter).
  const room = level.filter((s) => !s.startsWith('$'));

  it('returns a filter that every rendered topic matches', async () => {
    const templates = ['greenhouse/${payload.room}/fahrenheit', 'site-a/${topic}', 'out/${levels[1]}/temp', 'x/${payload.room}-${qos}/${topic}', '${payload.room}/${qos}'];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...templates), topic, room, async (text, t, r) => {
        const template = compileTemplate(text);
        const doc = { topic: t, levels: t.split('/'), payload: { room: r }, qos: 1 };
        const rendered = await template.render(doc).catch(() => undefined); // levels[1] may not exist
        if (rendered !== undefined) expect(matchesFilter(templateToFilter(template), rendered), `${rendered} vs ${templateToFilter(template)}`).toBe(true);
      }),
    );
  });
});

describe('filtersOverlap', () => {
  it.each([
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a', false],
    ['a/#', 'a', true],
    ['a/#', 'a/b/c', true],
    ['a/+/c', 'a/b/+', true],
    ['+/+', '+', false],
    ['/+', 'a', false],
    ['+', '/', false],
    ['#', '+', true],
    ['#', '$SYS/x', false],
    ['+/x', '$SYS/x', false],
    ['+/#', '$SYS', false],
    ['$SYS/#', '$SYS/+', true],
    ['+', '#', true],
    ['+', '/#', false], // only the empty topic, which MQTT does not allow
    ['+/#', '/#', true],
    ['/#', '/', true],
  ])('%s and %s overlap: %s', (a, b, expected) => {
    expect(filtersOverlap(a, b)).toBe(expected);
    expect(filtersOverlap(b, a)).toBe(expected);
  });

  // Small alphabets make collisions likely; 'c' stands for "any other level" in witnesses.
  const filterLevel = fc.constantFrom('', '$SYS', 'a', 'b', '+');
  const filterArb = fc
    .tuple(fc.array(filterLevel, { maxLength: 5 }), fc.boolean())
    .map(([levels, hash]) => (hash ? [...levels, '#'] : levels).join('/'))
    .filter((f) => f !== '');
  const topicArb = fc
    .array(fc.constantFrom('', '$SYS', 'a', 'b', 'c'), { minLength: 1, maxLength: 6 })
    .map((levels) => levels.join('/'))
    .filter((t) => t !== '');

  it('is true whenever a topic matches both filters, and symmetric', () => {
    fc.assert(
      fc.property(filterArb, filterArb, topicArb, (a, b, t) => {
        if (matchesFilter(a, t) && matchesFilter(b, t)) expect(filtersOverlap(a, b)).toBe(true);
        expect(filtersOverlap(a, b)).toBe(filtersOverlap(b, a));
      }),
      { numRuns: 2000 },
    );
  });

  // Every topic of at most 5 levels over the alphabet plus 'c': enough to witness any overlap of
  // two generated filters (at most 5 levels before '#').
  const allTopics: string[] = [];
  const grow = (prefix: string[]): void => {
    if (prefix.length > 0 && prefix.join('/') !== '') allTopics.push(prefix.join('/'));
    if (prefix.length < 5) for (const l of ['', '$SYS', 'a', 'b', 'c']) grow([...prefix, l]);
  };
  grow([]);

  it('is true only when some topic matches both filters', () => {
    fc.assert(
      fc.property(filterArb, filterArb, (a, b) => {
        const witnessed = allTopics.some((t) => matchesFilter(a, t) && matchesFilter(b, t));
        expect(filtersOverlap(a, b)).toBe(witnessed);
      }),
      { numRuns: 1000 },
    );
  });
});
