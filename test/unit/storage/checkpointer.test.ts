import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { BACKSTOP_PAGES, Checkpointer } from '../../../src/storage/checkpointer.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { eventually } from '../../helpers/durable.js';

const log = silentLogger();
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function database(): { db: Database; file: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-checkpoint-'));
  const file = path.join(dir, 'signalbox.db');
  const db = openDatabase(file, { durability: 'normal', log });
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.push(() => {
    if (db.open) db.close();
  });
  return { db, file };
}

/** Commits `n` transactions of about one page each into a scratch table. */
function write(db: Database, n: number): void {
  db.exec('CREATE TABLE IF NOT EXISTS scratch (x BLOB)');
  const insert = db.prepare('INSERT INTO scratch (x) VALUES (?)');
  for (let i = 0; i < n; i++) insert.run(Buffer.alloc(3000, i));
}

describe('the checkpoint thread', () => {
  it('copies committed pages into the database file while the writer only appends to the log', async () => {
    const { db, file } = database();
    const checkpointer = Checkpointer.start(db, { log, durability: 'normal', intervalMs: 10 })!;
    cleanups.push(() => checkpointer.close());
    expect(checkpointer).toBeDefined();
    // The writer's own auto-checkpoint is only a backstop now.
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(BACKSTOP_PAGES);
    const before = statSync(file).size;
    write(db, 500); // ~2 MB: far below the backstop, so only the thread can have copied it
    await eventually(() => statSync(file).size > before + 1_000_000, 'the database file grew by the committed pages');
    // Everything is in the log and in the file: a checkpoint now has nothing left to copy.
    await eventually(() => {
      const [r] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number; checkpointed: number }[];
      return r!.log === r!.checkpointed;
    }, 'the log was fully checkpointed');
    expect(db.prepare('SELECT count(*) FROM scratch').pluck().get()).toBe(500);
  });

  it('stops on close, and the writer takes checkpoints back if the thread goes away', async () => {
    const { db } = database();
    const checkpointer = Checkpointer.start(db, { log, durability: 'full', intervalMs: 10 })!;
    await checkpointer.close();
    await checkpointer.close(); // twice is harmless
    write(db, 10);
    db.close();

    const other = database();
    const second = Checkpointer.start(other.db, { log, durability: 'normal', intervalMs: 10 })!;
    // terminate() stands for a thread that died: the writer's usual auto-checkpoint returns.
    await (second as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
    await eventually(() => other.db.pragma('wal_autocheckpoint', { simple: true }) === 1000, 'the writer checkpoints by itself again');
    await second.close();
  });

  it('is not started for a database in memory', () => {
    const db = openDatabase(':memory:', { durability: 'normal', log });
    cleanups.push(() => void db.close());
    expect(Checkpointer.start(db, { log, durability: 'normal' })).toBeUndefined();
  });
});
