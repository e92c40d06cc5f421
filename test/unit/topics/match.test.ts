import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { matchesFilter } from '../../../src/topics/match.js';
import { validateTopicFilter, validateTopicName } from '../../../src/topics/validate.js';

/** Deliberately simple reference: split both, then compare level by level, recursively. */
function referenceMatch(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  if (t[0].startsWith('$') && (f[0] === '+' || f[0] === '#')) return false;
  const rec = (fi: number, ti: number): boolean => {
    if (fi === f.length) return ti === t.length;
    if (f[fi] === '#') return true;
    if (ti === t.length) return false;
    return (f[fi] === '+' || f[fi] === t[ti]) && rec(fi + 1, ti + 1);
  };
  return rec(0, 0);
}

const topicLevel = fc.constantFrom('', '$SYS', 'a', 'b');
const filterLevel = fc.constantFrom('', '$SYS', 'a', 'b', '+');
const topicArb = fc
  .array(topicLevel, { minLength: 1, maxLength: 5 })
  .map((levels) => levels.join('/'))
  .filter((t) => t !== '');
const filterArb = fc
  .tuple(fc.array(filterLevel, { maxLength: 5 }), fc.boolean())
  .map(([levels, hash]) => (hash ? [...levels, '#'] : levels).join('/'))
  .filter((f) => f !== '');

describe('matchesFilter', () => {
  // Examples from MQTT 5.0 sections 4.7.1 and 4.7.2 (and 3.1.1 section 4.7).
  it.each([
    ['sport/tennis/player1/#', 'sport/tennis/player1'],
    ['sport/tennis/player1/#', 'sport/tennis/player1/ranking'],
    ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon'],
    ['sport/#', 'sport'],
    ['#', 'sport/tennis/player1'],
    ['#', '/'],
    ['sport/tennis/+', 'sport/tennis/player1'],
    ['sport/tennis/+', 'sport/tennis/player2'],
    ['sport/+', 'sport/'],
    ['+/tennis/#', 'sport/tennis/player1/ranking'],
    ['sport/+/player1', 'sport/tennis/player1'],
    ['+/+', '/finance'],
    ['/+', '/finance'],
    ['$SYS/#', '$SYS/monitor/Clients'],
    ['$SYS/monitor/+', '$SYS/monitor/Clients'],
    ['$SYS/#', '$SYS'],
    ['sport/tennis player1', 'sport/tennis player1'],
    ['/', '/'],
    ['a//b', 'a//b'],
    ['a/+/b', 'a//b'],
    ['+/#', 'a'],
    ['a/#', 'a/'],
    ['a/$SYS/+', 'a/$SYS/b'],
    ['+/$SYS', 'a/$SYS'],
  ])('the filter %j matches the topic %j', (filter, topic) => {
    expect(matchesFilter(filter, topic)).toBe(true);
  });

  it.each([
    ['sport/tennis/+', 'sport/tennis/player1/ranking'],
    ['sport/+', 'sport'],
    ['+', '/finance'],
    ['sport/tennis/player1/#', 'sport/tennis'],
    ['sport/tennis/player1/#', 'sport/tennis/player10'],
    ['sport/tennis/player1', 'sport/tennis/player1/ranking'],
    ['sport/tennis/player1/ranking', 'sport/tennis/player1'],
    ['ACCOUNTS', 'Accounts'],
    ['/+', 'finance'],
    ['a/b', 'a//b'],
    ['a//b', 'a/b'],
    ['a/+', 'a'],
    ['a/b/#', 'a'],
    ['a/', 'a'],
    ['a', 'a/'],
    ['ab', 'a'],
    ['a', 'ab'],
  ])('the filter %j does not match the topic %j', (filter, topic) => {
    expect(matchesFilter(filter, topic)).toBe(false);
  });

  it.each([
    ['#', '$SYS/monitor/Clients'],
    ['#', '$SYS'],
    ['+/monitor/Clients', '$SYS/monitor/Clients'],
    ['+', '$SYS'],
    ['+/#', '$SYS/a'],
    ['+/+', '$/a'],
  ])('the leading-wildcard filter %j does not match the $ topic %j [MQTT-4.7.2-1]', (filter, topic) => {
    expect(matchesFilter(filter, topic)).toBe(false);
  });

  it('compares wildcard characters that are not whole levels literally instead of throwing', () => {
    expect(matchesFilter('a+', 'a+')).toBe(true);
    expect(matchesFilter('a+', 'ab')).toBe(false);
    expect(matchesFilter('a/#b', 'a/#b')).toBe(true);
    expect(matchesFilter('a/#b', 'a/x')).toBe(false);
    expect(matchesFilter('#/a', 'x/y')).toBe(false);
  });

  it('matches topics and filters thousands of levels deep', () => {
    const depth = 30_000;
    const topic = Array.from({ length: depth }, (_, i) => `l${i % 7}`).join('/');
    expect(matchesFilter(topic, topic)).toBe(true);
    expect(matchesFilter(Array(depth).fill('+').join('/'), topic)).toBe(true);
    expect(matchesFilter(Array(depth - 1).fill('+').join('/'), topic)).toBe(false);
    expect(matchesFilter(`${Array(depth - 1).fill('+').join('/')}/#`, topic)).toBe(true);
  });

  it('the generators yield valid topics and filters', () => {
    fc.assert(fc.property(topicArb, (t) => validateTopicName(t) === undefined));
    fc.assert(fc.property(filterArb, (f) => validateTopicFilter(f) === undefined));
  });

  it('agrees with a level-by-level reference implementation on generated topics and filters', () => {
    let matched = 0;
    const numRuns = 5_000;
    fc.assert(
      fc.property(filterArb, topicArb, (filter, topic) => {
        const expected = referenceMatch(filter, topic);
        if (expected) matched++;
        expect(matchesFilter(filter, topic)).toBe(expected);
      }),
      { numRuns },
    );
    // The alphabet is small so that a fair share of pairs match; otherwise the property is vacuous.
    expect(matched).toBeGreaterThan(numRuns / 20);
  });

  it('matches every valid topic when the topic itself is used as the filter', () => {
    fc.assert(fc.property(topicArb, (topic) => matchesFilter(topic, topic)));
  });
});
