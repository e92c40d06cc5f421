import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TimerHandle } from '../../../src/clock.js';
import { IDLE_POLL_MS, OutputDrain } from '../../../src/engine/drain.js';
import { silentLogger } from '../../../src/log.js';
import { OutputError, type Connector, type OutboxMessage, type OutboxSettings } from '../../../src/outputs/connector.js';
import type { Effect } from '../../../src/outputs/types.js';
import { WriteBatcher } from '../../../src/storage/batcher.js';
import { openDatabase, type Database } from '../../../src/storage/database.js';
import type { DeadLetter } from '../../../src/storage/dead-letters.js';
import { OutboxStore } from '../../../src/storage/outbox.js';
import { storedMessages } from '../../../src/storage/outbox-codec.js';
import { FakeClock } from '../../helpers/fake-clock.js';

const OUTPUT = 'cloud';
const log = silentLogger();

/** A FakeClock that also records the delay of every timer set, with the drain's state at that moment. */
class RecordingClock extends FakeClock {
  readonly recorded: Array<{ ms: number; state: string | undefined }> = [];
  stateOf: () => string | undefined = () => undefined;

  override setTimeout(fn: () => void, ms: number): TimerHandle {
    this.recorded.push({ ms, state: this.stateOf() });
    return super.setTimeout(fn, ms);
  }

  /** Delays of the backoff sleeps, in order. */
  get backoffs(): number[] {
    return this.recorded.filter((t) => t.state === 'backoff').map((t) => t.ms);
  }
}

type Behaviour = (batch: readonly OutboxMessage[], call: number) => void;

/** A connector that records every batch and fails or succeeds as `behaviour` says. */
class FakeConnector implements Connector {
  /** Topics of every batch handed to write(), in call order, with their attempts so far. */
  readonly calls: Array<{ topics: string[]; attempts: number[] }> = [];
  /** Topics confirmed, in order. */
  readonly delivered: string[] = [];
  closed = false;

  constructor(private readonly behaviour: Behaviour = () => undefined) {}

  async write(batch: readonly OutboxMessage[]): Promise<void> {
    this.calls.push({ topics: batch.map((m) => m.topic), attempts: batch.map((m) => m.attempts) });
    this.behaviour(batch, this.calls.length);
    this.delivered.push(...batch.map((m) => m.topic));
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}

let db: Database;
let clock: RecordingClock;
let batcher: WriteBatcher;
let store: OutboxStore;
let letters: DeadLetter[];
let drains: OutputDrain[];

function effect(n: number): Effect {
  return {
    type: 'bridge',
    output: OUTPUT,
    ruleId: 'forward',
    topic: `m/${n}`,
    payload: Buffer.from(`payload ${n}`),
    qos: 1,
    retain: false,
    source: { clientId: 'sensor', timestamp: 1_000 + n, hops: 0 },
  };
}

async function enqueue(count: number): Promise<void> {
  const done: Promise<void>[] = [];
  for (let n = 1; n <= count; n++) done.push(store.enqueue(OUTPUT, effect(n)));
  await Promise.all(done);
}

function topics(...ns: number[]): string[] {
  return ns.map((n) => `m/${n}`);
}

function settings(over: Partial<OutboxSettings> = {}): OutboxSettings {
  return { maxBytes: 1 << 20, maxAge: 86_400_000, overflow: 'block', batchSize: 100, lingerMs: 0, retryMinMs: 100, retryMaxMs: 1_000, ...over };
}

/** A random source returning `values` in turn (then the last one again). */
function scripted(values: number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)]!;
}

function drain(connector: Connector, over: Partial<OutboxSettings> = {}, random: () => number = () => 0.5): OutputDrain {
  const d = new OutputDrain(OUTPUT, connector, settings(over), { store, deadLetter: (l) => letters.push(l), clock, log, random });
  clock.stateOf = () => d.stats.state;
  drains.push(d);
  return d;
}

/**
 * Resolves once `condition` holds, checking after every event-loop turn (the drain and the
 * batcher move on promises and setImmediate); fails after `within` ms of real time.
 */
async function until(condition: () => boolean, what: string, within = 2_000): Promise<void> {
  const deadline = Date.now() + within;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${within} ms waiting for ${what}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}

/** Lets every pending promise and setImmediate callback run (e.g. to see that nothing happens). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** The drain is waiting for new rows: everything it could send is sent. */
function idle(d: OutputDrain): boolean {
  return d.stats.state === 'idle' && clock.recorded.length > 0 && clock.recorded.at(-1)!.ms === IDLE_POLL_MS && clock.pending === 1;
}

function outboxTopics(): string[] {
  const outputs = db.prepare('SELECT DISTINCT output FROM outbox_batches').pluck().all() as string[];
  return outputs.flatMap((o) => storedMessages(db, o)).sort((a, b) => a.seq - b.seq).map((m) => m.topic);
}

const permanent = (): OutputError => new OutputError('target refused the message', { retryable: false, code: 'SB_ERR_OUTPUT_REJECTED' });
const unavailable = (): OutputError => new OutputError('target is down', { retryable: true });

beforeEach(() => {
  db = openDatabase(':memory:', { durability: 'normal', log });
  clock = new RecordingClock();
  batcher = new WriteBatcher(db, { clock, log });
  store = new OutboxStore(db, batcher, log);
  letters = [];
  drains = [];
});

afterEach(async () => {
  for (const d of drains) await d.close();
  await batcher.close();
  db.close();
});

describe('OutputDrain', () => {
  it('delivers the outbox in order in batches of batchSize, then removes the rows', async () => {
    await enqueue(7);
    const connector = new FakeConnector();
    const d = drain(connector, { batchSize: 3 });
    d.start();
    await until(() => idle(d) && connector.calls.length === 3, 'three batches and an idle drain');
    expect(connector.calls.map((c) => c.topics)).toEqual([topics(1, 2, 3), topics(4, 5, 6), topics(7)]);
    expect(connector.delivered).toEqual(topics(1, 2, 3, 4, 5, 6, 7));
    expect(d.stats.delivered).toBe(7);
    await batcher.flush();
    expect(outboxTopics()).toEqual([]);
    expect(store.depth(OUTPUT)).toEqual({ count: 0, bytes: 0 });
  });

  it('sends rows committed while it was idle once notified', async () => {
    const connector = new FakeConnector();
    const d = drain(connector, { batchSize: 10 });
    d.start();
    await until(() => idle(d), 'an idle drain');
    await enqueue(2);
    d.notify();
    await until(() => connector.delivered.length === 2, 'two deliveries');
    expect(connector.delivered).toEqual(topics(1, 2));
  });

  it('retries the same batch after a retryable failure, backing off exponentially from retryMinMs to retryMaxMs', async () => {
    await enqueue(5);
    const failures = 6;
    const connector = new FakeConnector((_b, call) => {
      if (call <= failures) throw unavailable();
    });
    // Near 1: each delay is close to its ceiling, which doubles from 100 and stops at 1000.
    const d = drain(connector, { batchSize: 3, retryMinMs: 100, retryMaxMs: 1_000 }, () => 0.99);
    d.start();
    const expected = [100, 199, 397, 793, 991, 991];
    for (let k = 1; k <= failures; k++) {
      await until(() => clock.backoffs.length === k && clock.pending === 1, `backoff ${k}`);
      const delay = clock.backoffs[k - 1]!;
      expect(delay).toBe(expected[k - 1]);
      // Not a millisecond early.
      clock.advance(delay - 1);
      await settle();
      expect(connector.calls).toHaveLength(k);
      clock.advance(1);
      await until(() => connector.calls.length > k, `retry ${k}`);
    }
    await until(() => idle(d), 'an idle drain');
    // The same three rows every time, each failure counted on them.
    expect(connector.calls.slice(0, failures + 1).map((c) => c.topics)).toEqual(Array.from({ length: failures + 1 }, () => topics(1, 2, 3)));
    expect(connector.calls.slice(0, failures + 1).map((c) => c.attempts[0])).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(connector.delivered).toEqual(topics(1, 2, 3, 4, 5));
    expect(d.stats.retries).toBe(failures);
    expect(d.stats.lastError).toBe('target is down');
  });

  it('waits at least as long as the target asked (Retry-After) before retrying', async () => {
    await enqueue(1);
    const connector = new FakeConnector((_b, call) => {
      if (call === 1) throw new OutputError('slow down', { retryable: true, retryAfterMs: 5_000 });
    });
    const d = drain(connector, { retryMinMs: 100, retryMaxMs: 1_000 });
    d.start();
    await until(() => clock.backoffs.length === 1 && clock.pending === 1, 'a backoff');
    expect(clock.backoffs[0]).toBe(5_000);
    clock.advance(4_999);
    await settle();
    expect(connector.calls).toHaveLength(1);
    clock.advance(1);
    await until(() => connector.delivered.length === 1, 'the retry');
  });

  it('with lingerMs, lets a small batch fill up once before writing it', async () => {
    await enqueue(2);
    const connector = new FakeConnector();
    const d = drain(connector, { batchSize: 10, lingerMs: 500 });
    d.start();
    await until(() => clock.recorded.some((t) => t.ms === 500) && clock.pending === 1, 'the linger');
    await Promise.all([3, 4, 5].map((n) => store.enqueue(OUTPUT, effect(n))));
    clock.advance(499);
    await settle();
    expect(connector.calls).toHaveLength(0);
    clock.advance(1);
    await until(() => connector.delivered.length === 5, 'one write of five');
    expect(connector.calls.map((c) => c.topics)).toEqual([topics(1, 2, 3, 4, 5)]);
  });

  it('with a connector that allows 3 writes at once, hands out 3 batches before the first is confirmed, and confirms in order', async () => {
    await enqueue(10);
    const pending: Array<{ topics: string[]; resolve: () => void }> = [];
    const connector: Connector = {
      maxConcurrentWrites: 3,
      write: (batch) => new Promise<void>((resolve) => pending.push({ topics: batch.map((m) => m.topic), resolve })),
      close: async () => undefined,
    };
    const d = drain(connector, { batchSize: 2 });
    d.start();
    await until(() => pending.length === 3, 'three writes in flight');
    await settle();
    expect(pending.map((p) => p.topics)).toEqual([topics(1, 2), topics(3, 4), topics(5, 6)]);
    // The second confirms first: nothing is counted until the first does.
    pending[1]!.resolve();
    await settle();
    expect(d.stats.delivered).toBe(0);
    pending[0]!.resolve();
    await until(() => d.stats.delivered === 4 && pending.length === 5, 'two confirmed, two more handed out');
    for (const p of pending.slice(2)) p.resolve();
    await until(() => pending.length === 5 && d.stats.delivered === 10, 'all confirmed');
    await batcher.flush();
    expect(outboxTopics()).toEqual([]);
  });

  it('after a failed write among several in flight, sends the failed batch and everything after it again, in order', async () => {
    await enqueue(6);
    const calls: string[][] = [];
    let call = 0;
    const connector: Connector = {
      maxConcurrentWrites: 3,
      write: async (batch) => {
        calls.push(batch.map((m) => m.topic));
        if (++call === 2) throw unavailable();
      },
      close: async () => undefined,
    };
    const d = drain(connector, { batchSize: 2, retryMinMs: 100, retryMaxMs: 100 });
    d.start();
    await until(() => clock.backoffs.length === 1 && clock.pending === 1, 'a backoff');
    clock.advance(100);
    await until(() => d.stats.delivered === 6, 'all delivered');
    expect(calls.slice(0, 3)).toEqual([topics(1, 2), topics(3, 4), topics(5, 6)]);
    // 1-2 were confirmed; 3-4 failed, so 3-4 and 5-6 (which may have arrived) go again.
    expect(calls.slice(3)).toEqual([topics(3, 4), topics(5, 6)]);
  });

  it('does not send again the leading messages a failed write says the target already has', async () => {
    await enqueue(4);
    const connector = new FakeConnector((_b, call) => {
      if (call === 1) throw new OutputError('third request failed', { retryable: true, delivered: 2 });
    });
    const d = drain(connector, { batchSize: 4, retryMinMs: 100, retryMaxMs: 100 });
    d.start();
    await until(() => clock.backoffs.length === 1 && clock.pending === 1, 'a backoff');
    expect(d.stats.delivered).toBe(2);
    clock.advance(100);
    await until(() => d.stats.delivered === 4, 'the rest delivered');
    expect(connector.calls.map((c) => c.topics)).toEqual([topics(1, 2, 3, 4), topics(3, 4)]);
    await batcher.flush();
    expect(outboxTopics()).toEqual([]);
  });

  it('draws each backoff uniformly between retryMinMs and the doubling ceiling using the injected random', async () => {
    await enqueue(1);
    const connector = new FakeConnector((_b, call) => {
      if (call <= 5) throw new Error('socket hang up'); // not an OutputError: counts as retryable
    });
    const d = drain(connector, { retryMinMs: 200, retryMaxMs: 1_500 }, scripted([0.7, 0.5, 0.25, 0, 0.5]));
    d.start();
    for (let k = 1; k <= 5; k++) {
      await until(() => clock.backoffs.length === k && clock.pending === 1, `backoff ${k}`);
      clock.advance(clock.backoffs[k - 1]!);
    }
    await until(() => connector.delivered.length === 1, 'the delivery');
    // Ceilings 200, 400, 800, 1500 (capped), 1500: delay = 200 + (ceiling - 200) × random.
    expect(clock.backoffs).toEqual([200, 300, 350, 200, 850]);
  });

  it('starts again from retryMinMs after a successful delivery', async () => {
    await enqueue(2);
    const connector = new FakeConnector((_b, call) => {
      if (call === 1 || call === 2 || call === 4) throw unavailable();
    });
    const d = drain(connector, { batchSize: 1, retryMinMs: 100, retryMaxMs: 1_000 }, () => 0.99);
    d.start();
    await until(() => clock.backoffs.length === 1 && clock.pending === 1, 'backoff 1');
    clock.advance(clock.backoffs[0]!);
    await until(() => clock.backoffs.length === 2 && clock.pending === 1, 'backoff 2');
    clock.advance(clock.backoffs[1]!);
    await until(() => clock.backoffs.length === 3 && clock.pending === 1, 'backoff after the first delivery');
    expect(connector.delivered).toEqual(topics(1));
    expect(clock.backoffs).toEqual([100, 199, 100]);
  });

  it('narrows a permanent failure in a batch of 5 down to the one poison message and delivers the other 4 in order', async () => {
    await enqueue(5);
    const poison = 'm/3';
    const connector = new FakeConnector((batch) => {
      if (batch.some((m) => m.topic === poison)) throw permanent();
    });
    const d = drain(connector, { batchSize: 5 });
    d.start();
    await until(() => idle(d) && letters.length === 1 && connector.delivered.length === 4, 'four deliveries, one dead letter, an idle drain');
    expect(connector.delivered).toEqual(topics(1, 2, 4, 5));
    expect(connector.calls.map((c) => c.topics)).toEqual([topics(1, 2, 3, 4, 5), topics(1), topics(2), topics(3), topics(4), topics(5)]);
    const [letter] = letters;
    expect(letter).toMatchObject({
      output: OUTPUT,
      ruleId: 'forward',
      topic: poison,
      payload: Buffer.from('payload 3'),
      qos: 1,
      retain: false,
      clientId: 'sensor',
      time: 1_003,
      error: 'SB_ERR_OUTPUT_REJECTED: target refused the message',
    });
    expect(letter!.attempts).toBeGreaterThanOrEqual(1);
    expect(d.stats).toMatchObject({ delivered: 4, deadLettered: 1, retries: 0 });
    // A permanent failure is not retried: no backoff.
    expect(clock.backoffs).toEqual([]);
    await batcher.flush();
    expect(outboxTopics()).toEqual([]);
    expect(store.depth(OUTPUT)).toEqual({ count: 0, bytes: 0 });
  });

  it('goes back to full batches once the failed batch has been sent one by one', async () => {
    await enqueue(8);
    const connector = new FakeConnector((batch) => {
      if (batch.some((m) => m.topic === 'm/2')) throw permanent();
    });
    const d = drain(connector, { batchSize: 5 });
    d.start();
    await until(() => idle(d) && connector.delivered.length === 7, 'seven deliveries and an idle drain');
    expect(connector.calls.map((c) => c.topics)).toEqual([topics(1, 2, 3, 4, 5), topics(1), topics(2), topics(3), topics(4), topics(5), topics(6, 7, 8)]);
    expect(letters.map((l) => l.topic)).toEqual(['m/2']);
  });

  it('dead-letters every poison message of a batch and delivers the rest in order', async () => {
    await enqueue(5);
    const connector = new FakeConnector((batch) => {
      if (batch.some((m) => m.topic === 'm/2' || m.topic === 'm/5')) throw permanent();
    });
    const d = drain(connector, { batchSize: 5 });
    d.start();
    await until(() => idle(d) && letters.length === 2, 'two dead letters and an idle drain');
    expect(letters.map((l) => l.topic)).toEqual(['m/2', 'm/5']);
    expect(connector.delivered).toEqual(topics(1, 3, 4));
  });

  // DeadLetter.attempts: "How many times delivery was tried before giving up." Here the poison
  // message was sent three times: in the batch that failed retryably, in the batch that was
  // refused, and alone.
  it('counts every failed delivery of the poison message in the dead letter\'s attempts', async () => {
    await enqueue(5);
    const connector = new FakeConnector((batch, call) => {
      if (call === 1) throw unavailable();
      if (batch.some((m) => m.topic === 'm/3')) throw permanent();
    });
    const d = drain(connector, { batchSize: 5 });
    d.start();
    await until(() => clock.backoffs.length === 1 && clock.pending === 1, 'the backoff');
    clock.advance(clock.backoffs[0]!);
    await until(() => idle(d) && letters.length === 1, 'the dead letter and an idle drain');
    const tries = connector.calls.filter((c) => c.topics.includes('m/3')).length;
    expect(tries).toBe(3);
    expect(letters[0]!.attempts).toBe(tries);
  });

  it('returns from close() promptly while backing off, without waiting for the delay', async () => {
    await enqueue(3);
    const connector = new FakeConnector(() => {
      throw unavailable();
    });
    const d = drain(connector, { retryMinMs: 60_000, retryMaxMs: 60_000 });
    d.start();
    await until(() => d.stats.state === 'backoff' && clock.pending === 1, 'a backoff');
    const before = clock.now();
    let closed = false;
    const closing = d.close().then(() => {
      closed = true;
    });
    await until(() => closed, 'close() to resolve', 1_000);
    await closing;
    expect(clock.now()).toBe(before);
    expect(clock.pending).toBe(0); // the backoff timer was cleared
    expect(connector.closed).toBe(true);
    expect(connector.calls).toHaveLength(1);
    expect(d.stats.state).toBe('stopped');
    // Nothing was confirmed, so every row stays for the next start.
    await batcher.flush();
    expect(outboxTopics()).toEqual(topics(1, 2, 3));
  });

  it('returns from close() promptly while idle', async () => {
    const connector = new FakeConnector();
    const d = drain(connector);
    d.start();
    await until(() => idle(d), 'an idle drain');
    let closed = false;
    void d.close().then(() => {
      closed = true;
    });
    await until(() => closed, 'close() to resolve', 1_000);
    expect(clock.pending).toBe(0);
    expect(connector.closed).toBe(true);
  });

  it('does not cut a backoff short when new rows are notified', async () => {
    await enqueue(1);
    const connector = new FakeConnector((_b, call) => {
      if (call === 1) throw unavailable();
    });
    const d = drain(connector, { retryMinMs: 500, retryMaxMs: 500 });
    d.start();
    await until(() => clock.backoffs.length === 1 && clock.pending === 1, 'a backoff');
    await enqueue(1);
    d.notify();
    await settle();
    expect(connector.calls).toHaveLength(1);
    clock.advance(500);
    await until(() => connector.delivered.length === 2, 'both deliveries');
  });
});
