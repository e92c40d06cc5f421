import { describe, expect, it } from 'vitest';
import { parseTime } from '../../../src/http/time.js';

const NOW = Date.UTC(2026, 10, 25, 18, 0, 0);

describe('parseTime', () => {
  it('reads now and times ago, with or without now', () => {
    expect(parseTime('now', NOW)).toBe(NOW);
    expect(parseTime(' NOW ', NOW)).toBe(NOW);
    expect(parseTime('-15m', NOW)).toBe(NOW - 15 * 60_000);
    expect(parseTime('now-1h', NOW)).toBe(NOW - 3_600_000);
    expect(parseTime('now-500ms', NOW)).toBe(NOW - 500);
    expect(parseTime('-1.5h', NOW)).toBe(NOW - 5_400_000);
    expect(parseTime('-7d', NOW)).toBe(NOW - 7 * 86_400_000);
    expect(parseTime('-1w', NOW)).toBe(NOW - 7 * 86_400_000);
  });

  it('reads a whole number as ms since the epoch', () => {
    expect(parseTime('0', NOW)).toBe(0);
    expect(parseTime('1764093600000', NOW)).toBe(1764093600000);
    expect(parseTime('8640000000000001', NOW)).toEqual({ error: expect.stringMatching(/past the year 275760/) });
  });

  it('reads ISO 8601 dates as UTC midnight and date-times with Z or an offset', () => {
    expect(parseTime('2026-11-25', NOW)).toBe(Date.UTC(2026, 10, 25));
    expect(parseTime('2026-11-25T18:00:00Z', NOW)).toBe(NOW);
    expect(parseTime('2026-11-25t18:00z', NOW)).toBe(NOW);
    expect(parseTime('2026-11-25T18:00:00.250Z', NOW)).toBe(NOW + 250);
    expect(parseTime('2026-11-25T19:00:00+01:00', NOW)).toBe(NOW);
    expect(parseTime('2026-11-25T19:00:00+0100', NOW)).toBe(NOW);
    expect(parseTime('2026-11-25T13:00:00-05:00', NOW)).toBe(NOW);
  });

  it('refuses what is not a time, saying why', () => {
    const error = (text: string) => (parseTime(text, NOW) as { error: string }).error;
    expect(error('')).toBe('is empty');
    expect(error('yesterday')).toMatch(/is not an ISO 8601 time with Z or an offset/);
    expect(error('-5parsecs')).toMatch(/'5parsecs' is not a duration/);
    expect(error('now-')).toMatch(/not a duration/);
    expect(error('now+1h')).toMatch(/is not an ISO 8601/);
    expect(error('-1000')).toMatch(/'1000' is not a duration/);
    expect(error('2026-11-25T18:00:00')).toMatch(/no time zone: add Z/);
    expect(error('2026-11-25T18:00:00 01:00')).toMatch(/in a URL query '\+' means a space, write %2B/);
    expect(error('2026-02-30')).toMatch(/not a calendar date/);
    expect(error('2026-02-30T00:00:00Z')).toMatch(/not a real date and time/);
    expect(error('2026-11-25T25:00:00Z')).toMatch(/not a real date and time/);
    expect(error('2026-13-01')).toMatch(/not a calendar date/);
    expect(error('1.5')).toMatch(/is not an ISO 8601/);
    expect(error('25/11/2026')).toMatch(/is not an ISO 8601/);
  });
});
