/**
 * Typed storage errors. Every failure that leaves `src/storage/` is a {@link StorageError}
 * with a stable code, the database file it concerns, and whether trying again can help, so
 * callers decide between "retry with backoff" and "stop and tell the operator" without
 * parsing SQLite messages.
 */

/**
 * Every storage error code and what it means; this text is the documentation (a test checks
 * each code is listed here).
 */
export const STORAGE_ERROR_CODES = {
  SB_ERR_STORAGE_CORRUPT:
    'The file is not a SQLite database or failed its integrity check. signalbox never recreates or overwrites it: restore a backup or move it aside.',
  SB_ERR_STORAGE_VERSION:
    'The database schema was written by a newer signalbox than this one. Upgrade signalbox, or restore a backup made with this version.',
  SB_ERR_STORAGE_FULL:
    'The disk (or the database size limit) is full (SQLITE_FULL). Nothing of the failed transaction was written; writes succeed again once space is freed.',
  SB_ERR_STORAGE_READONLY:
    'The database or its folder cannot be written (SQLITE_READONLY, read-only file system, or missing permission).',
  SB_ERR_STORAGE_IO: 'Any other storage failure: an I/O error, a lock held too long (SQLITE_BUSY), or a file that cannot be opened.',
  SB_ERR_OUTBOX_FULL:
    "An output's outbox reached its maxBytes or maxAge with overflow: block. QoS 1/2 messages routed to it are not acknowledged (MQTT 5: reason 0x97) until it drains.",
} as const;

/** A storage error code, one of the keys of {@link STORAGE_ERROR_CODES}. */
export type StorageErrorCode = keyof typeof STORAGE_ERROR_CODES;

/** Extra facts about a {@link StorageError}. */
export interface StorageErrorOptions {
  /** The database file concerned (`:memory:` for an in-memory database). */
  file: string;
  /** True when the same operation may succeed later without operator action. */
  retryable: boolean;
  /** The SQLite result code (`SQLITE_FULL`) or errno code (`ENOSPC`) behind it, if any. */
  sqliteCode?: string;
  /** The original error. */
  cause?: unknown;
}

/**
 * A storage failure with a code from {@link STORAGE_ERROR_CODES}. Thrown by `openDatabase`
 * and by synchronous store methods; the rejection reason of asynchronous ones. When
 * `retryable` is true the caller keeps the data and tries again later (with backoff);
 * otherwise it reports the error and stops using the database.
 */
export class StorageError extends Error {
  override readonly name = 'StorageError';
  /** Stable code, documented in {@link STORAGE_ERROR_CODES}. */
  readonly code: StorageErrorCode;
  /** True when the same operation may succeed later without operator action. */
  readonly retryable: boolean;
  /** The database file concerned. */
  readonly file: string;
  /** The SQLite result code or errno code behind this error, if any. */
  readonly sqliteCode: string | undefined;

  constructor(code: StorageErrorCode, message: string, options: StorageErrorOptions) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryable = options.retryable;
    this.file = options.file;
    this.sqliteCode = options.sqliteCode;
  }
}

interface Mapping {
  code: StorageErrorCode;
  retryable: boolean;
  hint: string;
}

/**
 * Maps a result code to a storage code. better-sqlite3 reports extended result codes
 * (`SQLITE_IOERR_WRITE`, `SQLITE_READONLY_DBMOVED`), so primary codes are matched as prefixes.
 * Node's errno codes cover the folder and file creation done before SQLite opens the file.
 */
function classify(code: string): Mapping {
  if (code.startsWith('SQLITE_FULL') || code === 'ENOSPC' || code === 'EDQUOT') {
    // Space can come back (retention, an operator), and SQLite rolled the transaction back.
    return { code: 'SB_ERR_STORAGE_FULL', retryable: true, hint: 'disk or database size limit is full' };
  }
  if (code.startsWith('SQLITE_READONLY') || code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
    return { code: 'SB_ERR_STORAGE_READONLY', retryable: false, hint: 'cannot be written; check the file system and its permissions' };
  }
  if (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB')) {
    return {
      code: 'SB_ERR_STORAGE_CORRUPT',
      retryable: false,
      hint: 'is not a SQLite database or is corrupt; restore a backup or move the file aside',
    };
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    // Another connection held the lock past busy_timeout; it will let go.
    return { code: 'SB_ERR_STORAGE_IO', retryable: true, hint: 'is locked by another connection' };
  }
  if (code.startsWith('SQLITE_IOERR') || code === 'EIO') {
    return { code: 'SB_ERR_STORAGE_IO', retryable: true, hint: 'I/O error' };
  }
  return { code: 'SB_ERR_STORAGE_IO', retryable: false, hint: 'storage error' };
}

/**
 * Turns anything thrown by better-sqlite3 or by `node:fs` while touching `file` into a
 * {@link StorageError} (a StorageError passes through unchanged). Called at every boundary
 * where a SQLite call can fail, so callers only ever see StorageError.
 */
export function toStorageError(err: unknown, file: string): StorageError {
  if (err instanceof StorageError) return err;
  const raw = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  const sqliteCode = typeof raw === 'string' ? raw : undefined;
  const detail = err instanceof Error ? err.message : String(err);
  const mapping = classify(sqliteCode ?? '');
  const message = `${file}: ${mapping.hint} (${sqliteCode ?? 'error'}: ${detail})`;
  return new StorageError(mapping.code, message, { file, retryable: mapping.retryable, sqliteCode, cause: err });
}
