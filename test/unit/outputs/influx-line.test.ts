import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseRetryAfter } from '../../../src/outputs/connector.js';
import { influxSchema } from '../../../src/outputs/influx.js';
import { malformedPoints, timestampText, toLine } from '../../../src/outputs/influx-line.js';
import { POINT_ERROR_CODE } from '../../../src/outputs/influx-points.js';

const T = Date.UTC(2026, 0, 1, 12, 0, 0, 123);

describe('line protocol of planned points', () => {
  it('writes measurement, sorted tags, typed fields and the time', () => {
    const line = toLine({ measurement: 'temperature', tags: { site: 'a', room: 'north' }, fields: { c: 20, n: 3, ok: true, note: 'hi' }, integers: ['n'], time: T }, 'ms');
    expect(line).toBe(`temperature,room=north,site=a c=20,n=3i,ok=true,note="hi" ${T}`);
  });

  it('writes a number as a float unless it is listed as an integer', () => {
    expect(toLine({ measurement: 'm', fields: { a: 20, b: 20.5, c: -1e21 }, time: 0 }, 'ms')).toBe('m a=20,b=20.5,c=-1e+21 0');
    expect(toLine({ measurement: 'm', fields: { a: 20 }, integers: ['a'], time: 0 }, 'ms')).toBe('m a=20i 0');
  });

  it('escapes what line protocol needs escaped, and leaves the rest as it is', () => {
    const line = toLine({ measurement: 'a room,b', tags: { 'k =,': 'v al=,' }, fields: { 'f k': 'say "hi" \\ bye' }, time: 1 }, 'ms');
    expect(line).toBe('a\\ room\\,b,k\\ \\=\\,=v\\ al\\=\\, f\\ k="say \\"hi\\" \\\\ bye" 1');
    expect(toLine({ measurement: 'température/ü', tags: { t: 'grüß' }, fields: { v: 1 }, time: 1 }, 'ms')).toBe('température/ü,t=grüß v=1 1');
  });

  it.each([
    ['s', '1767268800'],
    ['ms', String(T)],
    ['us', `${T}000`],
    ['ns', `${T}000000`],
  ] as const)('converts the time to precision %s', (precision, expected) => {
    expect(timestampText(T, precision)).toBe(expected);
  });

  it('keeps sub-millisecond time at us and ns (as far as a double carries it), and rounds a hair below a whole ms to it', () => {
    // A double near 1.7e12 ms resolves about 0.25 µs, so only such fractions survive exactly.
    expect(timestampText(T + 0.456789, 'us')).toBe(`${T}457`);
    expect(timestampText(T + 0.25, 'ns')).toBe(`${T}250000`);
    expect(timestampText(1700000000.123 * 1000, 'ms')).toBe('1700000000123');
    expect(timestampText(-1.5, 'ns')).toBe('-1500000');
    expect(timestampText(-1500, 's')).toBe('-2');
  });
});

describe('points read back from the outbox', () => {
  it('accepts well-formed points', () => {
    expect(malformedPoints([{ measurement: 'm', fields: { v: 1 }, time: 1 }])).toBeUndefined();
  });

  it.each([
    [undefined, /missing/],
    [{ measurement: 'm' }, /not a list/],
    [[null], /point 0 is not an object/],
    [[{ fields: { v: 1 }, time: 1 }], /no measurement/],
    [[{ measurement: 'm', fields: {}, time: 1 }], /no fields/],
    [[{ measurement: 'm', fields: { v: 1 } }], /no valid time/],
    [[{ measurement: 'm', fields: { v: { x: 1 } }, time: 1 }], /field "v"/],
  ])('says what is wrong with %j', (data, expected) => {
    expect(malformedPoints(data)).toMatch(expected);
  });
});

describe('influx output settings', () => {
  it('has finite defaults: ms precision, 5000 points per request, 1 s flush, 10 s timeout', () => {
    expect(influxSchema.parse({ url: 'http://127.0.0.1:8428' })).toMatchObject({ precision: 'ms', batchSize: 5000, flushInterval: 1000, timeoutMs: 10_000, gzip: true });
    expect(influxSchema.parse({ url: 'https://db.example.com/prefix', flushInterval: '250ms' }).flushInterval).toBe(250);
  });

  it.each([
    [{ url: 'localhost:8086' }, /http:\/\/ or https:\/\//],
    [{ url: 'http://x:8086?db=a' }, /http:\/\/ or https:\/\//],
    [{ url: 'http://x:8086/api/v2/write' }, /without \/api\/v2/],
    [{ url: 'http://x', precision: 'm' }, /ns, us, ms, s/],
    [{ url: 'http://x', flushInterval: 'soon' }, /duration/],
    [{ url: 'http://x', batchSize: 0 }, /./],
    [{ url: 'http://x', extra: 1 }, /extra/],
  ])('refuses %j', (settings, message) => {
    const r = influxSchema.safeParse(settings);
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toMatch(message);
  });
});

describe('Retry-After', () => {
  it('reads delta-seconds and HTTP dates, and ignores what it cannot read', () => {
    const now = Date.UTC(2026, 0, 1);
    expect(parseRetryAfter('3', now)).toBe(3000);
    expect(parseRetryAfter(new Date(now + 5000).toUTCString(), now)).toBe(5000);
    expect(parseRetryAfter(new Date(now - 5000).toUTCString(), now)).toBe(0);
    expect(parseRetryAfter(undefined, now)).toBeUndefined();
    expect(parseRetryAfter('soon', now)).toBeUndefined();
  });
});

describe('the point error code', () => {
  it('is documented in README.md', () => {
    const readme = readFileSync(new URL('../../../README.md', import.meta.url), 'utf8');
    expect(readme).toMatch(new RegExp(`\\b${POINT_ERROR_CODE}\\b`));
  });
});
