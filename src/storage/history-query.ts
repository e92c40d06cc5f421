import type BetterSqlite3 from 'better-sqlite3';
import { matchesFilter } from '../topics/match.js';
import { validateTopicFilter } from '../topics/validate.js';
import { toStorageError } from './errors.js';
import type { HistoryRow } from './history.js';

/** A {@link HistoryReader.query}: which messages, and how many. */
export interface HistoryQuery {
  /** An MQTT topic filter (`+` and `#` allowed, `$share/` not). */
  filter: string;
  /** Only messages at or after this time (ms since the epoch). */
  since?: number;
  /** Only messages before this time (ms since the epoch, exclusive). */
  until?: number;
  /** At most this many rows, 1 to {@link MAX_QUERY_LIMIT}. Default {@link DEFAULT_QUERY_LIMIT}. */
  limit?: number;
  /** `desc` (default): the newest first; `asc`: the oldest first. */
  order?: 'asc' | 'desc';
}

/** Default {@link HistoryQuery.limit}. */
export const DEFAULT_QUERY_LIMIT = 100;
/** Largest {@link HistoryQuery.limit}. */
export const MAX_QUERY_LIMIT = 10_000;

/** Rows fetched per round when a wildcard filter is checked in JS (see {@link HistoryReader.query}). */
const MIN_PAGE_ROWS = 256;

interface DbRow {
  id: number;
  time: number;
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  rule_id: string;
  client_id: string;
}

type TopicMode = 'all' | 'exact' | 'range';

const COLUMNS = 'id, time, topic, payload, qos, retain, rule_id, client_id';

/** Rows are paged by (time, id): `time` orders them, `id` breaks ties so no row repeats. */
function selectSql(mode: TopicMode, order: 'asc' | 'desc'): string {
  const topic = mode === 'exact' ? 'topic = ? AND ' : mode === 'range' ? 'topic >= ? AND topic < ? AND ' : '';
  // The cursor bounds one side; the other side is the fixed since (asc) or until (desc).
  const window = order === 'desc' ? 'time >= ? AND (time, id) < (?, ?)' : 'time < ? AND (time, id) > (?, ?)';
  const dir = order === 'desc' ? 'DESC' : 'ASC';
  return `SELECT ${COLUMNS} FROM history WHERE ${topic}${window} ORDER BY time ${dir}, id ${dir} LIMIT ?`;
}

/**
 * The index range covering every topic `filter` can match: the literal text before its first
 * wildcard. Wildcards occupy whole levels, so that text ends with `/`, and `[p, p with '/'
 * raised to '0')` holds exactly the topics starting with `p`. A final `#` also matches the
 * parent level (`a/#` matches `a`), so then the range starts at `a`; the extra topics it lets
 * in (`a-b`) are dropped by `matchesFilter`.
 */
function topicRange(filter: string): { mode: TopicMode; low: string; high: string } {
  const plus = filter.indexOf('+');
  const hash = filter.indexOf('#');
  const first = plus === -1 ? hash : hash === -1 ? plus : Math.min(plus, hash);
  if (first === -1) return { mode: 'exact', low: filter, high: filter };
  if (first === 0) return { mode: 'all', low: '', high: '' };
  const parent = filter.slice(0, first - 1);
  const low = first === hash ? parent : filter.slice(0, first);
  return { mode: 'range', low, high: `${parent}0` };
}

function toRow(r: DbRow): HistoryRow {
  return {
    time: r.time,
    topic: r.topic,
    payload: r.payload,
    qos: r.qos as 0 | 1 | 2,
    retain: r.retain !== 0,
    ruleId: r.rule_id,
    clientId: r.client_id,
  };
}

/**
 * The reading side of the `history` table: MQTT-filter and time-range queries, and the newest
 * row per topic. Statements are prepared once; the database is the caller's.
 */
export class HistoryReader {
  private readonly selects = new Map<string, BetterSqlite3.Statement>();
  private readonly nextTopic: BetterSqlite3.Statement<[string]>;
  private readonly latestOfTopic: BetterSqlite3.Statement<[string]>;

  /** Prepares the statements; the `history` table must exist. */
  constructor(private readonly db: BetterSqlite3.Database) {
    for (const mode of ['all', 'exact', 'range'] as const) {
      for (const order of ['asc', 'desc'] as const) this.selects.set(`${mode} ${order}`, db.prepare(selectSql(mode, order)));
    }
    this.nextTopic = db.prepare<[string]>('SELECT topic FROM history WHERE topic > ? ORDER BY topic LIMIT 1').pluck();
    this.latestOfTopic = db.prepare<[string]>(`SELECT ${COLUMNS} FROM history WHERE topic = ? ORDER BY time DESC, id DESC LIMIT 1`);
  }

  /**
   * Messages matching `filter` within `[since, until)`, newest first by default. Wildcard
   * filters read the index range of their literal prefix and check `matchesFilter` in JS,
   * fetching further pages until `limit` rows matched or the range is exhausted.
   *
   * Throws a RangeError for an invalid filter or limit, a `StorageError` when SQLite fails.
   */
  query(q: HistoryQuery): HistoryRow[] {
    return this.scan(q, Number.POSITIVE_INFINITY).rows;
  }

  /**
   * {@link query}, examining at most `maxScanRows` stored rows: a wildcard filter over a large
   * topic range could otherwise hold the event loop (and the broker) for seconds. When the
   * budget ran out first, `scanLimited` is true and `resumeTime` is the time of the last row
   * examined: query again with `until: resumeTime + 1` (desc) or `since: resumeTime` (asc)
   * to go on (rows of that one millisecond may come again).
   */
  scan(q: HistoryQuery, maxScanRows: number): { rows: HistoryRow[]; scanLimited: boolean; resumeTime?: number } {
    const problem = validateTopicFilter(q.filter);
    if (problem !== undefined) throw new RangeError(`invalid history filter '${q.filter}': ${problem}`);
    const limit = q.limit ?? DEFAULT_QUERY_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_QUERY_LIMIT) {
      throw new RangeError(`history query limit must be a whole number from 1 to ${MAX_QUERY_LIMIT}, got ${limit}`);
    }
    if ((q.since !== undefined && !Number.isFinite(q.since)) || (q.until !== undefined && !Number.isFinite(q.until))) {
      throw new RangeError(`history query since/until must be finite ms since the epoch, got ${q.since} and ${q.until}`);
    }
    const order = q.order ?? 'desc';
    const since = Math.ceil(q.since ?? Number.MIN_SAFE_INTEGER);
    const until = Math.ceil(q.until ?? Number.MAX_SAFE_INTEGER);
    const range = topicRange(q.filter);
    // Only an exact topic needs no check in JS ('#' alone must still skip '$' topics).
    const check = range.mode !== 'exact';
    const pageRows = check ? Math.max(limit, MIN_PAGE_ROWS) : limit;
    const head: unknown[] = range.mode === 'exact' ? [range.low] : range.mode === 'range' ? [range.low, range.high] : [];
    // The cursor starts just outside the window: (until, -inf) going down, (since, -inf) going up.
    let cursorTime = order === 'desc' ? until : since;
    let cursorId = Number.MIN_SAFE_INTEGER;
    const bound = order === 'desc' ? since : until;
    const out: HistoryRow[] = [];
    let scanned = 0;
    try {
      const stmt = this.selects.get(`${range.mode} ${order}`)!;
      for (;;) {
        const page = stmt.all(...head, bound, cursorTime, cursorId, pageRows) as DbRow[];
        for (const r of page) {
          if (!check || matchesFilter(q.filter, r.topic)) {
            out.push(toRow(r));
            if (out.length === limit) return { rows: out, scanLimited: false };
          }
        }
        if (page.length < pageRows) return { rows: out, scanLimited: false };
        const last = page[page.length - 1]!;
        cursorTime = last.time;
        cursorId = last.id;
        scanned += page.length;
        if (scanned >= maxScanRows) return { rows: out, scanLimited: true, resumeTime: last.time };
      }
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /**
   * The newest row of each of the next `limit` topics after `afterTopic`, in topic order (a
   * skip scan of the topic index: two index lookups per topic, however many rows each has).
   * For seeding the last-value cache. Throws a `StorageError` when SQLite fails.
   */
  latestPerTopic(afterTopic: string, limit: number): HistoryRow[] {
    const out: HistoryRow[] = [];
    try {
      let topic = afterTopic;
      while (out.length < limit) {
        const next = this.nextTopic.get(topic) as string | undefined;
        if (next === undefined) break;
        out.push(toRow(this.latestOfTopic.get(next) as DbRow));
        topic = next;
      }
      return out;
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }
}
