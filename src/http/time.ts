import { parseDuration } from '../config/units.js';

/** The largest time a JavaScript Date holds, ms since the epoch. */
const MAX_TIME_MS = 8.64e15;

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$/i;
/** A date-time whose `+01:00` offset arrived as ` 01:00`: an unencoded `+` in a URL query is a space. */
const PLUS_AS_SPACE = /^\d{4}-\d{2}-\d{2}T[\d:.]+ \d{2}:?\d{2}$/i;

/** What {@link parseTime} accepts, for error messages. */
export const TIME_FORMS = 'an ISO 8601 time with Z or an offset (2026-11-25T18:00:00Z), a date (2026-11-25, UTC midnight), ms since the epoch (1764093600000), now, or a time ago (-15m, now-1h, now-7d)';

/**
 * Reads a time parameter of the HTTP API (`from`, `to`). Accepted:
 * - `now`; `-<duration>` or `now-<duration>`, a duration before `now` (`-15m`, `now-1h`, `-500ms`, `-7d`);
 * - a whole number: ms since the epoch;
 * - an ISO 8601 date (`2026-11-25`, midnight UTC) or date-time with `Z` or an offset
 *   (`2026-11-25T18:00:00Z`, `2026-11-25T19:00:00+01:00`). A date-time without a zone is
 *   refused rather than read in the server's local time zone.
 *
 * Returns ms since the epoch, or `{ error }` saying why the text is not a time.
 */
export function parseTime(value: string, now: number): number | { error: string } {
  const text = value.trim();
  if (text === '') return { error: 'is empty' };
  if (text.toLowerCase() === 'now') return now;
  const ago = /^(?:now)?-(.*)$/i.exec(text);
  if (ago) {
    const ms = parseDuration(ago[1]!);
    if (ms === undefined) return { error: `'${ago[1]}' is not a duration such as 500ms, 90s, 15m, 1h, 7d or 1w` };
    return now - ms;
  }
  if (/^\d+$/.test(text)) {
    const ms = Number(text);
    return ms <= MAX_TIME_MS ? ms : { error: `${text} ms since the epoch is past the year 275760` };
  }
  if (DATE.test(text)) {
    const ms = Date.parse(`${text}T00:00:00Z`);
    return Number.isNaN(ms) || !realDate(text) ? { error: `'${text}' is not a calendar date` } : ms;
  }
  if (PLUS_AS_SPACE.test(text)) return { error: `'${text}' has a space where its offset's '+' was: in a URL query '+' means a space, write %2B` };
  const m = DATE_TIME.exec(text);
  if (m) {
    if (m[1] === undefined) return { error: `'${text}' has no time zone: add Z (UTC) or an offset such as +01:00` };
    // Date.parse wants the offset as +hh:mm.
    const zone = m[1].length === 5 ? `${m[1].slice(0, 3)}:${m[1].slice(3)}` : m[1];
    const ms = Date.parse(text.slice(0, text.length - m[1].length) + zone);
    return Number.isNaN(ms) || !realDate(text) ? { error: `'${text}' is not a real date and time` } : ms;
  }
  return { error: `'${text}' is not ${TIME_FORMS}` };
}

/** True when the `YYYY-MM-DD` at the start of `text` is a day of the calendar (Date.parse takes 2026-02-30). */
function realDate(text: string): boolean {
  const [y, m, d] = [Number(text.slice(0, 4)), Number(text.slice(5, 7)), Number(text.slice(8, 10))];
  const day = new Date(Date.UTC(y, m - 1, d));
  return day.getUTCFullYear() === y && day.getUTCMonth() === m - 1 && day.getUTCDate() === d;
}
