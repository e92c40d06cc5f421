import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { STORAGE_ERROR_CODES, StorageError, toStorageError } from '../../../src/storage/errors.js';
import { MIGRATIONS, SCHEMA_VERSION, migrate } from '../../../src/storage/migrations.js';

const log = silentLogger();
let dir: string;
const open: Database[] = [];

function openHere(path: string, durability: 'normal' | 'full' = 'normal'): Database {
  const db = openDatabase(path, { durability, log });
  open.push(db);
  return db;
}

function openError(path: string, options: Partial<Parameters<typeof openDatabase>[1]> = {}): StorageError {
  try {
    open.push(openDatabase(path, { durability: 'normal', log, ...options }));
  } catch (err) {
    expect(err).toBeInstanceOf(StorageError);
    return err as StorageError;
  }
  throw new Error(`expected opening ${path} to fail`);
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'signalbox-db-'));
});

afterEach(() => {
  for (const db of open.splice(0)) if (db.open) db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('openDatabase', () => {
  it('creates the parent folder and a file only its owner can read, with WAL sidecars likewise', () => {
    const path = join(dir, 'nested', 'data', 'signalbox.db');
    const db = openHere(path);
    db.prepare('INSERT INTO dead_letters (time, rule_id, error, topic, payload, qos, retain, client_id, attempts) VALUES (1, ?, ?, ?, ?, 0, 0, ?, 1)').run('r', 'e', 't', Buffer.from('p'), 'c');
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(statSync(`${path}-wal`).mode & 0o777).toBe(0o600);
    expect(statSync(`${path}-shm`).mode & 0o777).toBe(0o600);
  });

  it('turns on WAL, the chosen synchronous level, foreign keys and a busy timeout', () => {
    const normal = openHere(join(dir, 'a.db'), 'normal');
    expect(normal.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(normal.pragma('synchronous', { simple: true })).toBe(1);
    expect(normal.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(normal.pragma('busy_timeout', { simple: true })).toBeGreaterThan(0);
    const full = openHere(join(dir, 'b.db'), 'full');
    expect(full.pragma('synchronous', { simple: true })).toBe(2);
  });

  it('creates the schema once and reopens an existing database without migrating again', () => {
    const path = join(dir, 'signalbox.db');
    const db = openHere(path);
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    db.prepare('INSERT INTO history (time, topic, payload, qos, retain, rule_id, client_id) VALUES (1, ?, ?, 1, 0, ?, ?)').run('a/b', Buffer.from('x'), 'r', 'c');
    db.close();
    const again = openHere(path);
    expect(again.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION);
    expect(again.prepare('SELECT count(*) FROM history').pluck().get()).toBe(1);
  });

  it('opens an in-memory database with the schema', () => {
    const db = openHere(':memory:');
    expect(db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`).pluck().all()).toEqual(
      expect.arrayContaining(['dead_letters', 'history']),
    );
    expect(existsSync(':memory:')).toBe(false);
  });

  it('refuses a file that is not a SQLite database, names it, and leaves it byte for byte as it was', () => {
    const path = join(dir, 'notes.db');
    const content = Buffer.from('these are my notes, not a database\n'.repeat(40));
    writeFileSync(path, content);
    const err = openError(path);
    expect(err.code).toBe('SB_ERR_STORAGE_CORRUPT');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(path);
    expect(readFileSync(path).equals(content)).toBe(true);
    expect(existsSync(`${path}-wal`)).toBe(false);
  });

  it('refuses a database whose pages are damaged, and does not write to it', () => {
    const path = join(dir, 'damaged.db');
    const raw = new BetterSqlite3(path);
    raw.exec('CREATE TABLE t (x TEXT); CREATE INDEX t_x ON t (x)');
    const insert = raw.prepare('INSERT INTO t VALUES (?)');
    raw.transaction(() => {
      for (let i = 0; i < 5000; i++) insert.run(`row ${i} ${'x'.repeat(50)}`);
    })();
    raw.close();
    const bytes = readFileSync(path);
    bytes.fill(0x41, 4096 * 3, 4096 * 3 + 2000);
    writeFileSync(path, bytes);
    const err = openError(path);
    expect(err.code).toBe('SB_ERR_STORAGE_CORRUPT');
    expect(err.message).toContain(path);
    expect(readFileSync(path).equals(bytes)).toBe(true);
  });

  it('refuses a database written by a newer signalbox, saying which versions', () => {
    const path = join(dir, 'future.db');
    openHere(path).pragma(`user_version = ${SCHEMA_VERSION + 5}`);
    open.pop()!.close();
    const err = openError(path);
    expect(err.code).toBe('SB_ERR_STORAGE_VERSION');
    expect(err.message).toContain(path);
    expect(err.message).toContain(`version ${SCHEMA_VERSION + 5} is newer than this signalbox supports (${SCHEMA_VERSION})`);
    expect(openError(path, { readonly: true }).code).toBe('SB_ERR_STORAGE_VERSION');
  });

  it('opens read-only without creating or writing anything', () => {
    const missing = join(dir, 'missing.db');
    expect(openError(missing, { readonly: true }).code).toBe('SB_ERR_STORAGE_IO');
    expect(existsSync(missing)).toBe(false);
    const path = join(dir, 'ro.db');
    openHere(path);
    open.pop()!.close();
    const db = openDatabase(path, { durability: 'normal', log, readonly: true });
    open.push(db);
    expect(() => db.prepare('DELETE FROM history').run()).toThrow(/readonly/i);
  });
});

describe('migrate', () => {
  it('applies each later step in its own transaction and keeps the last good version when one fails', () => {
    const db = openHere(':memory:');
    const steps = [...MIGRATIONS, { id: SCHEMA_VERSION + 1, name: 'ok', sql: 'CREATE TABLE extra (x)' }];
    const broken = [...steps, { id: SCHEMA_VERSION + 2, name: 'broken', sql: 'CREATE TABLE half (x); CREATE TABLE oops (' }];
    expect(() => migrate(db, { file: ':memory:', log, migrations: broken })).toThrow(StorageError);
    expect(db.pragma('user_version', { simple: true })).toBe(SCHEMA_VERSION + 1);
    const tables = db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).pluck().all();
    expect(tables).toContain('extra');
    expect(tables).not.toContain('half');
    expect(migrate(db, { file: ':memory:', log, migrations: steps })).toEqual({ from: SCHEMA_VERSION + 1, to: SCHEMA_VERSION + 1 });
  });

  it('rejects a migration list with a gap as a programming error', () => {
    const db = openHere(':memory:');
    expect(() => migrate(db, { file: ':memory:', log, migrations: [{ id: 2, name: 'gap', sql: '' }] })).toThrow(/ids must be 1, 2, 3/);
  });
});

describe('toStorageError', () => {
  it.each([
    ['SQLITE_FULL', 'SB_ERR_STORAGE_FULL', true],
    ['ENOSPC', 'SB_ERR_STORAGE_FULL', true],
    ['SQLITE_READONLY_DBMOVED', 'SB_ERR_STORAGE_READONLY', false],
    ['EACCES', 'SB_ERR_STORAGE_READONLY', false],
    ['SQLITE_NOTADB', 'SB_ERR_STORAGE_CORRUPT', false],
    ['SQLITE_CORRUPT', 'SB_ERR_STORAGE_CORRUPT', false],
    ['SQLITE_IOERR_WRITE', 'SB_ERR_STORAGE_IO', true],
    ['SQLITE_BUSY', 'SB_ERR_STORAGE_IO', true],
    ['SQLITE_CANTOPEN', 'SB_ERR_STORAGE_IO', false],
  ])('maps %s to %s (retryable: %s), naming the file', (sqliteCode, code, retryable) => {
    const err = toStorageError(Object.assign(new Error('boom'), { code: sqliteCode }), 'data/x.db');
    expect(err).toMatchObject({ code, retryable, sqliteCode, file: 'data/x.db' });
    expect(err.message).toContain('data/x.db');
    expect(Object.keys(STORAGE_ERROR_CODES)).toContain(err.code);
  });
});
