import type BetterSqlite3 from 'better-sqlite3';
import type { Clock, TimerHandle } from '../clock.js';
import type { Logger } from '../log.js';
import { WriteBatcher, type WriteOp } from './batcher.js';
import { toStorageError } from './errors.js';
import { HistoryReader, type HistoryQuery } from './history-query.js';

export { DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT, type HistoryQuery } from './history-query.js';

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
  /**
   * Called after each commit with the rows it stored, in the order they were appended (the
   * last-value cache of the HTTP API listens here). Must not throw; called once per batch.
   */
  onStored?: (rows: readonly HistoryRow[]) => void;
}

/** Counters of a {@link HistoryStore}, for metrics and benchmarks. */
export interface HistoryStats {
  /** Rows committed since start. */
  rowsWritten: number;
  /** Commits that stored history rows. */
  commits: number;
  /** Rows deleted for being older than `history.retention`. */
  deletedByRetention: number;
  /** Rows deleted, oldest first, to stay within `history.maxRows`. */
  deletedByCap: number;
}

/** What the background task of {@link HistoryStore.startRetention} enforces. */
export interface RetentionSettings {
  /** Rows older than this many ms are deleted. */
  retentionMs: number;
  /** Beyond this many rows the oldest are deleted; undefined: no cap. */
  maxRows?: number;
  /** A pass runs this often (ms), and sooner when rows go past maxRows by a chunk. */
  intervalMs: number;
}

/** Default {@link HistoryStoreOptions.maxBatchRows}. */
export const DEFAULT_MAX_BATCH_ROWS = 1000;
/** Default {@link HistoryStoreOptions.maxBatchDelayMs}. */
export const DEFAULT_MAX_BATCH_DELAY_MS = 5;
/** Rows per multi-row INSERT statement. */
const INSERT_ROWS_PER_STATEMENT = 32;
/** Rows one retention statement deletes, so one statement holds the write lock briefly. */
export const RETENTION_CHUNK_ROWS = 5_000;
/**
 * Rows past `maxRows` that start a cap pass at once instead of at the next interval: one
 * chunk, so under a steady stream the cap deletes a chunk at a time rather than a row.
 */
const CAP_SLACK_ROWS = RETENTION_CHUNK_ROWS;

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
  private readonly deleteOldestChunk: BetterSqlite3.Statement<[number]>;
  private readonly countRows: BetterSqlite3.Statement<[]>;
  private readonly reader: HistoryReader;
  private readonly onStored: ((rows: readonly HistoryRow[]) => void) | undefined;
  private retentionTimer: TimerHandle | undefined;
  private retention: RetentionSettings | undefined;
  /** Within a pass: its age cutoff, and what it removed so far (logged when it ends). */
  private pass: { cutoff: number; old: number; capped: number } | undefined;
  /** Rows in the table, once counted (the first cap pass counts; commits and deletes keep it). */
  private rowCount: number | undefined;
  private closed = false;
  /** Live counters; read them, do not write them. */
  readonly stats: HistoryStats = { rowsWritten: 0, commits: 0, deletedByRetention: 0, deletedByCap: 0 };

  /** Prepares the statements; the `history` table must exist (see `openDatabase`). */
  constructor(db: BetterSqlite3.Database, options: HistoryStoreOptions) {
    this.db = db;
    this.clock = options.clock;
    this.log = options.log;
    this.maxBatchRows = Math.max(1, options.maxBatchRows ?? DEFAULT_MAX_BATCH_ROWS);
    this.onStored = options.onStored;
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
    this.reader = new HistoryReader(db);
    this.deleteChunk = db.prepare<[number, number]>(
      'DELETE FROM history WHERE id IN (SELECT id FROM history WHERE time < ? ORDER BY time LIMIT ?)',
    );
    this.deleteOldestChunk = db.prepare<[number]>('DELETE FROM history WHERE id IN (SELECT id FROM history ORDER BY time, id LIMIT ?)');
    this.countRows = db.prepare<[]>('SELECT count(*) FROM history').pluck();
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
      // One callback pair per batch, not per row: count what committed; a batch that failed
      // before inserting them must not leave them for the next one.
      committed.then(
        () => this.stored(rows),
        () => {
          if (this.rows === rows) this.rows = [];
        },
      );
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
   * Messages matching `filter` within `[since, until)`, newest first by default (see
   * {@link HistoryReader.query}). Throws a RangeError for an invalid filter or limit, a
   * `StorageError` when SQLite fails.
   */
  query(q: HistoryQuery): HistoryRow[] {
    return this.reader.query(q);
  }

  /** {@link query} within a budget of rows examined (see {@link HistoryReader.scan}). */
  scan(q: HistoryQuery, maxScanRows: number): ReturnType<HistoryReader['scan']> {
    return this.reader.scan(q, maxScanRows);
  }

  /** The newest row of each of the next `limit` topics after `afterTopic` (see {@link HistoryReader.latestPerTopic}). */
  latestPerTopic(afterTopic: string, limit: number): HistoryRow[] {
    return this.reader.latestPerTopic(afterTopic, limit);
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
   * Deletes the oldest rows until at most `maxRows` remain, in statements of
   * {@link RETENTION_CHUNK_ROWS} rows. Runs to the end synchronously (counts the table first);
   * the background task ({@link startRetention}) does the same a chunk per timer tick.
   * Returns the number of rows deleted; throws a `StorageError` when SQLite fails.
   */
  enforceMaxRows(maxRows: number): number {
    if (!(Number.isSafeInteger(maxRows) && maxRows >= 0)) throw new RangeError(`history maxRows must be a whole number of rows, got ${maxRows}`);
    let removed = 0;
    try {
      this.rowCount = this.countRows.get() as number;
      while (this.rowCount > maxRows) {
        const n = this.deleteOldest(Math.min(this.rowCount - maxRows, RETENTION_CHUNK_ROWS));
        removed += n;
        if (n === 0) break;
      }
      return removed;
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /**
   * Runs retention every `intervalMs` on the clock's (unref'd) timers: rows older than
   * `retentionMs`, then the oldest rows beyond `maxRows`, one chunk per timer tick so the
   * broker and the rules run in between, logging what each pass removed. A commit that takes
   * the table a chunk past `maxRows` starts a pass at once. Errors are logged and the next
   * pass runs as planned. Replaces a running retention task.
   */
  startRetention(retentionMs: number, intervalMs: number, maxRows?: number): void {
    if (!(retentionMs > 0) || !(intervalMs > 0)) {
      throw new RangeError(`history retention and its interval must be positive ms, got ${retentionMs} and ${intervalMs}`);
    }
    if (maxRows !== undefined && !(Number.isSafeInteger(maxRows) && maxRows > 0)) throw new RangeError(`history maxRows must be a positive whole number, got ${maxRows}`);
    this.stopRetention();
    this.retention = { retentionMs, intervalMs, maxRows };
    this.retentionTimer = this.clock.setTimeout(this.retentionTick, intervalMs);
  }

  /** Stops the background retention task, if any. */
  stopRetention(): void {
    if (this.retentionTimer !== undefined) this.clock.clearTimeout(this.retentionTimer);
    this.retentionTimer = undefined;
    this.retention = undefined;
    this.pass = undefined;
  }

  /** One chunk of a retention pass: old rows first, then rows beyond the cap. */
  private readonly retentionTick = (): void => {
    const settings = this.retention;
    if (settings === undefined) return;
    this.retentionTimer = undefined;
    const pass = (this.pass ??= { cutoff: this.clock.now() - settings.retentionMs, old: 0, capped: 0 });
    let more = false;
    try {
      const n = this.deleteOlderThan(pass.cutoff);
      pass.old += n;
      more = n === RETENTION_CHUNK_ROWS;
      if (!more && settings.maxRows !== undefined) {
        // Counted once (a full index scan); from then on commits and deletes keep the count.
        this.rowCount ??= this.countRows.get() as number;
        const excess = this.rowCount - settings.maxRows;
        if (excess > 0) {
          const removed = this.deleteOldest(Math.min(excess, RETENTION_CHUNK_ROWS));
          pass.capped += removed;
          more = removed > 0 && excess > removed;
        }
      }
    } catch (err) {
      this.log.error({ err: toStorageError(err, this.db.name), removed: pass.old + pass.capped }, 'history retention failed; retrying at the next interval');
      more = false;
    }
    if (more) {
      this.retentionTimer = this.clock.setTimeout(this.retentionTick, 0);
      return;
    }
    if (pass.old > 0) this.log.info({ removed: pass.old, olderThan: new Date(pass.cutoff).toISOString() }, 'history retention removed old rows');
    if (pass.capped > 0) this.log.warn({ removed: pass.capped, maxRows: settings.maxRows, rows: this.rowCount }, 'history reached maxRows: removed the oldest rows');
    this.pass = undefined;
    this.retentionTimer = this.clock.setTimeout(this.retentionTick, settings.intervalMs);
  };

  /** After a commit: counts its rows, tells `onStored`, starts a cap pass when far enough past `maxRows`. */
  private stored(rows: HistoryRow[]): void {
    this.stats.rowsWritten += rows.length;
    this.stats.commits++;
    if (this.rowCount !== undefined) {
      this.rowCount += rows.length;
      const max = this.retention?.maxRows;
      if (max !== undefined && this.pass === undefined && this.rowCount > max + CAP_SLACK_ROWS) {
        if (this.retentionTimer !== undefined) this.clock.clearTimeout(this.retentionTimer);
        this.retentionTimer = this.clock.setTimeout(this.retentionTick, 0);
        // Marks the pass as started, so later commits do not schedule it again.
        this.pass = { cutoff: this.clock.now() - this.retention!.retentionMs, old: 0, capped: 0 };
      }
    }
    this.onStored?.(rows);
  }

  private deleteOldest(n: number): number {
    const removed = this.deleteOldestChunk.run(n).changes;
    this.stats.deletedByCap += removed;
    if (this.rowCount !== undefined) this.rowCount -= removed;
    return removed;
  }

  private deleteOlderThan(cutoff: number): number {
    const removed = this.deleteChunk.run(cutoff, RETENTION_CHUNK_ROWS).changes;
    this.stats.deletedByRetention += removed;
    if (this.rowCount !== undefined) this.rowCount -= removed;
    return removed;
  }


}
