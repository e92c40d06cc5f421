import { TextDecoder } from 'node:util';
import type { Clock } from '../clock.js';
import { DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, type HistoryStore } from '../storage/history.js';
import { StorageError } from '../storage/errors.js';
import { HttpError, badParameter } from './errors.js';
import { readFilter, readLimit, readOrder, readParams, readTime } from './params.js';
import { messageJson } from './payload.js';
import type { Handler } from './server.js';
import type { LastValueCache } from './last-values.js';

const HISTORY_PARAMS = ['filter', 'from', 'to', 'limit', 'order'] as const;
/**
 * Most stored rows one `/api/history` request examines. A wildcard filter is checked in JS
 * over the index range of its literal prefix; this bounds how long one request can hold the
 * event loop (about 0.1-0.3 s). Beyond it the answer says where to go on.
 */
export const MAX_SCAN_ROWS = 200_000;
const LAST_PARAMS = ['filter', 'limit'] as const;
/** Default `limit` of `GET /api/last`. */
export const DEFAULT_LAST_LIMIT = 1_000;
/** Largest `limit` of `GET /api/last`. */
export const MAX_LAST_LIMIT = 10_000;

/** A storage failure answered 503 (retry later) rather than 500. */
function storageUnavailable(err: StorageError): HttpError {
  return new HttpError(503, 'SB_HTTP_STORAGE', `history cannot be read now: ${err.code} ${err.message}`, { headers: { 'retry-after': '1' } });
}

/**
 * `GET /api/history?filter=&from=&to=&limit=&order=`: stored messages matching an MQTT filter
 * within [from, to), newest first (or `order=asc`), at most `limit` (default 100, at most
 * 10,000). Every bad parameter is a 400 naming it.
 */
export function historyHandler(history: Pick<HistoryStore, 'scan'>, clock: Clock): Handler {
  return (req) => {
    const params = readParams(req.query, HISTORY_PARAMS);
    const filter = readFilter(params);
    const now = clock.now();
    const from = readTime(params, 'from', now);
    const to = readTime(params, 'to', now);
    if (from !== undefined && to !== undefined && from >= to) {
      throw badParameter('SB_HTTP_BAD_RANGE', 'from', `'from' (${new Date(from).toISOString()}) must be before 'to' (${new Date(to).toISOString()})`);
    }
    const limit = readLimit(params, DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT);
    const order = readOrder(params);
    let result;
    try {
      result = history.scan({ filter, since: from, until: to, limit, order }, MAX_SCAN_ROWS);
    } catch (err) {
      if (err instanceof StorageError) throw storageUnavailable(err);
      throw err;
    }
    const { rows, scanLimited, resumeTime } = result;
    const decoder = new TextDecoder('utf-8', { fatal: true });
    return {
      status: 200,
      json: {
        filter,
        from: from === undefined ? null : new Date(from).toISOString(),
        to: to === undefined ? null : new Date(to).toISOString(),
        order,
        limit,
        count: rows.length,
        // A full page, or a scan cut short: more may match (narrow the time range or page with from/to).
        more: rows.length === limit || scanLimited,
        // The scan stopped at MAX_SCAN_ROWS rows examined: go on from here.
        ...(scanLimited ? { scanLimited: true, resume: order === 'desc' ? { to: new Date(resumeTime! + 1).toISOString() } : { from: new Date(resumeTime!).toISOString() } } : {}),
        messages: rows.map((r) => messageJson(r, decoder)),
      },
    };
  };
}

/**
 * `GET /api/last?filter=&limit=`: the newest stored message of each topic matching the filter,
 * from the in-memory last-value cache, sorted by topic, at most `limit` (default 1,000, at most
 * 10,000).
 */
export function lastHandler(cache: LastValueCache): Handler {
  return (req) => {
    const params = readParams(req.query, LAST_PARAMS);
    const filter = readFilter(params);
    const limit = readLimit(params, DEFAULT_LAST_LIMIT, MAX_LAST_LIMIT);
    const { rows, matched } = cache.match(filter, limit);
    const decoder = new TextDecoder('utf-8', { fatal: true });
    return { status: 200, json: { filter, limit, count: rows.length, matched, messages: rows.map((r) => messageJson(r, decoder)) } };
  };
}
