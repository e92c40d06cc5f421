import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { TopicTrie } from '../../../src/topics/trie.js';

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

/** Every (filter, value) pair visited, as sorted "filter -> value" strings, duplicates kept. */
function visits<T>(trie: TopicTrie<T>, topic: string): string[] {
  const out: string[] = [];
  trie.match(topic, (value, filter) => out.push(`${filter} -> ${String(value)}`));
  return out.sort();
}

function trieOf(filters: string[]): TopicTrie<string> {
  const trie = new TopicTrie<string>();
  for (const f of filters) trie.add(f, 'v');
  return trie;
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

const SPEC_FILTERS = [
  'sport/tennis/player1/#',
  'sport/#',
  'sport/tennis/+',
  'sport/+',
  '+/+',
  '/+',
  '+',
  '#',
  '$SYS/#',
  '$SYS/monitor/+',
  '+/monitor/Clients',
  'sport/tennis/player1',
];

describe('TopicTrie', () => {
  it.each([
    ['sport/tennis/player1', ['#', 'sport/#', 'sport/tennis/+', 'sport/tennis/player1', 'sport/tennis/player1/#']],
    ['sport/tennis/player1/ranking', ['#', 'sport/#', 'sport/tennis/player1/#']],
    ['sport', ['#', '+', 'sport/#']],
    ['sport/', ['#', '+/+', 'sport/#', 'sport/+']],
    ['/finance', ['#', '+/+', '/+']],
    ['$SYS/monitor/Clients', ['$SYS/#', '$SYS/monitor/+']],
    ['$SYS', ['$SYS/#']],
    ['a/monitor/Clients', ['#', '+/monitor/Clients']],
  ])('visits exactly the spec filters that match the topic %j', (topic, expected) => {
    const trie = trieOf(SPEC_FILTERS);
    expect(visits(trie, topic)).toEqual(expected.map((f) => `${f} -> v`).sort());
  });

  it('stores the same value under the same filter once', () => {
    const trie = new TopicTrie<string>();
    trie.add('a/+', 'client1');
    trie.add('a/+', 'client1');
    expect(trie.size).toBe(1);
    expect(visits(trie, 'a/b')).toEqual(['a/+ -> client1']);
  });

  it('visits a value once per matching filter it is stored under, leaving dedupe to the caller', () => {
    const trie = new TopicTrie<string>();
    trie.add('a/+', 'client1');
    trie.add('a/#', 'client1');
    trie.add('a/b', 'client1');
    trie.add('a/b', 'client2');
    expect(trie.size).toBe(4);
    expect(visits(trie, 'a/b')).toEqual(['a/# -> client1', 'a/+ -> client1', 'a/b -> client1', 'a/b -> client2']);
  });

  it('does not match a $ topic through a filter whose first level is a wildcard [MQTT-4.7.2-1]', () => {
    const trie = trieOf(['#', '+', '+/#', '+/monitor/Clients', '$SYS/#']);
    expect(visits(trie, '$SYS/monitor/Clients')).toEqual(['$SYS/# -> v']);
    expect(visits(trie, '$SYS')).toEqual(['$SYS/# -> v']);
    // Only the first level is special: '$' further down is an ordinary character.
    expect(visits(trie, 'a/$SYS')).toEqual(['# -> v', '+/# -> v']);
  });

  it('counts empty levels as levels', () => {
    const trie = trieOf(['a//b', 'a/+/b', '/', '+/+', 'a/b']);
    expect(visits(trie, 'a//b')).toEqual(['a/+/b -> v', 'a//b -> v']);
    expect(visits(trie, '/')).toEqual(['+/+ -> v', '/ -> v']);
    expect(visits(trie, 'a/b')).toEqual(['+/+ -> v', 'a/b -> v']);
  });

  it('deletes a pair and reports whether it was stored', () => {
    const trie = new TopicTrie<string>();
    trie.add('a/+', 'client1');
    trie.add('a/+', 'client2');
    expect(trie.delete('a/+', 'client3')).toBe(false);
    expect(trie.delete('a/b', 'client1')).toBe(false);
    expect(trie.delete('a/+/c', 'client1')).toBe(false);
    expect(trie.delete('a', 'client1')).toBe(false);
    expect(trie.delete('a/+', 'client1')).toBe(true);
    expect(trie.delete('a/+', 'client1')).toBe(false);
    expect(trie.size).toBe(1);
    expect(visits(trie, 'a/x')).toEqual(['a/+ -> client2']);
  });

  it('keeps longer and shorter filters on the same path when one of them is deleted', () => {
    const trie = trieOf(['a', 'a/b', 'a/b/c', 'a/#']);
    trie.delete('a/b', 'v');
    expect(visits(trie, 'a/b/c')).toEqual(['a/# -> v', 'a/b/c -> v']);
    expect(visits(trie, 'a')).toEqual(['a -> v', 'a/# -> v']);
    trie.delete('a/#', 'v');
    trie.delete('a/b/c', 'v');
    expect(visits(trie, 'a')).toEqual(['a -> v']);
    expect(visits(trie, 'a/b/c')).toEqual([]);
  });

  it('prunes every node once all pairs are deleted, so churn does not grow memory', () => {
    const trie = new TopicTrie<number>();
    const filters = ['a/b/c', 'a/+/c', 'a/#', '#', '+', '/', 'a//b', '$SYS/+/x', 'a/b'];
    for (let round = 0; round < 100; round++) {
      filters.forEach((f, i) => trie.add(f, round * 100 + i));
      filters.forEach((f, i) => expect(trie.delete(f, round * 100 + i)).toBe(true));
      expect(trie.nodeCount).toBe(1);
    }
    expect(trie.size).toBe(0);
    expect([...trie.filters()]).toEqual([]);
  });

  it('lists each filter that holds at least one value', () => {
    const trie = new TopicTrie<number>();
    trie.add('a/+', 1);
    trie.add('a/+', 2);
    trie.add('#', 1);
    trie.add('a/b/c', 1);
    trie.delete('a/b/c', 1);
    expect([...trie.filters()].sort()).toEqual(['#', 'a/+']);
  });

  it('finds the right matches among 10,000 distinct filters that do not match', () => {
    const trie = new TopicTrie<number>();
    const all: [string, number][] = [];
    for (let i = 0; i < 10_000; i++) {
      const n = `n${i}`;
      const shapes = [`device/${n}/telemetry`, `device/+/status/${n}`, `+/${n}/#`, `${n}/#`, `+/+/telemetry/${n}`];
      all.push([shapes[i % shapes.length], i]);
    }
    all.push(['device/42/telemetry', -1], ['device/+/telemetry', -2], ['#', -3], ['device/#', -4], ['$SYS/#', -5]);
    for (const [filter, value] of all) trie.add(filter, value);
    expect(trie.size).toBe(10_005);

    expect(visits(trie, 'device/42/telemetry')).toEqual(
      ['# -> -3', 'device/# -> -4', 'device/+/telemetry -> -2', 'device/42/telemetry -> -1'].sort(),
    );
    // One of the 10,000 ('+/n17/#') does match this one.
    expect(visits(trie, 'device/n17/telemetry')).toEqual(
      ['# -> -3', '+/n17/# -> 17', 'device/# -> -4', 'device/+/telemetry -> -2'].sort(),
    );
    for (const topic of ['device/42/telemetry', 'device/n17/telemetry', 'x/n3/status/n3', '$SYS/n3', 'n9998/a']) {
      const expected = all.filter(([f]) => referenceMatch(f, topic)).map(([f, v]) => `${f} -> ${v}`);
      expect(visits(trie, topic)).toEqual(expected.sort());
    }
  });

  it('matches, adds and deletes filters tens of thousands of levels deep without exhausting the stack', () => {
    const depth = 30_000;
    const topic = Array.from({ length: depth }, (_, i) => `l${i % 7}`).join('/');
    const plusses = Array(depth).fill('+').join('/');
    const trie = new TopicTrie<string>();
    trie.add(topic, 'exact');
    trie.add(plusses, 'plus');
    expect(visits(trie, topic)).toEqual([`${plusses} -> plus`, `${topic} -> exact`].sort());
    expect([...trie.filters()]).toHaveLength(2);
    expect(trie.delete(plusses, 'plus')).toBe(true);
    expect(trie.delete(topic, 'exact')).toBe(true);
    expect(trie.nodeCount).toBe(1);
  });

  it('agrees with a level-by-level reference implementation on generated filters and topics', () => {
    let matched = 0;
    const numRuns = 1_000;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(filterArb, fc.integer({ min: 0, max: 3 })), { maxLength: 30 }),
        fc.array(topicArb, { minLength: 1, maxLength: 5 }),
        (pairs, topics) => {
          const trie = new TopicTrie<number>();
          for (const [filter, value] of pairs) trie.add(filter, value);
          const stored = [...new Set(pairs.map(([f, v]) => `${f} -> ${v}`))];
          expect(trie.size).toBe(stored.length);
          for (const topic of topics) {
            const expected = [...new Set(pairs.filter(([f]) => referenceMatch(f, topic)).map(([f, v]) => `${f} -> ${v}`))];
            matched += expected.length;
            expect(visits(trie, topic)).toEqual(expected.sort());
          }
        },
      ),
      { numRuns },
    );
    // The alphabet is small so that matches are common; otherwise the property is vacuous.
    expect(matched).toBeGreaterThan(numRuns);
  });

  it('agrees with the reference after a generated sequence of adds and deletes, and prunes fully at the end', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), filterArb, fc.integer({ min: 0, max: 2 })), { maxLength: 60 }),
        topicArb,
        (ops, topic) => {
          const trie = new TopicTrie<number>();
          const live = new Set<string>();
          const liveKey = (f: string, v: number) => `${f} -> ${v}`;
          for (const [isAdd, filter, value] of ops) {
            const key = liveKey(filter, value);
            if (isAdd) {
              trie.add(filter, value);
              live.add(key);
            } else {
              expect(trie.delete(filter, value)).toBe(live.delete(key));
            }
          }
          expect(trie.size).toBe(live.size);
          const expected = [...live].filter((k) => referenceMatch(k.slice(0, k.indexOf(' -> ')), topic));
          expect(visits(trie, topic)).toEqual(expected.sort());
          for (const [, filter, value] of ops) trie.delete(filter, value);
          expect(trie.size).toBe(0);
          expect(trie.nodeCount).toBe(1);
        },
      ),
      { numRuns: 1_000 },
    );
  });
});
