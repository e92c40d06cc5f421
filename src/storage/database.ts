import { chmodSync, closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import type { Logger } from '../log.js';
import { StorageError, toStorageError } from './errors.js';
import { SCHEMA_VERSION, migrate, type Migration } from './migrations.js';

/** A better-sqlite3 connection as returned by {@link openDatabase}. */
export type Database = BetterSqlite3.Database;

/** How long a statement waits for another connection's lock before SQLITE_BUSY. */
/** SQLite page cache, in KiB. */
const CACHE_KIB = 32 * 1024;

export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

/** Options of {@link openDatabase}. */
export interface OpenDatabaseOptions {
  /**
   * `normal` (synchronous=NORMAL): a commit survives the process being killed.
   * `full` (synchronous=FULL): a commit also survives power loss, at the cost of an fsync
   * per commit.
   */
  durability: 'normal' | 'full';
  log: Logger;
  /** Wait for another connection's lock this long, in ms. Default {@link DEFAULT_BUSY_TIMEOUT_MS}. */
  busyTimeoutMs?: number;
  /**
   * Open an existing database read-only, for tools such as `signalbox history` that read
   * while the server writes: nothing is created, migrated or written. The schema may be
   * older than the code (callers check for the tables they need); newer is refused.
   * Default false.
   */
  readonly?: boolean;
  /**
   * Run `PRAGMA quick_check` before use. It reads the whole file (seconds for gigabytes), so
   * read-only tools may skip it: a damaged page still fails the query that reads it with
   * `SB_ERR_STORAGE_CORRUPT`. Default true.
   */
  quickCheck?: boolean;
  /** Schema steps to apply; default the signalbox schema. For tests of the migration layer. */
  migrations?: readonly Migration[];
}

const MEMORY = ':memory:';

/** Creates the folder and an empty file readable by its owner only, unless it exists. */
function createPrivateFile(path: string): boolean {
  if (existsSync(path)) return false;
  // The database holds message payloads: keep it from other local users from the start.
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // 'a' creates without truncating, so a file appearing between the check and here is kept.
  closeSync(openSync(path, 'a', 0o600));
  return true;
}

function corrupt(path: string, detail: string): StorageError {
  return new StorageError(
    'SB_ERR_STORAGE_CORRUPT',
    `${path}: database failed its integrity check (${detail}); signalbox will not modify it: restore a backup or move the file aside`,
    { file: path, retryable: false },
  );
}

/**
 * Throws unless `PRAGMA quick_check` says ok. It only reads, so a damaged file is refused
 * before anything (such as switching to WAL, which rewrites the header) touches it.
 */
function checkIntegrity(db: Database, path: string): void {
  const rows = db.pragma('quick_check') as Array<{ quick_check: string }>;
  if (rows.length === 1 && rows[0]!.quick_check === 'ok') return;
  throw corrupt(path, rows.slice(0, 3).map((r) => r.quick_check.replace(/\s+/g, ' ').trim()).join('; '));
}

/** SQLite gives -wal and -shm the main file's mode; this makes sure, without failing the open. */
function tightenSidecars(path: string, log: Logger): void {
  for (const suffix of ['-wal', '-shm']) {
    try {
      if (existsSync(path + suffix)) chmodSync(path + suffix, 0o600);
    } catch (err) {
      log.warn({ err, file: path + suffix }, 'could not restrict the mode of a database file to 0600');
    }
  }
}

/**
 * Opens (creating if needed) the signalbox SQLite database at `path`, or an in-memory one for
 * `':memory:'`: WAL journal, `synchronous` per `durability`, a busy timeout, foreign keys on,
 * integrity checked, schema migrated to the current version.
 *
 * Called once at startup; the connection is shared by every store and closed by the caller.
 * Throws a {@link StorageError}: `SB_ERR_STORAGE_CORRUPT` for a file that is not a SQLite
 * database or fails its check (the file is never recreated or written),
 * `SB_ERR_STORAGE_VERSION` for a schema newer than this code, others for I/O and permission
 * problems. The caller reports it and does not start.
 */
export function openDatabase(path: string, options: OpenDatabaseOptions): Database {
  const { log } = options;
  const memory = path === MEMORY;
  const readonly = options.readonly === true && !memory;
  let created = false;
  let db: Database | undefined;
  try {
    if (!memory && !readonly) created = createPrivateFile(path);
    db = new BetterSqlite3(path, { readonly, fileMustExist: readonly || !memory });
    // No file access yet: set before anything that may need to wait for a lock.
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS))}`);
    // The first read of the header: a file that is not a database fails here, untouched.
    if (options.quickCheck !== false) checkIntegrity(db, path);
    else db.pragma('schema_version');
    if (readonly) {
      const version = db.pragma('user_version', { simple: true }) as number;
      const latest = options.migrations?.length ?? SCHEMA_VERSION;
      if (version > latest) {
        throw new StorageError(
          'SB_ERR_STORAGE_VERSION',
          `${path}: database schema version ${version} is newer than this signalbox supports (${latest}); upgrade signalbox`,
          { file: path, retryable: false },
        );
      }
    } else {
      const mode = db.pragma('journal_mode = WAL', { simple: true }) as string;
      // WAL needs shared memory; a network file system may refuse it. Still correct, slower.
      if (!memory && mode !== 'wal') log.warn({ file: path, journalMode: mode }, 'database could not switch to WAL');
      db.pragma(`synchronous = ${options.durability === 'full' ? 'FULL' : 'NORMAL'}`);
    }
    db.pragma('foreign_keys = ON');
    // 32 MiB of page cache (the default is 2 MiB): the history and outbox indexes stay in
    // memory under a steady insert load instead of being re-read.
    db.pragma(`cache_size = -${CACHE_KIB}`);
    if (!readonly) {
      migrate(db, { file: path, log, ...(options.migrations ? { migrations: options.migrations } : {}) });
      if (created) tightenSidecars(path, log);
    }
    log.debug({ file: path, durability: options.durability, readonly }, 'database open');
    return db;
  } catch (err) {
    try {
      db?.close();
    } catch {
      // Closing a connection that failed to open can fail too; the original error matters.
    }
    throw toStorageError(err, path);
  }
}
