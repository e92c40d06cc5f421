import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { HistoryStore, RETENTION_CHUNK_ROWS, type HistoryRow } from '../../../src/storage/history.js';
import { FakeClock } from '../../helpers/fake-clock.js';

/** history.maxRows, the counters and the hooks of HistoryStore, on a real SQLite file and a fake clock. */

const DAY = 86_400_000;
const INTERVAL = 60_000;
let dir: string;
let db: Database;
let clock: FakeClock;
let store: HistoryStore;
let lines: Array<{ msg: string; removed?: number; maxRows?: number }>;
let stored: HistoryRow[][];

function row(topic: string, time: number): HistoryRow {
  return { time, topic, payload: Buffer.from(`{"t":${time}}`), qos: 1, retain: false, ruleId: 'rule-a', clientId: 'dev-1' };
}

async function seed(rows: HistoryRow[]): Promise<void> {
  const done = Promise.all(rows.map((r) => store.append(r)));
  await store.flush();
  await done;
}

const count = () => db.prepare('SELECT count(*) FROM history').pluck().get() as number;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'signalbox-history-cap-'));
  db = openDatabase(join(dir, 'signalbox.db'), { durability: 'normal', log: silentLogger() });
  clock = new FakeClock();
  lines = [];
  stored = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as (typeof lines)[number]) });
  store = new HistoryStore(db, { clock, log, maxBatchRows: 5000, onStored: (rows) => stored.push([...rows]) });
});

afterEach(async () => {
  await store.close().catch(() => undefined);
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('history.maxRows', () => {
  it('enforceMaxRows deletes the oldest rows (by time) beyond the cap and returns how many', async () => {
    const now = clock.now();
    // Appended out of time order: the cap goes by time, not by insertion.
    await seed([row('a', now - 1), row('b', now - 5), row('c', now - 3), row('d', now - 2), row('e', now - 4)]);
    expect(store.enforceMaxRows(2)).toBe(3);
    expect(store.query({ filter: '#', order: 'asc' }).map((r) => r.topic)).toEqual(['d', 'a']);
    expect(store.enforceMaxRows(2)).toBe(0);
    expect(store.stats.deletedByCap).toBe(3);
  });

  it('the background pass deletes beyond maxRows a chunk per timer tick, after old rows, and logs and counts it', async () => {
    const now = clock.now();
    const total = RETENTION_CHUNK_ROWS * 2 + 500;
    await seed(Array.from({ length: total }, (_, i) => row('x', now - total + i)));
    await seed([row('old', now - 2 * DAY)]);
    store.startRetention(DAY, INTERVAL, 100);
    clock.advance(INTERVAL - 1);
    expect(count()).toBe(total + 1);
    // The pass: the old row, then the excess in three chunks, the 2nd and 3rd each on its own (0 ms) timer.
    let ticks = 0;
    const realSet = clock.setTimeout.bind(clock);
    clock.setTimeout = (fn, ms) => realSet(() => (ticks++, fn()), ms);
    clock.advance(1);
    expect(count()).toBe(100);
    expect(ticks).toBe(2);
    expect(store.query({ filter: '#', limit: 1, order: 'asc' })[0]!.time).toBe(now - 100);
    expect(store.stats).toMatchObject({ deletedByRetention: 1, deletedByCap: total - 100 });
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'history retention removed old rows', removed: 1 }));
    expect(lines).toContainEqual(expect.objectContaining({ msg: 'history reached maxRows: removed the oldest rows', removed: total - 100, maxRows: 100 }));
    store.stopRetention();
    expect(clock.pending).toBe(0);
  });

  it('once counted, a commit a chunk past maxRows starts a pass at once instead of at the next interval', async () => {
    const now = clock.now();
    store.startRetention(DAY, INTERVAL, 10);
    await seed(Array.from({ length: 10 }, (_, i) => row('x', now + i)));
    clock.advance(INTERVAL); // the first pass counts the table: 10 rows, at the cap
    expect(count()).toBe(10);
    await seed(Array.from({ length: RETENTION_CHUNK_ROWS }, (_, i) => row('y', now + 100 + i)));
    // Exactly a chunk past the cap is tolerated; one more row starts a pass.
    clock.advance(0);
    expect(count()).toBe(10 + RETENTION_CHUNK_ROWS);
    await seed([row('z', now + 100_000)]);
    clock.advance(0);
    expect(count()).toBe(10);
    expect(store.query({ filter: '#', limit: 1 })[0]!.topic).toBe('z');
    // Then the regular interval again.
    expect(clock.pending).toBe(1);
  });

  it('rejects a maxRows that is not a positive whole number', () => {
    expect(() => store.startRetention(DAY, INTERVAL, 0)).toThrow(RangeError);
    expect(() => store.startRetention(DAY, INTERVAL, 1.5)).toThrow(RangeError);
    expect(() => store.enforceMaxRows(-1)).toThrow(RangeError);
  });
});

describe('HistoryStore counters and hooks', () => {
  it('counts committed rows and commits, and hands each commit its rows once, in order', async () => {
    await seed([row('a', 1), row('b', 2)]);
    await seed([row('c', 3)]);
    expect(store.stats).toMatchObject({ rowsWritten: 3, commits: 2 });
    expect(stored.map((rows) => rows.map((r) => r.topic))).toEqual([['a', 'b'], ['c']]);
  });

  it('does not count or hand on rows of a commit that failed', async () => {
    db.exec('DROP TABLE history');
    const appended = store.append(row('a', 1));
    await expect(store.flush()).rejects.toThrow(/no such table/);
    await expect(appended).rejects.toThrow(/no such table/);
    expect(store.stats.rowsWritten).toBe(0);
    expect(stored).toEqual([]);
  });

  it('scan stops after a budget of rows examined and says where to go on', async () => {
    await seed(Array.from({ length: 1000 }, (_, i) => row(`a/${i}`, 10_000 + i)));
    await seed([row('a/b/y', 5)]);
    const cut = store.scan({ filter: 'a/+/y' }, 300);
    // Pages of 256 rows, newest first: the budget runs out after the second page.
    expect(cut).toEqual({ rows: [], scanLimited: true, resumeTime: 10_000 + 1000 - 512 });
    const rest = store.scan({ filter: 'a/+/y', until: cut.resumeTime! + 1 }, 10_000);
    expect(rest.scanLimited).toBe(false);
    expect(rest.rows.map((r) => r.topic)).toEqual(['a/b/y']);
    expect(store.query({ filter: 'a/+/y' }).map((r) => r.topic)).toEqual(['a/b/y']);
  });

  it('latestPerTopic answers the newest row of each topic in topic order, a page at a time', async () => {
    await seed([row('b', 1), row('a', 5), row('b', 9), row('a', 2), row('c', 4), row('c', 4)]);
    const first = store.latestPerTopic('', 2);
    expect(first.map((r) => [r.topic, r.time])).toEqual([['a', 5], ['b', 9]]);
    expect(store.latestPerTopic('b', 2).map((r) => [r.topic, r.time])).toEqual([['c', 4]]);
    expect(store.latestPerTopic('c', 2)).toEqual([]);
  });
});
