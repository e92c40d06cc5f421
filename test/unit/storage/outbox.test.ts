import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../../src/log.js';
import type { Effect } from '../../../src/outputs/types.js';
import { WriteBatcher } from '../../../src/storage/batcher.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import { OutboxStore, TAIL_MAX_ROWS } from '../../../src/storage/outbox.js';
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
    expect((db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n).toBe(0);
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
});
