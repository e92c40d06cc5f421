import type BetterSqlite3 from 'better-sqlite3';
import type { Clock, TimerHandle } from '../clock.js';
import type { Logger } from '../log.js';
import { toStorageError } from './errors.js';

/** A message a rule could not handle (a permanent error), kept with the rule and the error. */
export interface DeadLetter {
  /** Assigned on insert; never reused, so it can be passed to {@link DeadLetterStore.remove}. */
  id?: number;
  /** When the message arrived, in ms since the epoch. */
  time: number;
  ruleId: string;
  /** Which output failed; undefined when the rule itself (a step, an expression) failed. */
  output?: string;
  /** What went wrong, as shown to the operator. */
  error: string;
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  clientId: string;
  /** How many times delivery was tried before giving up. Default 1. */
  attempts?: number;
  /** Output-specific data of an output's letter (e.g. time-series points), kept for replay. */
  data?: unknown;
  /** When a replay was requested (ms); undefined when none is pending. */
  replayAt?: number;
}

/** Options of {@link DeadLetterStore}. */
export interface DeadLetterStoreOptions {
  clock: Clock;
  log: Logger;
  /** Keep at most this many letters; adding one more deletes the oldest. Default {@link DEFAULT_MAX_DEAD_LETTERS}. */
  maxRows?: number;
}

/** A {@link DeadLetterStore.list} request. */
export interface DeadLetterQuery {
  /** At most this many, 1 to {@link MAX_DEAD_LETTER_LIST}. Default 100. */
  limit?: number;
  /** Only letters of this rule. */
  ruleId?: string;
  /** `desc` (default): the newest first; `asc`: the oldest first. */
  order?: 'asc' | 'desc';
}

/** Default {@link DeadLetterStoreOptions.maxRows}. */
export const DEFAULT_MAX_DEAD_LETTERS = 10_000;
/** Largest {@link DeadLetterQuery.limit}. */
export const MAX_DEAD_LETTER_LIST = 10_000;
/** A storm of drops logs one warning per this many ms, with the count, not one per letter. */
const DROP_LOG_INTERVAL_MS = 10_000;

interface DbRow {
  id: number;
  time: number;
  rule_id: string;
  output: string | null;
  error: string;
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  client_id: string;
  attempts: number;
  data: string | null;
  replay_at: number | null;
}

function toLetter(r: DbRow): DeadLetter {
  const letter: DeadLetter = {
    id: r.id,
    time: r.time,
    ruleId: r.rule_id,
    error: r.error,
    topic: r.topic,
    payload: r.payload,
    qos: r.qos as 0 | 1 | 2,
    retain: r.retain !== 0,
    clientId: r.client_id,
    attempts: r.attempts,
  };
  if (r.output !== null) letter.output = r.output;
  if (r.data !== null) letter.data = JSON.parse(r.data) as unknown;
  if (r.replay_at !== null) letter.replayAt = r.replay_at;
  return letter;
}

const COLUMNS = 'id, time, rule_id, output, error, topic, payload, qos, retain, client_id, attempts, data, replay_at';

/**
 * The bounded `dead_letters` table. Poison messages are added synchronously (they are rare,
 * and the caller wants to know it is stored); beyond `maxRows` the oldest are deleted, and
 * that drop is counted in {@link droppedCount} and logged, never silent. The database is
 * shared and owned by the caller.
 */
export class DeadLetterStore {
  /** Letters deleted to stay within `maxRows` since this store was created. */
  droppedCount = 0;
  private readonly db: BetterSqlite3.Database;
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly maxRows: number;
  private readonly addTx: (letter: DeadLetter) => number;
  private readonly countStmt: BetterSqlite3.Statement<[]>;
  private readonly removeStmt: BetterSqlite3.Statement<[number]>;
  private readonly removeTx: (ids: readonly number[]) => number;
  private readonly lists = new Map<string, BetterSqlite3.Statement>();
  /** Drops not yet reported, and when the last warning went out. */
  private unreportedDrops = 0;
  private lastDropLogAt = Number.NEGATIVE_INFINITY;
  private dropLogTimer: TimerHandle | undefined;
  /** Bound once: reports drops held back by the rate limit when their interval ends. */
  private readonly logDrops = (): void => {
    this.dropLogTimer = undefined;
    if (this.unreportedDrops === 0) return;
    this.log.warn(
      { dropped: this.unreportedDrops, droppedTotal: this.droppedCount, maxRows: this.maxRows },
      `dead-letter table is at its cap of ${this.maxRows}: deleted the oldest letters`,
    );
    this.unreportedDrops = 0;
    this.lastDropLogAt = this.clock.now();
  };

  /** Prepares the statements; the `dead_letters` table must exist (see `openDatabase`). */
  constructor(db: BetterSqlite3.Database, options: DeadLetterStoreOptions) {
    this.db = db;
    this.clock = options.clock;
    this.log = options.log;
    this.maxRows = Math.max(1, options.maxRows ?? DEFAULT_MAX_DEAD_LETTERS);
    const insert = db.prepare<[number, string, string | null, string, string, Buffer, number, number, string, number, string | null]>(
      'INSERT INTO dead_letters (time, rule_id, output, error, topic, payload, qos, retain, client_id, attempts, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.countStmt = db.prepare<[]>('SELECT count(*) FROM dead_letters').pluck();
    const dropOldest = db.prepare<[number]>(
      'DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)',
    );
    // Insert and trim in one transaction, so the table is never seen above its cap.
    this.addTx = db.transaction((l: DeadLetter): number => {
      insert.run(l.time, l.ruleId, l.output ?? null, l.error, l.topic, l.payload, l.qos, l.retain ? 1 : 0, l.clientId, l.attempts ?? 1, l.data === undefined ? null : JSON.stringify(l.data));
      const excess = (this.countStmt.get() as number) - this.maxRows;
      return excess > 0 ? dropOldest.run(excess).changes : 0;
    });
    this.removeStmt = db.prepare<[number]>('DELETE FROM dead_letters WHERE id = ?');
    this.removeTx = db.transaction((ids: readonly number[]): number => {
      let n = 0;
      for (const id of ids) n += this.removeStmt.run(id).changes;
      return n;
    });
  }

  /**
   * Stores `letter`, deleting the oldest letters beyond `maxRows` (counted and logged).
   * Throws a `StorageError` when it could not be stored; the caller logs it (the message is
   * then lost, which the caller's log line must say).
   */
  add(letter: DeadLetter): void {
    let dropped: number;
    try {
      dropped = this.addTx(letter);
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
    if (dropped > 0) this.reportDrops(dropped);
  }

  /** Letters, newest first unless `order: 'asc'`; optionally of one rule. Throws a RangeError for a bad limit. */
  list(query: DeadLetterQuery = {}): DeadLetter[] {
    const limit = query.limit ?? 100;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_DEAD_LETTER_LIST) {
      throw new RangeError(`dead-letter list limit must be a whole number from 1 to ${MAX_DEAD_LETTER_LIST}, got ${limit}`);
    }
    const order = query.order === 'asc' ? 'ASC' : 'DESC';
    const byRule = query.ruleId !== undefined;
    const key = `${order} ${byRule}`;
    try {
      let stmt = this.lists.get(key);
      if (stmt === undefined) {
        const where = byRule ? 'WHERE rule_id = ? ' : '';
        stmt = this.db.prepare(`SELECT ${COLUMNS} FROM dead_letters ${where}ORDER BY id ${order} LIMIT ?`);
        this.lists.set(key, stmt);
      }
      const rows = (byRule ? stmt.all(query.ruleId, limit) : stmt.all(limit)) as DbRow[];
      return rows.map(toLetter);
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /** How many letters are stored. */
  count(): number {
    try {
      return this.countStmt.get() as number;
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /** Deletes the letters with these ids (after they were handled); returns how many existed. */
  remove(ids: readonly number[]): number {
    try {
      return this.removeTx(ids);
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /**
   * Marks letters for replay (all of them, those of one rule, or these ids); the running
   * server redrives marked letters (see `takeReplays`). Returns how many were marked.
   */
  requestReplay(which: { ids?: readonly number[]; ruleId?: string; all?: boolean }): number {
    const now = this.clock.now();
    try {
      if (which.all) return this.db.prepare('UPDATE dead_letters SET replay_at = ?').run(now).changes;
      if (which.ruleId !== undefined) return this.db.prepare('UPDATE dead_letters SET replay_at = ? WHERE rule_id = ?').run(now, which.ruleId).changes;
      const stmt = this.db.prepare('UPDATE dead_letters SET replay_at = ? WHERE id = ?');
      return this.db.transaction((ids: readonly number[]) => ids.reduce((n, id) => n + stmt.run(now, id).changes, 0))(which.ids ?? []);
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /** Up to `limit` letters marked for replay, oldest first. */
  takeReplays(limit: number): DeadLetter[] {
    try {
      return (this.db.prepare(`SELECT ${COLUMNS} FROM dead_letters WHERE replay_at IS NOT NULL ORDER BY id LIMIT ?`).all(limit) as DbRow[]).map(toLetter);
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /** Cancels a pending replay of one letter (it could not be redriven now). */
  clearReplay(id: number): void {
    try {
      this.db.prepare('UPDATE dead_letters SET replay_at = NULL WHERE id = ?').run(id);
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /** Deletes the letters of one rule; returns how many there were. */
  purgeRule(ruleId: string): number {
    try {
      return this.db.prepare('DELETE FROM dead_letters WHERE rule_id = ?').run(ruleId).changes;
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /** Deletes every letter; returns how many there were. */
  purge(): number {
    try {
      return this.db.prepare('DELETE FROM dead_letters').run().changes;
    } catch (err) {
      throw toStorageError(err, this.db.name);
    }
  }

  /**
   * Warns at once for the first drop, then at most once per {@link DROP_LOG_INTERVAL_MS} with
   * the number dropped since, so a poison storm at the cap cannot flood the log.
   */
  private reportDrops(dropped: number): void {
    this.droppedCount += dropped;
    this.unreportedDrops += dropped;
    const wait = this.lastDropLogAt + DROP_LOG_INTERVAL_MS - this.clock.now();
    if (wait <= 0) this.logDrops();
    else this.dropLogTimer ??= this.clock.setTimeout(this.logDrops, wait);
  }
}
