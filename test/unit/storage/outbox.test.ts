import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import type { Effect } from '../../../src/outputs/types.js';
import { WriteBatcher } from '../../../src/storage/batcher.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { MIGRATIONS } from '../../../src/storage/migrations.js';
import { OutboxStore, TAIL_MAX_ROWS } from '../../../src/storage/outbox.js';
import { storedMessages } from '../../../src/storage/outbox-codec.js';
import { FakeClock } from '../../helpers/fake-clock.js';

const log = silentLogger();
let db: Database;
let batcher: WriteBatcher;
let store: OutboxStore;

function effect(n: number, output = 'cloud'): Effect {
  return { type: 'bridge', output, ruleId: 'r', topic: `m/${n}`, payload: Buffer.from(String(n)), qos: 1, retain: false, source: { clientId: 'c', timestamp: n, hops: 0 } };
}

async function enqueue(from: number, to: number, output = 'cloud'): Promise<void> {
  const done: Promise<void>[] = [];
  for (let n = from; n <= to; n++) done.push(store.enqueue(output, effect(n, output)));
  await batcher.flush();
  await Promise.all(done);
}

const topics = (ms: { topic: string }[]) => ms.map((m) => Number(m.topic.slice(2)));
/** Payload bytes of the messages numbered `from`..`to` (each payload is its number as text). */
const storedBytes = (from: number, to: number) => range(from, to).reduce((sum, n) => sum + String(n).length, 0);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

beforeEach(() => {
  db = openDatabase(':memory:', { durability: 'normal', log });
  batcher = new WriteBatcher(db, { clock: new FakeClock(), log });
  store = new OutboxStore(db, batcher, log);
});

afterEach(() => db.close());

describe('the outbox store', () => {
  it('reads committed rows in order, and nothing of an open transaction', async () => {
    await enqueue(1, 5);
    void store.enqueue('cloud', effect(6));
    expect(topics(store.read('cloud', 0, 100))).toEqual(range(1, 5));
    await batcher.flush();
    expect(topics(store.read('cloud', 0, 100))).toEqual(range(1, 6));
  });

  it('keeps outputs apart', async () => {
    await enqueue(1, 3, 'a');
    await enqueue(4, 6, 'b');
    expect(topics(store.read('a', 0, 100))).toEqual([1, 2, 3]);
    expect(topics(store.read('b', 0, 100))).toEqual([4, 5, 6]);
  });

  it('fills a page from SQLite and then from memory when a backlog outgrew the in-memory tail', async () => {
    const total = TAIL_MAX_ROWS + 500;
    await enqueue(1, total);
    const page = store.read('cloud', 0, total);
    expect(page).toHaveLength(total);
    expect(topics(page)).toEqual(range(1, total));
    // And from the middle of the stored part.
    expect(topics(store.read('cloud', page[99]!.seq, 200))).toEqual(range(101, 300));
  });

  it('counts depth exactly through reads and removals from both SQLite and memory', async () => {
    const total = TAIL_MAX_ROWS + 100;
    await enqueue(1, total);
    expect(store.depth('cloud').count).toBe(total);
    const page = store.read('cloud', 0, 1000);
    await store.removeUpTo('cloud', page.at(-1)!.seq);
    expect(store.depth('cloud').count).toBe(total - 1000);
    const rest = store.read('cloud', page.at(-1)!.seq, total);
    expect(rest).toHaveLength(total - 1000);
    await store.removeUpTo('cloud', rest.at(-1)!.seq);
    expect(store.depth('cloud')).toEqual({ count: 0, bytes: 0 });
    expect((db.prepare('SELECT count(*) AS n FROM outbox_batches').get() as { n: number }).n).toBe(0);
  });

  it('answers the oldest waiting time with or without SQLite', async () => {
    expect(store.oldestTime('cloud')).toBeUndefined();
    await enqueue(7, 9);
    expect(store.oldestTime('cloud')).toBe(7);
  });

  it('forgets rows of a transaction that rolled back', async () => {
    const failing = store.enqueue('cloud', effect(1));
    // A write in the same transaction that fails makes the whole batch roll back.
    const bad = batcher.write(() => {
      throw new Error('disk full');
    }, undefined);
    await batcher.flush().catch(() => undefined);
    await expect(failing).rejects.toBeDefined();
    await expect(bad).rejects.toBeDefined();
    expect(store.read('cloud', 0, 10)).toEqual([]);
    expect(store.depth('cloud')).toEqual({ count: 0, bytes: 0 });
  });

  it('keeps one row per output and transaction, and a reopened store reads on after a batch delivered partway', async () => {
    await enqueue(1, 10);
    await enqueue(11, 20);
    expect((db.prepare('SELECT count(*) AS n FROM outbox_batches').get() as { n: number }).n).toBe(2);
    const page = store.read('cloud', 0, 4);
    await store.removeUpTo('cloud', page.at(-1)!.seq);
    // Another store over the same table, as after a restart: messages 5..20 wait.
    const reopened = new OutboxStore(db, batcher, log);
    expect(reopened.depth('cloud')).toEqual({ count: 16, bytes: storedBytes(5, 20) });
    expect(topics(reopened.read('cloud', 0, 100))).toEqual(range(5, 20));
    expect(reopened.oldestTime('cloud')).toBe(5);
    expect(topics(storedMessages(db, 'cloud'))).toEqual(range(5, 20));
    // New messages get seqs after every stored one.
    await reopened.enqueue('cloud', effect(21));
    await batcher.flush();
    const all = reopened.read('cloud', 0, 100);
    expect(topics(all)).toEqual(range(5, 21));
    expect(all.at(-1)!.seq).toBeGreaterThan(all.at(-2)!.seq);
  });

  it('takes single messages out of stored batches, and the whole row once none is left', async () => {
    await enqueue(1, 5);
    await enqueue(6, 8, 'other');
    const seqs = store.read('cloud', 0, 100).map((m) => m.seq);
    await Promise.all([store.removeOne('cloud', seqs[1]!), store.removeOne('cloud', seqs[3]!)]);
    expect(topics(storedMessages(db, 'cloud'))).toEqual([1, 3, 5]);
    expect(store.depth('cloud')).toEqual({ count: 3, bytes: 3 });
    expect(new OutboxStore(db, batcher, log).depth('cloud')).toEqual({ count: 3, bytes: 3 });
    await Promise.all([1, 3, 5].map((n) => store.removeOne('cloud', seqs[n - 1]!)));
    expect(storedMessages(db, 'cloud')).toEqual([]);
    expect((db.prepare("SELECT count(*) AS n FROM outbox_batches WHERE output = 'cloud'").get() as { n: number }).n).toBe(0);
    expect(topics(storedMessages(db, 'other'))).toEqual([6, 7, 8]);
  });

  it('counts failed attempts for the batches a range touches, and a reopened store reads them back', async () => {
    await enqueue(1, 3);
    await enqueue(4, 6);
    await enqueue(7, 9);
    const page = store.read('cloud', 0, 100);
    store.recordAttempt('cloud', page[1]!.seq, page[4]!.seq);
    store.recordAttempt('cloud', page[1]!.seq, page[4]!.seq);
    expect(store.read('cloud', 0, 100).map((m) => m.attempts)).toEqual([0, 2, 2, 2, 2, 0, 0, 0, 0]);
    // On disk the count is per batch: the first two batches were touched.
    expect(new OutboxStore(db, batcher, log).read('cloud', 0, 100).map((m) => m.attempts)).toEqual([2, 2, 2, 2, 2, 2, 0, 0, 0]);
  });

  it('stores every field of a message: properties, planned data, QoS, retain, UTF-8 text and empty payloads', async () => {
    const e: Effect = {
      type: 'bridge',
      output: 'cloud',
      ruleId: 'règle',
      topic: 'capteurs/température/°C',
      payload: Buffer.alloc(0),
      qos: 2,
      retain: true,
      properties: { contentType: 'application/json', userProperties: { a: 'b', c: ['d', 'e'] }, correlationData: Buffer.from([0, 255, 7]), messageExpiryInterval: 60 },
      data: { points: [{ measurement: 'm', fields: { v: 1.5 } }] },
      source: { clientId: 'client-é', timestamp: 1_700_000_000_123, hops: 1 },
    };
    await store.enqueue('cloud', e);
    await batcher.flush();
    const [m] = new OutboxStore(db, batcher, log).read('cloud', 0, 10);
    expect(m).toEqual({
      seq: 1,
      time: e.source.timestamp,
      ruleId: e.ruleId,
      clientId: e.source.clientId,
      topic: e.topic,
      payload: Buffer.alloc(0),
      qos: 2,
      retain: true,
      properties: e.properties,
      data: e.data,
      attempts: 0,
    });
  });
});

describe('an outbox stored one row per message (schema 4)', () => {
  it('moves into batches on upgrade: every message, in order, seqs and attempts kept, and the old table is gone', () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), 'signalbox-outbox-')), 'old.db');
    try {
      const old = openDatabase(file, { durability: 'normal', log, migrations: MIGRATIONS.slice(0, 4) });
      const insert = old.prepare('INSERT INTO outbox (seq, output, time, rule_id, client_id, topic, payload, qos, retain, properties, data, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
      // 2,500 messages for one output (three batches), a few for another, interleaved.
      for (let n = 1; n <= 2500; n++) insert.run(n * 2, 'cloud', n, 'r', 'c', `m/${n}`, Buffer.from(String(n)), 1, 0, null, null, n === 1 ? 3 : 0);
      for (let n = 1; n <= 3; n++) insert.run(n * 2 + 1, 'hooks', n, 'w', 'c', `h/${n}`, Buffer.from('x'), 0, 1, '{"contentType":"text/plain"}', '{"k":1}', 0);
      old.close();

      const upgraded = openDatabase(file, { durability: 'normal', log });
      try {
        expect(upgraded.prepare("SELECT name FROM sqlite_master WHERE name = 'outbox'").get()).toBeUndefined();
        const b = new WriteBatcher(upgraded, { clock: new FakeClock(), log });
        const s2 = new OutboxStore(upgraded, b, log);
        const cloud = s2.read('cloud', 0, 5000);
        expect(topics(cloud)).toEqual(range(1, 2500));
        expect(cloud.map((m) => m.seq)).toEqual(range(1, 2500).map((n) => n * 2));
        expect(cloud[0]!.attempts).toBe(3);
        expect(s2.depth('cloud')).toEqual({ count: 2500, bytes: storedBytes(1, 2500) });
        const hooks = s2.read('hooks', 0, 10);
        expect(hooks.map((m) => [m.topic, m.qos, m.retain, m.properties, m.data])).toEqual([1, 2, 3].map((n) => [`h/${n}`, 0, true, { contentType: 'text/plain' }, { k: 1 }]));
      } finally {
        upgraded.close();
      }
    } finally {
      rmSync(path.dirname(file), { recursive: true, force: true });
    }
  });
});
