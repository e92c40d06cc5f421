import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { StorageError } from '../../../src/storage/errors.js';
import { HistoryStore, RETENTION_CHUNK_ROWS, type HistoryRow } from '../../../src/storage/history.js';
import { FakeClock } from '../../helpers/fake-clock.js';

const log = silentLogger();
let dir: string;
let path: string;
let db: Database;
let clock: FakeClock;
let store: HistoryStore;

function row(topic: string, time: number, extra: Partial<HistoryRow> = {}): HistoryRow {
  return { time, topic, payload: Buffer.from(`{"t":${time}}`), qos: 1, retain: false, ruleId: 'rule-a', clientId: 'dev-1', ...extra };
}

function countOnDisk(): number {
  // A second connection sees only committed rows.
  const reader = new BetterSqlite3(path, { readonly: true });
  try {
    return reader.prepare('SELECT count(*) FROM history').pluck().get() as number;
  } finally {
    reader.close();
  }
}

async function seed(rows: HistoryRow[]): Promise<void> {
  const done = Promise.all(rows.map((r) => store.append(r)));
  await store.flush();
  await done;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'signalbox-history-'));
  path = join(dir, 'signalbox.db');
  db = openDatabase(path, { durability: 'normal', log });
  clock = new FakeClock();
  store = new HistoryStore(db, { clock, log });
});

afterEach(async () => {
  await store.close().catch(() => undefined);
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('HistoryStore.append', () => {
  it('stores 2,500 appends in batches and resolves each promise only after its batch committed', async () => {
    const settled: boolean[] = new Array(2500).fill(false);
    const promises = Array.from({ length: 2500 }, (_, i) => store.append(row(`s/${i % 7}`, 1000 + i)).then(() => (settled[i] = true)));
    await Promise.resolve();
    // Two full batches of 1000 committed on the spot; the last 500 wait for the batch delay.
    expect(countOnDisk()).toBe(2000);
    await new Promise((r) => setImmediate(r));
    expect(settled.slice(0, 2000).every(Boolean)).toBe(true);
    expect(settled.slice(2000).some(Boolean)).toBe(false);
    clock.advance(4);
    await new Promise((r) => setImmediate(r));
    expect(settled[2499]).toBe(false);
    clock.advance(1);
    await Promise.all(promises);
    expect(countOnDisk()).toBe(2500);
  });

  it('stores every field as given', async () => {
    const r = row('a/b', 42, { payload: Buffer.from([0, 255, 1]), qos: 2, retain: true, ruleId: 'r9', clientId: 'c9' });
    await seed([r]);
    expect(store.query({ filter: 'a/b' })).toEqual([r]);
  });

  it('rejects the whole batch with SB_ERR_STORAGE_FULL when the disk is full, writes none of it, and recovers', async () => {
    await seed([row('full/before', 1)]);
    const pages = db.pragma('page_count', { simple: true }) as number;
    db.pragma(`max_page_count = ${pages + 3}`);
    const big = Array.from({ length: 50 }, (_, i) => store.append(row('full/big', 10 + i, { payload: Buffer.alloc(8192, 1) })));
    await store.flush().catch(() => undefined);
    const results = await Promise.allSettled(big);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    const reason = (results[0] as PromiseRejectedResult).reason as StorageError;
    expect(reason).toBeInstanceOf(StorageError);
    expect(reason.code).toBe('SB_ERR_STORAGE_FULL');
    expect(reason.retryable).toBe(true);
    expect(countOnDisk()).toBe(1);

    db.pragma('max_page_count = 1073741823');
    await seed(Array.from({ length: 50 }, (_, i) => row('full/big', 10 + i, { payload: Buffer.alloc(8192, 1) })));
    expect(countOnDisk()).toBe(51);
  });

  it('rejects a malformed row on its own, without failing the rest of its batch', async () => {
    const good = store.append(row('m/ok', 1));
    const bad = store.append({ ...row('m/bad', 2), qos: 3 as 0 });
    await expect(bad).rejects.toThrow(/history row for topic 'm\/bad' not stored: qos must be 0, 1 or 2/);
    await store.flush();
    await good;
    expect(countOnDisk()).toBe(1);
  });

  it('rejects appends after close, having flushed what was queued', async () => {
    const pending = store.append(row('c/1', 1));
    await store.close();
    await pending;
    expect(countOnDisk()).toBe(1);
    await expect(store.append(row('c/2', 2))).rejects.toThrow(/closed/);
  });
});

describe('HistoryStore.query', () => {
  beforeEach(async () => {
    await seed([
      row('greenhouse/north/temperature', 100),
      row('greenhouse/south/temperature', 200),
      row('greenhouse/north/humidity', 300),
      row('greenhouse', 400),
      row('greenhouse-b/north/temperature', 500),
      row('greenhouse/north/temperature', 600),
      row('$SYS/broker/load', 700),
      row('garage/door', 800),
    ]);
  });

  const topics = (rows: HistoryRow[]) => rows.map((r) => `${r.topic}@${r.time}`);

  it('finds an exact topic, newest first by default', () => {
    expect(topics(store.query({ filter: 'greenhouse/north/temperature' }))).toEqual([
      'greenhouse/north/temperature@600',
      'greenhouse/north/temperature@100',
    ]);
  });

  it('matches + one level and # the rest, including the parent level, but not look-alike prefixes', () => {
    expect(topics(store.query({ filter: 'greenhouse/+/temperature', order: 'asc' }))).toEqual([
      'greenhouse/north/temperature@100',
      'greenhouse/south/temperature@200',
      'greenhouse/north/temperature@600',
    ]);
    expect(topics(store.query({ filter: 'greenhouse/#', order: 'asc' }))).toEqual([
      'greenhouse/north/temperature@100',
      'greenhouse/south/temperature@200',
      'greenhouse/north/humidity@300',
      'greenhouse@400',
      'greenhouse/north/temperature@600',
    ]);
  });

  it('keeps $ topics out of # and + at the first level', () => {
    expect(store.query({ filter: '#' }).map((r) => r.topic)).not.toContain('$SYS/broker/load');
    expect(store.query({ filter: '+/broker/load' })).toEqual([]);
    expect(store.query({ filter: '$SYS/#' }).map((r) => r.topic)).toEqual(['$SYS/broker/load']);
  });

  it('limits to [since, until) and to limit, in either order', () => {
    expect(topics(store.query({ filter: '#', since: 200, until: 500, order: 'asc' }))).toEqual([
      'greenhouse/south/temperature@200',
      'greenhouse/north/humidity@300',
      'greenhouse@400',
    ]);
    expect(topics(store.query({ filter: '#', limit: 2 }))).toEqual(['garage/door@800', 'greenhouse/north/temperature@600']);
    expect(topics(store.query({ filter: '#', limit: 2, order: 'asc' }))).toEqual([
      'greenhouse/north/temperature@100',
      'greenhouse/south/temperature@200',
    ]);
  });

  it('rejects an invalid filter or limit with a message naming it', () => {
    expect(() => store.query({ filter: 'a/b#' })).toThrow(/invalid history filter 'a\/b#'/);
    expect(() => store.query({ filter: '#', limit: 10_001 })).toThrow(/from 1 to 10000, got 10001/);
    expect(() => store.query({ filter: '#', limit: 0 })).toThrow(RangeError);
  });
});

describe('HistoryStore.query paging', () => {
  it('keeps fetching past rows the JS filter discards until limit rows matched, with equal times in order', async () => {
    const rows: HistoryRow[] = [];
    // 3,000 look-alike rows (in the index range of 'a/+/x', rejected by matchesFilter) between
    // the matching ones, many sharing a timestamp so the (time, id) cursor must break ties.
    for (let i = 0; i < 3000; i++) rows.push(row(`a/${i}/y`, Math.floor(i / 10)));
    for (let i = 0; i < 30; i++) rows.push(row(`a/${i}/x`, i * 10));
    for (let i = 0; i < 3000; i++) rows.push(row(`a/${i}/z`, 300 + Math.floor(i / 10)));
    await seed(rows);
    const desc = store.query({ filter: 'a/+/x', limit: 25 });
    expect(desc.map((r) => r.time)).toEqual(Array.from({ length: 25 }, (_, i) => (29 - i) * 10));
    const asc = store.query({ filter: 'a/+/x', limit: 1000, order: 'asc' });
    expect(asc.map((r) => r.topic)).toEqual(Array.from({ length: 30 }, (_, i) => `a/${i}/x`));
    const all = store.query({ filter: 'a/#', limit: 10_000, order: 'asc' });
    expect(all).toHaveLength(6030);
    expect(new Set(all.map((r) => `${r.topic}@${r.time}`)).size).toBe(6030);
  });

  it('neither skips nor repeats rows sharing a timestamp across a page boundary', async () => {
    // 10 timestamps x 70 rows, half matching: pages of 300 rows end inside a timestamp.
    const rows: HistoryRow[] = [];
    for (let i = 0; i < 700; i++) rows.push(row(`p/${i}/${i % 2 === 0 ? 'x' : 'y'}`, Math.floor(i / 70)));
    await seed(rows);
    const matching = rows.filter((r) => r.topic.endsWith('/x')).map((r) => r.topic);
    expect(store.query({ filter: 'p/+/x', limit: 300, order: 'asc' }).map((r) => r.topic)).toEqual(matching.slice(0, 300));
    expect(store.query({ filter: 'p/+/x', limit: 300 }).map((r) => r.topic)).toEqual(matching.reverse().slice(0, 300));
  });
});

describe('HistoryStore retention', () => {
  it('deletes rows older than now - retention in chunks and returns how many', async () => {
    const now = clock.now();
    const old = Array.from({ length: RETENTION_CHUNK_ROWS * 2 + 10 }, (_, i) => row('r/old', now - 10_000 - i));
    await seed([...old, row('r/new', now - 10), row('r/new', now)]);
    expect(store.enforceRetention(5_000)).toBe(old.length);
    expect(store.query({ filter: 'r/#' }).map((r) => r.topic)).toEqual(['r/new', 'r/new']);
  });

  it('runs in the background on the clock, one chunk per tick, and logs what it removed', async () => {
    const lines: string[] = [];
    const recording = pino({ level: 'info' }, { write: (s: string) => lines.push(s) });
    await store.close();
    store = new HistoryStore(db, { clock, log: recording });
    const day = 86_400_000;
    const start = clock.now();
    await seed(Array.from({ length: RETENTION_CHUNK_ROWS + 100 }, (_, i) => row('bg/x', start - i)));
    store.startRetention(day, 60_000);
    clock.advance(day - 60_000);
    expect(countOnDisk()).toBe(RETENTION_CHUNK_ROWS + 100);
    // The pass at start + 1 day deletes rows older than start: all but the one at `start`.
    clock.advance(60_000);
    expect(countOnDisk()).toBe(1);
    expect(lines.map((l) => JSON.parse(l) as { msg: string; removed?: number })).toContainEqual(
      expect.objectContaining({ msg: 'history retention removed old rows', removed: RETENTION_CHUNK_ROWS + 99 }),
    );
    store.stopRetention();
    expect(clock.pending).toBe(0);
  });
});
