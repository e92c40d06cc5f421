import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { WriteBatcher, type WriteBatcherOptions } from '../../../src/storage/batcher.js';
import { StorageError } from '../../../src/storage/errors.js';
import { FakeClock } from '../../helpers/fake-clock.js';

let db: BetterSqlite3.Database;
let clock: FakeClock;
let insert: (n: number) => void;
/** For each write: whether it ran inside a transaction, and which one (by the first write's n). */
let seen: Array<{ n: number; inTransaction: boolean }>;

function rows(): number[] {
  return (db.prepare('SELECT n FROM t ORDER BY n').all() as { n: number }[]).map((r) => r.n);
}

function batcher(options: Partial<WriteBatcherOptions> = {}): WriteBatcher {
  return new WriteBatcher(db, { clock, log: silentLogger(), ...options });
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

beforeEach(() => {
  db = new BetterSqlite3(':memory:');
  db.exec('CREATE TABLE t (n INTEGER PRIMARY KEY)');
  clock = new FakeClock();
  seen = [];
  const stmt = db.prepare('INSERT INTO t (n) VALUES (?)');
  insert = (n) => {
    seen.push({ n, inTransaction: db.inTransaction });
    stmt.run(n);
  };
});

afterEach(() => {
  db.close();
});

describe('WriteBatcher', () => {
  it('runs every write queued in one event-loop turn in one transaction, sharing one promise', async () => {
    const b = batcher();
    const promises = [1, 2, 3, 4].map((n) => b.write(insert, n));
    expect(new Set(promises).size).toBe(1);
    // Nothing runs before the end of the turn.
    expect(seen).toEqual([]);
    expect(rows()).toEqual([]);
    await promises[0];
    expect(seen.map((s) => s.inTransaction)).toEqual([true, true, true, true]);
    expect(rows()).toEqual([1, 2, 3, 4]);
    expect(b.commits).toBe(1);
  });

  it('starts a new batch with a new promise for writes after the commit', async () => {
    const b = batcher();
    const first = b.write(insert, 1);
    await first;
    const second = b.write(insert, 2);
    expect(second).not.toBe(first);
    await second;
    expect(rows()).toEqual([1, 2]);
    expect(b.commits).toBe(2);
  });

  it('commits as soon as maxBatchOps writes are queued, without waiting for the turn to end', async () => {
    const b = batcher({ maxBatchOps: 3 });
    const p1 = b.write(insert, 1);
    b.write(insert, 2);
    const p3 = b.write(insert, 3);
    expect(p3).toBe(p1);
    // Committed synchronously by the third write.
    expect(rows()).toEqual([1, 2, 3]);
    expect(b.commits).toBe(1);
    expect(b.pending()).toBeUndefined();
    const p4 = b.write(insert, 4);
    expect(p4).not.toBe(p1);
    await Promise.all([p1, p4]);
    expect(rows()).toEqual([1, 2, 3, 4]);
    expect(b.commits).toBe(2);
  });

  it('with maxBatchDelayMs, commits that many ms after the first write of the batch', async () => {
    const b = batcher({ maxBatchDelayMs: 50 });
    const p = b.write(insert, 1);
    clock.advance(30);
    b.write(insert, 2);
    clock.advance(19);
    expect(rows()).toEqual([]);
    clock.advance(1);
    expect(rows()).toEqual([1, 2]);
    await p;
    expect(b.commits).toBe(1);
  });

  it('rejects the whole batch with a StorageError when one write fails, and writes none of it', async () => {
    db.prepare('INSERT INTO t (n) VALUES (2)').run();
    const b = batcher();
    const p = b.write(insert, 1);
    b.write(insert, 2); // primary key taken: SQLITE_CONSTRAINT
    b.write(insert, 3);
    const err = await rejection(p);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).sqliteCode).toMatch(/^SQLITE_CONSTRAINT/);
    expect((err as StorageError).file).toBe(':memory:');
    // Write 1 ran before the failure and was rolled back; write 3 never ran.
    expect(rows()).toEqual([2]);
    expect(b.failures).toBe(1);
    expect(b.commits).toBe(0);
  });

  it('turns an error thrown by a write function into a StorageError for the batch', async () => {
    const b = batcher();
    const p = b.write(insert, 1);
    b.write(() => {
      throw new Error('boom');
    }, undefined);
    const err = await rejection(p);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).message).toContain('boom');
    expect(rows()).toEqual([]);
  });

  it('commits later batches normally after a failed one', async () => {
    const b = batcher();
    const bad = b.write(() => {
      throw new Error('boom');
    }, undefined);
    await rejection(bad);
    await b.write(insert, 7);
    expect(rows()).toEqual([7]);
    expect(b.commits).toBe(1);
    expect(b.failures).toBe(1);
  });

  it('does not raise an unhandled rejection for a failed batch nobody awaits', async () => {
    const b = batcher();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      void b.write(() => {
        throw new Error('boom');
      }, undefined);
      b.commit(); // fails; the batch's promise rejects with nobody waiting
      await b.write(insert, 1);
      // Unhandled rejections are reported after the microtask queue drains.
      await new Promise<void>((resolve) => setImmediate(resolve));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('reports no pending promise when idle, the open batch\'s promise while writes wait, and none after the commit', async () => {
    const b = batcher();
    expect(b.pending()).toBeUndefined();
    const p = b.write(insert, 1);
    expect(b.pending()).toBe(p);
    await p;
    expect(b.pending()).toBeUndefined();
  });

  it('flush() commits what is queued at once and resolves immediately when idle', async () => {
    const b = batcher({ maxBatchDelayMs: 10_000 });
    await b.flush();
    b.write(insert, 1);
    const flushed = b.flush();
    expect(rows()).toEqual([1]);
    await flushed;
    expect(clock.pending).toBe(0); // the batch timer was cancelled
  });

  it('close() commits what is queued and rejects later writes', async () => {
    const b = batcher({ maxBatchDelayMs: 10_000 });
    const p = b.write(insert, 1);
    await b.close();
    await p;
    expect(rows()).toEqual([1]);
    await expect(b.write(insert, 2)).rejects.toThrow(/closed/);
    expect(rows()).toEqual([1]);
    expect(b.pending()).toBeUndefined();
  });

  it('close() rejects when the last batch fails', async () => {
    const b = batcher({ maxBatchDelayMs: 10_000 });
    b.write(() => {
      throw new Error('boom');
    }, undefined);
    expect(await rejection(b.close())).toBeInstanceOf(StorageError);
  });

  // src/storage/errors.ts: "Every failure that leaves src/storage/ is a StorageError", and
  // write() promises to reject with one; callers branch on `code` and `retryable`.
  it('rejects writes after close() with a StorageError that is not retryable', async () => {
    const b = batcher();
    await b.close();
    const err = await rejection(b.write(insert, 1));
    expect(err).toBeInstanceOf(StorageError);
    expect((err as StorageError).retryable).toBe(false);
  });
});
