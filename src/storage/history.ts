import type BetterSqlite3 from 'better-sqlite3';
import type { Clock, TimerHandle } from '../clock.js';
import type { Logger } from '../log.js';
import { matchesFilter } from '../topics/match.js';
import { validateTopicFilter } from '../topics/validate.js';
import { WriteBatcher, type WriteOp } from './batcher.js';
import { toStorageError } from './errors.js';

/** One message stored by a rule's `history` output. */
export interface HistoryRow {
  /** When the message arrived, in ms since the epoch. */
  time: number;
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  /** The rule whose history output stored it. */
  ruleId: string;
  /** The client that published it. */
  clientId: string;
}

/** A {@link HistoryStore.query}: which messages, and how many. */
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

/** Options of {@link HistoryStore}. */
export interface HistoryStoreOptions {
  clock: Clock;
  log: Logger;
  /** Commit as soon as this many rows are queued. Default {@link DEFAULT_MAX_BATCH_ROWS}. */
  maxBatchRows?: number;
  /** Commit at most this many ms after the first row of a batch was queued. Default {@link DEFAULT_MAX_BATCH_DELAY_MS}. */
  maxBatchDelayMs?: number;
  /**
   * The group-commit batcher shared with the rest of storage, so a message's history row
   * commits in the same transaction as everything else it caused. Default: a batcher of its
   * own built from maxBatchRows and maxBatchDelayMs.
   */
  batcher?: WriteBatcher;
}

/** Default {@link HistoryStoreOptions.maxBatchRows}. */
export const DEFAULT_MAX_BATCH_ROWS = 1000;
/** Default {@link HistoryStoreOptions.maxBatchDelayMs}. */
export const DEFAULT_MAX_BATCH_DELAY_MS = 5;
/** Rows per multi-row INSERT statement. */
const INSERT_ROWS_PER_STATEMENT = 32;
/** Default {@link HistoryQuery.limit}. */
export const DEFAULT_QUERY_LIMIT = 100;
/** Largest {@link HistoryQuery.limit}. */
export const MAX_QUERY_LIMIT = 10_000;
/** Rows one retention statement deletes, so one statement holds the write lock briefly. */
export const RETENTION_CHUNK_ROWS = 5_000;

/** Rows fetched per round when a wildcard filter is checked in JS (see {@link HistoryStore.query}). */
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

/**
 * Names what is wrong with a row, or undefined. Checked per append (a few typeofs) because
 * one row SQLite cannot bind would otherwise fail the commit of every row in its batch.
 */
function rowProblem(r: HistoryRow): string | undefined {
  if (typeof r.time !== 'number' || !Number.isFinite(r.time)) return 'time must be a finite number of ms';
  if (typeof r.topic !== 'string' || typeof r.ruleId !== 'string' || typeof r.clientId !== 'string') {
    return 'topic, ruleId and clientId must be strings';
  }
  if (!Buffer.isBuffer(r.payload)) return 'payload must be a Buffer';
  if (r.qos !== 0 && r.qos !== 1 && r.qos !== 2) return 'qos must be 0, 1 or 2';
  return undefined;
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
 * The SQLite `history` table: appends are batched into one transaction per batch, queries
 * take MQTT filters and time ranges, and a retention task deletes old rows. The database is
 * shared and owned by the caller; {@link close} does not close it.
 */
export class HistoryStore {
  private readonly db: BetterSqlite3.Database;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly batcher: WriteBatcher;
  /** Rows appended since the last commit; one batcher write inserts all of them. */
  private rows: HistoryRow[] = [];
  /** The commit that will insert `rows`. */
  private rowsCommit: Promise<void> | undefined;
  private readonly insertRows: WriteOp<HistoryRow[]>;
  private readonly maxBatchRows: number;
  private readonly deleteChunk: BetterSqlite3.Statement<[number, number]>;
  private readonly selects = new Map<string, BetterSqlite3.Statement>();
  private retentionTimer: TimerHandle | undefined;
  private closed = false;

  /** Prepares the statements; the `history` table must exist (see `openDatabase`). */
  constructor(db: BetterSqlite3.Database, options: HistoryStoreOptions) {
    this.db = db;
    this.clock = options.clock;
    this.log = options.log;
    this.maxBatchRows = Math.max(1, options.maxBatchRows ?? DEFAULT_MAX_BATCH_ROWS);
    this.batcher =
      options.batcher ??
      new WriteBatcher(db, {
        clock: options.clock,
        log: options.log,
        maxBatchOps: options.maxBatchRows ?? DEFAULT_MAX_BATCH_ROWS,
        maxBatchDelayMs: options.maxBatchDelayMs ?? DEFAULT_MAX_BATCH_DELAY_MS,
      });
    const sql = (n: number) => `INSERT INTO history (time, topic, payload, qos, retain, rule_id, client_id) VALUES ${Array(n).fill('(?, ?, ?, ?, ?, ?, ?)').join(', ')}`;
    const insertOne = db.prepare(sql(1));
    const insertMany = db.prepare(sql(INSERT_ROWS_PER_STATEMENT));
    // Hot path: the rows of a batch go in with multi-row INSERTs (one statement per
    // INSERT_ROWS_PER_STATEMENT rows instead of one per row), inside the batch's transaction.
    this.insertRows = (rows) => {
      if (this.rows === rows) this.rows = [];
      let i = 0;
      const params: unknown[] = new Array(INSERT_ROWS_PER_STATEMENT * 7);
      for (; i + INSERT_ROWS_PER_STATEMENT <= rows.length; i += INSERT_ROWS_PER_STATEMENT) {
        for (let k = 0; k < INSERT_ROWS_PER_STATEMENT; k++) {
          const r = rows[i + k]!;
          const o = k * 7;
          params[o] = r.time;
          params[o + 1] = r.topic;
          params[o + 2] = r.payload;
          params[o + 3] = r.qos;
          params[o + 4] = r.retain ? 1 : 0;
          params[o + 5] = r.ruleId;
          params[o + 6] = r.clientId;
        }
        insertMany.run(params);
      }
      for (; i < rows.length; i++) {
        const r = rows[i]!;
        insertOne.run(r.time, r.topic, r.payload, r.qos, r.retain ? 1 : 0, r.ruleId, r.clientId);
      }
    };
    for (const mode of ['all', 'exact', 'range'] as const) {
      for (const order of ['asc', 'desc'] as const) this.selects.set(`${mode} ${order}`, db.prepare(selectSql(mode, order)));
    }
    this.deleteChunk = db.prepare<[number, number]>(
      'DELETE FROM history WHERE id IN (SELECT id FROM history WHERE time < ? ORDER BY time LIMIT ?)',
    );
  }

  /**
   * Queues `row` for the next batch. Resolves once the batch holding it has committed; rejects
   * with a `StorageError` when that commit failed, in which case none of the batch was
   * written (retry when `retryable`). Rejects at once, with a TypeError, for a malformed row
   * and after {@link close}.
   */
  append(row: HistoryRow): Promise<void> {
    if (this.closed) return Promise.reject(new Error('HistoryStore is closed'));
    const problem = rowProblem(row);
    if (problem !== undefined) return Promise.reject(new TypeError(`history row for topic '${String(row.topic)}' not stored: ${problem}`));
    // The first row since the last commit adds the one write that inserts them all; later
    // rows join it and share the same commit.
    let rows = this.rows;
    let committed: Promise<void> | undefined = rows.length > 0 && this.batcher.pending() === this.rowsCommit ? this.rowsCommit : undefined;
    if (committed === undefined) {
      // No open batch holds our write (none yet, or the last one ended): start one.
      rows = this.rows = [row];
      committed = this.rowsCommit = this.batcher.write(this.insertRows, rows);
      // A batch that failed before inserting them must not leave them for the next one.
      committed.catch(() => {
        if (this.rows === rows) this.rows = [];
      });
    } else {
      rows.push(row);
    }
    if (rows.length >= this.maxBatchRows) this.batcher.commit();
    return committed;
  }

  /** Commits what is queued now. Resolves when it committed; rejects like {@link append}. */
  flush(): Promise<void> {
    return this.batcher.flush();
  }

  /**
   * Stops retention and flushes; later appends reject. Rejects when the final flush failed.
   * The database stays open for its other users.
   */
  async close(): Promise<void> {
    this.closed = true;
    this.stopRetention();
    await this.flush();
  }

  /**
   * Messages matching `filter` within `[since, until)`, newest first by default. Wildcard
   * filters read the index range of their literal prefix and check `matchesFilter` in JS,
   * fetching further pages until `limit` rows matched or the range is exhausted.
   *
   * Throws a RangeError for an invalid filter or limit, a `StorageError` when SQLite fails.
   */
  query(q: HistoryQuery): HistoryRow[] {
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
    try {
      const stmt = this.selects.get(`${range.mode} ${order}`)!;
      for (;;) {
        const page = stmt.all(...head, bound, cursorTime, cursorId, pageRows) as DbRow[];
        for (const r of page) {
          if (!check || matchesFilter(q.filter, r.topic)) {
            out.push(toRow(r));
            if (out.length === limit) return out;
          }
        }
        if (page.length < pageRows) return out;
        const last = page[page.length - 1]!;
        cursorTime = last.time;
        cursorId = last.id;
      }
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /**
   * Deletes every row older than `now - retentionMs`, in statements of
   * {@link RETENTION_CHUNK_ROWS} rows so each holds the write lock briefly. Runs to the end
   * synchronously; the background task ({@link startRetention}) yields between chunks.
   * Returns the number of rows deleted; throws a `StorageError` when SQLite fails.
   */
  enforceRetention(retentionMs: number): number {
    if (!(retentionMs >= 0)) throw new RangeError(`history retention must be zero or more ms, got ${retentionMs}`);
    const cutoff = this.clock.now() - retentionMs;
    let removed = 0;
    try {
      for (;;) {
        const n = this.deleteOlderThan(cutoff);
        removed += n;
        if (n < RETENTION_CHUNK_ROWS) return removed;
      }
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /**
   * Runs retention every `intervalMs` on the clock's (unref'd) timers, one chunk per timer
   * tick so other work runs in between, logging what each pass removed. Errors are logged and
   * the next pass runs as planned. Replaces a running retention task.
   */
  startRetention(retentionMs: number, intervalMs: number): void {
    if (!(retentionMs > 0) || !(intervalMs > 0)) {
      throw new RangeError(`history retention and its interval must be positive ms, got ${retentionMs} and ${intervalMs}`);
    }
    this.stopRetention();
    let cutoff = 0;
    let removed = 0;
    const tick = (): void => {
      if (removed === 0) cutoff = this.clock.now() - retentionMs;
      let more = false;
      try {
        const n = this.deleteOlderThan(cutoff);
        removed += n;
        more = n === RETENTION_CHUNK_ROWS;
      } catch (err) {
        this.log.error({ err: toStorageError(err, this.db.name), removed }, 'history retention failed; retrying at the next interval');
      }
      if (more) {
        this.retentionTimer = this.clock.setTimeout(tick, 0);
        return;
      }
      if (removed > 0) this.log.info({ removed, olderThan: new Date(cutoff).toISOString() }, 'history retention removed old rows');
      removed = 0;
      this.retentionTimer = this.clock.setTimeout(tick, intervalMs);
    };
    this.retentionTimer = this.clock.setTimeout(tick, intervalMs);
  }

  /** Stops the background retention task, if any. */
  stopRetention(): void {
    if (this.retentionTimer !== undefined) this.clock.clearTimeout(this.retentionTimer);
    this.retentionTimer = undefined;
  }

  private deleteOlderThan(cutoff: number): number {
    return this.deleteChunk.run(cutoff, RETENTION_CHUNK_ROWS).changes;
  }


}
