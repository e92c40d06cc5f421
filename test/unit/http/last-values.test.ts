import { describe, expect, it } from 'vitest';
import { LastValueCache } from '../../../src/http/last-values.js';
import { silentLogger } from '../../../src/log.js';
import type { HistoryRow } from '../../../src/storage/history.js';

function row(topic: string, time: number, payload = `{"t":${time}}`): HistoryRow {
  return { time, topic, payload: Buffer.from(payload), qos: 1, retain: false, ruleId: 'r', clientId: 'c' };
}

const big = { maxTopics: 1000, maxBytes: 1 << 30 };

describe('LastValueCache', () => {
  it('keeps the newest row of each topic; an older time does not replace a newer one', () => {
    const cache = new LastValueCache(big);
    cache.storedRows([row('a', 1), row('b', 1), row('a', 3)]);
    cache.storedRows([row('a', 2)]);
    expect(cache.get('a')!.time).toBe(3);
    expect(cache.get('b')!.time).toBe(1);
    expect(cache.size).toBe(2);
  });

  it('keeps the last row of a topic within one commit, even at the same millisecond', () => {
    const cache = new LastValueCache(big);
    cache.storedRows([row('a', 5, 'first'), row('b', 5), row('a', 5, 'second'), row('a', 5, 'third')]);
    expect(cache.get('a')!.payload.toString()).toBe('third');
    cache.storedRows([row('a', 5, 'next commit')]);
    expect(cache.get('a')!.payload.toString()).toBe('next commit');
    expect(cache.size).toBe(2);
  });

  it('matches wildcard filters, sorted by topic, with a limit and the count of all matches', () => {
    const cache = new LastValueCache(big);
    cache.storedRows([row('s/b/t', 1), row('s/a/t', 1), row('s/a/h', 1), row('$SYS/x', 1), row('s', 1)]);
    expect(cache.match('s/+/t', 10).rows.map((r) => r.topic)).toEqual(['s/a/t', 's/b/t']);
    expect(cache.match('s/#', 10).rows.map((r) => r.topic)).toEqual(['s', 's/a/h', 's/a/t', 's/b/t']);
    // [MQTT-4.7.2-1] a leading wildcard does not match $ topics.
    expect(cache.match('#', 10).matched).toBe(4);
    expect(cache.match('s/#', 2)).toMatchObject({ matched: 4, rows: [{ topic: 's' }, { topic: 's/a/h' }] });
    expect(cache.match('s/a/h', 10).rows.map((r) => r.topic)).toEqual(['s/a/h']);
    expect(cache.match('nothing', 10)).toEqual({ rows: [], matched: 0 });
  });

  it('evicts the least recently updated topic beyond maxTopics, and counts it', () => {
    const cache = new LastValueCache({ maxTopics: 2, maxBytes: 1 << 30 });
    cache.storedRows([row('a', 1), row('b', 1)]);
    cache.storedRows([row('a', 2)]); // a is now newer than b
    cache.storedRows([row('c', 3)]);
    expect(cache.get('b')).toBeUndefined();
    expect([cache.get('a')?.time, cache.get('c')?.time]).toEqual([2, 3]);
    expect(cache.stats.evicted).toBe(1);
  });

  it('evicts beyond maxBytes, counting topic, payload and a per-entry overhead', () => {
    const cache = new LastValueCache({ maxTopics: 1000, maxBytes: 2 * (160 + 1 + 100) });
    cache.storedRows([row('a', 1, 'x'.repeat(100)), row('b', 1, 'x'.repeat(100))]);
    expect(cache.size).toBe(2);
    cache.storedRows([row('c', 1, 'x'.repeat(100))]);
    expect(cache.size).toBe(2);
    expect(cache.get('a')).toBeUndefined();
    expect(cache.stats.evicted).toBe(1);
    expect(cache.heldBytes).toBe(2 * 261);
  });

  it('copies a payload that is a slice of a shared buffer, so it does not keep the whole buffer alive', () => {
    const cache = new LastValueCache(big);
    const shared = Buffer.from('0123456789');
    const slice = shared.subarray(2, 5);
    cache.storedRows([{ ...row('a', 1), payload: slice }]);
    const kept = cache.get('a')!.payload;
    expect(kept.toString()).toBe('234');
    expect(kept.buffer).not.toBe(shared.buffer);
    expect(kept.buffer.byteLength).toBe(3);
  });

  it('is seeded from the newest stored row per topic, never over a newer live value, and stops when full', async () => {
    const stored = [row('a', 5), row('b', 6), row('c', 7), row('d', 8)];
    const source = {
      calls: 0,
      latestPerTopic(after: string, limit: number) {
        this.calls++;
        return stored.filter((r) => r.topic > after).slice(0, limit);
      },
    };
    const cache = new LastValueCache({ maxTopics: 3, maxBytes: 1 << 30 });
    cache.storedRows([row('b', 9)]);
    expect(await cache.seed(source, silentLogger())).toBe(2);
    expect(cache.get('b')!.time).toBe(9);
    expect(cache.get('a')!.time).toBe(5);
    expect(cache.get('c')!.time).toBe(7);
    expect(cache.get('d')).toBeUndefined();
    expect(cache.stats.evicted).toBe(0);
  });

  it('logs a storage failure while seeding and keeps serving what arrives', async () => {
    const cache = new LastValueCache(big);
    const failing = {
      latestPerTopic(): never {
        throw new Error('disk on fire');
      },
    };
    expect(await cache.seed(failing, silentLogger())).toBe(0);
    cache.storedRows([row('a', 1)]);
    expect(cache.size).toBe(1);
  });

  it('refuses limits that are not positive', () => {
    expect(() => new LastValueCache({ maxTopics: 0, maxBytes: 1 })).toThrow(RangeError);
  });
});
