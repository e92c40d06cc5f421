import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { DeadLetterStore, type DeadLetter } from '../../../src/storage/dead-letters.js';
import { StorageError } from '../../../src/storage/errors.js';
import { FakeClock } from '../../helpers/fake-clock.js';

let dir: string;
let db: Database;
let clock: FakeClock;
let warnings: Array<{ msg: string; dropped: number; droppedTotal: number }>;

function letter(n: number, extra: Partial<DeadLetter> = {}): DeadLetter {
  return {
    time: 1000 + n,
    ruleId: n % 2 === 0 ? 'even' : 'odd',
    error: `bad payload ${n}`,
    topic: `devices/${n}`,
    payload: Buffer.from(`payload ${n}`),
    qos: 1,
    retain: false,
    clientId: `client-${n}`,
    ...extra,
  };
}

function store(maxRows?: number): DeadLetterStore {
  const log = pino({ level: 'warn' }, { write: (s: string) => warnings.push(JSON.parse(s) as (typeof warnings)[number]) });
  return new DeadLetterStore(db, { clock, log, ...(maxRows === undefined ? {} : { maxRows }) });
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'signalbox-dead-'));
  db = openDatabase(join(dir, 'signalbox.db'), { durability: 'normal', log: silentLogger() });
  clock = new FakeClock();
  warnings = [];
});

afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('DeadLetterStore', () => {
  it('stores a letter with every field and lists it back, newest first', () => {
    const s = store();
    s.add(letter(1, { output: 'cloud', attempts: 5, qos: 2, retain: true }));
    s.add(letter(2));
    const [second, first] = s.list();
    expect(first).toEqual({ ...letter(1, { output: 'cloud', attempts: 5, qos: 2, retain: true }), id: first!.id });
    // No output: the rule itself failed. One attempt unless told otherwise.
    expect(second).toEqual({ ...letter(2), id: second!.id, attempts: 1 });
    expect(second).not.toHaveProperty('output');
    expect(s.list({ order: 'asc' }).map((l) => l.topic)).toEqual(['devices/1', 'devices/2']);
  });

  it('keeps at most maxRows by deleting the oldest, counting and logging the drops', () => {
    const s = store(3);
    for (let n = 1; n <= 5; n++) s.add(letter(n));
    expect(s.count()).toBe(3);
    expect(s.droppedCount).toBe(2);
    expect(s.list().map((l) => l.topic)).toEqual(['devices/5', 'devices/4', 'devices/3']);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ dropped: 1, droppedTotal: 1 });
    expect(warnings[0]!.msg).toContain('cap of 3');
  });

  it('sums the drops of a storm into one warning per interval, so none goes unreported', () => {
    const s = store(1);
    for (let n = 1; n <= 101; n++) s.add(letter(n));
    expect(s.droppedCount).toBe(100);
    expect(warnings.map((w) => w.dropped)).toEqual([1]);
    clock.advance(10_000);
    expect(warnings.map((w) => w.dropped)).toEqual([1, 99]);
    expect(warnings[1]!.droppedTotal).toBe(100);
    expect(clock.pending).toBe(0);
  });

  it('does not drop anything below the cap', () => {
    const s = store();
    for (let n = 0; n < 50; n++) s.add(letter(n));
    expect(s.count()).toBe(50);
    expect(s.droppedCount).toBe(0);
    expect(warnings).toEqual([]);
  });

  it('lists by rule and limit, removes by id and purges', () => {
    const s = store();
    for (let n = 0; n < 10; n++) s.add(letter(n));
    expect(s.list({ ruleId: 'odd' }).map((l) => l.topic)).toEqual(['devices/9', 'devices/7', 'devices/5', 'devices/3', 'devices/1']);
    expect(s.list({ limit: 2 })).toHaveLength(2);
    expect(() => s.list({ limit: 0 })).toThrow(/from 1 to 10000, got 0/);
    const ids = s.list({ ruleId: 'even' }).map((l) => l.id!);
    expect(s.remove([...ids, 999_999])).toBe(5);
    expect(s.count()).toBe(5);
    expect(s.purge()).toBe(5);
    expect(s.count()).toBe(0);
  });

  it('never reuses the id of a removed letter', () => {
    const s = store();
    s.add(letter(1));
    const [first] = s.list();
    s.purge();
    s.add(letter(2));
    expect(s.list()[0]!.id).toBeGreaterThan(first!.id!);
  });

  it('throws a StorageError when the letter cannot be stored', () => {
    const s = store();
    const pages = db.pragma('page_count', { simple: true }) as number;
    db.pragma(`max_page_count = ${pages}`);
    expect(() => s.add(letter(1, { payload: Buffer.alloc(64 * 1024) }))).toThrow(
      expect.objectContaining({ code: 'SB_ERR_STORAGE_FULL' }) as unknown as StorageError,
    );
    expect(s.count()).toBe(0);
  });
});
