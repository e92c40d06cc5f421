import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type BetterSqlite3 from 'better-sqlite3';
import type { Logger } from '../log.js';

/**
 * How often the checkpoint thread copies the write-ahead log into the database file. About
 * what SQLite's own auto-checkpoint (every 1,000 pages) does under a heavy write load.
 */
export const CHECKPOINT_INTERVAL_MS = 200;
/**
 * The writer's own auto-checkpoint, kept as a backstop (64 MiB of 4 KiB pages): it only
 * fires when the checkpoint thread falls far behind or is gone.
 */
export const BACKSTOP_PAGES = 16_384;
/** SQLite's default auto-checkpoint, restored when the checkpoint thread stops early. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;
const CLOSE_TIMEOUT_MS = 2000;

export interface CheckpointerOptions {
  log: Logger;
  /** `synchronous` of the checkpointing connection: it decides the fsyncs around each checkpoint. */
  durability: 'normal' | 'full';
  intervalMs?: number;
}

/**
 * The thread's code, run with `eval` so that it needs no file of its own (the same text
 * serves the built package and the tests, which run the TypeScript sources). It opens the
 * database on a second connection and runs a PASSIVE checkpoint every interval: that never
 * waits for, nor blocks, the writer on the main thread, and it only copies committed pages.
 */
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 0');
db.pragma('synchronous = ' + workerData.synchronous);
db.pragma('wal_autocheckpoint = 0');
let failures = 0;
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
    failures = 0;
  } catch (err) {
    // SQLITE_BUSY and friends: the next round tries again; report only a lasting failure.
    if (++failures === 10) parentPort.postMessage({ type: 'error', message: String((err && err.message) || err) });
  }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m !== 'close') return;
  clearInterval(timer);
  try { db.close(); } catch {}
  parentPort.close();
});
`;

/**
 * Checkpoints the write-ahead log on a thread of its own. A checkpoint copies the pages the
 * log holds into the database file and fsyncs both; done by the writer, as SQLite does by
 * default, it holds the event loop (and every acknowledgement waiting on a commit) for
 * milliseconds at a time under load. Commits stay on the main thread; only the copy moves.
 *
 * The writer's own auto-checkpoint stays on with a high threshold as a backstop, and goes
 * back to SQLite's default if the thread cannot start or dies.
 */
export class Checkpointer {
  private readonly worker: Worker;
  private readonly exited: Promise<void>;
  private closing = false;

  private constructor(
    private readonly db: BetterSqlite3.Database,
    options: CheckpointerOptions,
  ) {
    const { log } = options;
    db.pragma(`wal_autocheckpoint = ${BACKSTOP_PAGES}`);
    this.worker = new Worker(WORKER, {
      eval: true,
      workerData: {
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
        file: db.name,
        synchronous: options.durability === 'full' ? 'FULL' : 'NORMAL',
        intervalMs: options.intervalMs ?? CHECKPOINT_INTERVAL_MS,
      },
      resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 4 },
    });
    // It holds nothing that should keep the process alive.
    this.worker.unref();
    this.worker.on('message', (m: { type: string; message: string }) => {
      if (m.type !== 'error') return;
      log.warn({ file: db.name, error: m.message }, 'background checkpoints keep failing; the writer checkpoints by itself meanwhile');
      this.backstop();
    });
    this.worker.on('error', (err) => log.warn({ err, file: db.name }, 'the checkpoint thread failed; the writer checkpoints by itself'));
    this.exited = new Promise((resolve) =>
      this.worker.once('exit', () => {
        if (!this.closing) this.backstop();
        resolve();
      }),
    );
  }

  /**
   * Starts checkpointing `db` in the background; undefined for a database without a log to
   * checkpoint (in memory, read-only, or not in WAL mode).
   */
  static start(db: BetterSqlite3.Database, options: CheckpointerOptions): Checkpointer | undefined {
    if (db.memory || db.readonly) return undefined;
    if (String(db.pragma('journal_mode', { simple: true })).toLowerCase() !== 'wal') return undefined;
    try {
      return new Checkpointer(db, options);
    } catch (err) {
      options.log.warn({ err, file: db.name }, 'could not start the checkpoint thread; the writer checkpoints by itself');
      return undefined;
    }
  }

  /** The writer takes checkpoints back at SQLite's usual pace. */
  private backstop(): void {
    if (!this.db.open) return;
    this.db.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
  }

  /** Stops the thread and closes its connection; call before closing the database. */
  async close(): Promise<void> {
    if (!this.closing) {
      this.closing = true;
      this.worker.postMessage('close');
    }
    const timer = setTimeout(() => void this.worker.terminate(), CLOSE_TIMEOUT_MS);
    await this.exited;
    clearTimeout(timer);
  }
}
