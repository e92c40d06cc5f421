import type BetterSqlite3 from 'better-sqlite3';
import type { Clock, TimerHandle } from '../clock.js';
import type { Logger } from '../log.js';
import { StorageError, toStorageError } from './errors.js';

/** A write that runs inside the batch's transaction: `fn(arg)`, synchronous (better-sqlite3). */
export type WriteOp<T> = (arg: T) => void;

export interface WriteBatcherOptions {
  clock: Clock;
  log: Logger;
  /** Commit as soon as this many writes are queued. Default {@link DEFAULT_MAX_BATCH_OPS}. */
  maxBatchOps?: number;
  /**
   * Commit at most this many ms after the first write of a batch was queued; 0 commits at the
   * end of the current event-loop turn (setImmediate). Default {@link DEFAULT_MAX_BATCH_DELAY_MS}.
   */
  maxBatchDelayMs?: number;
}

/**
 * Default {@link WriteBatcherOptions.maxBatchOps}: large enough that a burst of thousands of
 * messages commits in a few transactions, small enough that one commit holds the event loop
 * for only a few milliseconds.
 */
export const DEFAULT_MAX_BATCH_OPS = 2000;
/**
 * Default {@link WriteBatcherOptions.maxBatchDelayMs}: 0, commit at the end of the event-loop
 * turn. Everything that arrived in one read from the sockets shares a transaction, and a
 * lone message waits for no timer (see bench/ for the measurement behind this).
 */
export const DEFAULT_MAX_BATCH_DELAY_MS = 0;

interface Batch {
  fns: WriteOp<never>[];
  args: unknown[];
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: StorageError) => void;
}

function ignore(): void {}

/**
 * Group commit: every write queued while a batch is open runs in one SQLite transaction, and
 * all of them share one promise that settles when that transaction has committed (or failed,
 * in which case none of it was written). Everything one message causes — retained update,
 * queued deliveries, history rows, outbox rows, dead letters — goes through one batcher, so
 * "acknowledged" can mean "all of it is on disk".
 */
export class WriteBatcher {
  private readonly maxBatchOps: number;
  private readonly maxBatchDelayMs: number;
  private readonly runBatch: (batch: Batch) => void;
  private batch: Batch | undefined;
  private timer: TimerHandle | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private closed = false;
  /** Bound once so scheduling a commit allocates no closure per batch. */
  private readonly onTimer = (): void => {
    this.timer = undefined;
    this.immediate = undefined;
    this.commit();
  };
  /** Called synchronously after every transaction: true when it committed, false when it rolled back. */
  private readonly settledListeners: Array<(committed: boolean) => void> = [];
  /** Number of transactions committed, for metrics and benchmarks. */
  commits = 0;
  failures = 0;

  constructor(
    private readonly db: BetterSqlite3.Database,
    private readonly options: WriteBatcherOptions,
  ) {
    this.maxBatchOps = Math.max(1, options.maxBatchOps ?? DEFAULT_MAX_BATCH_OPS);
    this.maxBatchDelayMs = Math.max(0, options.maxBatchDelayMs ?? DEFAULT_MAX_BATCH_DELAY_MS);
    // Hot path: a plain loop over parallel arrays inside one transaction.
    this.runBatch = db.transaction((batch: Batch) => {
      const { fns, args } = batch;
      for (let i = 0; i < fns.length; i++) (fns[i] as WriteOp<unknown>)(args[i]);
    });
  }

  /**
   * Queues `fn(arg)` for the open batch. Returns the batch's promise: it resolves once the
   * transaction holding this write committed and rejects with a StorageError when it failed
   * (nothing of the batch was written; retry when `retryable`).
   */
  write<T>(fn: WriteOp<T>, arg: T): Promise<void> {
    if (this.closed) return Promise.reject(new StorageError('SB_ERR_STORAGE_IO', `${this.db.name}: storage is closed`, { file: this.db.name, retryable: false }));
    let batch = this.batch;
    if (batch === undefined) {
      batch = this.open();
    }
    batch.fns.push(fn as WriteOp<never>);
    batch.args.push(arg);
    if (batch.fns.length >= this.maxBatchOps) this.commit();
    return batch.promise;
  }

  /**
   * Registers `listener` to run synchronously right after each transaction ends, before any
   * write's promise settles: with true when it committed, false when it rolled back. Lets a
   * store keep an in-memory view of exactly what is committed.
   */
  onSettled(listener: (committed: boolean) => void): void {
    this.settledListeners.push(listener);
  }

  /** The open batch's promise when writes are waiting; undefined when nothing is. */
  pending(): Promise<void> | undefined {
    return this.batch?.promise;
  }

  private open(): Batch {
    let resolve!: () => void;
    let reject!: (err: StorageError) => void;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // A failed commit is reported to every writer; nobody waiting must not crash the process.
    promise.catch(ignore);
    const batch: Batch = { fns: [], args: [], promise, resolve, reject };
    this.batch = batch;
    if (this.maxBatchDelayMs === 0) this.immediate = setImmediate(this.onTimer);
    else this.timer = this.options.clock.setTimeout(this.onTimer, this.maxBatchDelayMs);
    return batch;
  }

  /** Commits the open batch now (synchronously). */
  commit(): void {
    const batch = this.batch;
    if (batch === undefined) return;
    this.batch = undefined;
    if (this.timer !== undefined) this.options.clock.clearTimeout(this.timer);
    if (this.immediate !== undefined) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    try {
      this.runBatch(batch);
    } catch (err) {
      this.failures++;
      const error = toStorageError(err, this.db.name);
      this.options.log.error({ err: error, code: error.code, writes: batch.fns.length }, 'storage commit failed; nothing of this batch was written');
      for (const listener of this.settledListeners) listener(false);
      batch.reject(error);
      return;
    }
    this.commits++;
    for (const listener of this.settledListeners) listener(true);
    batch.resolve();
  }

  /** Commits what is queued; resolves when done (rejects like {@link write}). */
  flush(): Promise<void> {
    const batch = this.batch;
    if (batch === undefined) return Promise.resolve();
    this.commit();
    return batch.promise;
  }

  /** Flushes; later writes reject. The database stays open for its owner to close. */
  async close(): Promise<void> {
    const done = this.flush();
    this.closed = true;
    await done;
  }
}
