import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { MessageProperties, QoS } from '../../src/broker/types.js';
import { DEFAULT_OUTBOX_BATCH, OutputError, type Connector, type OutboxMessage } from '../../src/outputs/connector.js';

/**
 * The contract every output type (`outputs.<name>.type`), built-in or plugin, must keep,
 * as one shared vitest suite. An output type joins by adding a `<type>.contract.test.ts`
 * that calls {@link describeOutputContract} with a factory for a {@link ContractSubject}:
 * its connector, pointed at a real target (a Mosquitto for a bridge, a VictoriaMetrics for
 * an influx output), plus a way to see what arrived there and to take the target away.
 *
 * What the suite holds every connector to (see `Connector` in src/outputs/connector.ts):
 * - `write(batch)` resolves only once the target has every message of the batch, in order;
 * - an empty batch resolves and delivers nothing;
 * - what the target keeps of a message (topic, payload bytes, QoS, retain, MQTT 5
 *   properties) arrives unchanged;
 * - with the target unavailable, `start()` and `write()` settle within a deadline, and
 *   `write()` rejects with an `OutputError` whose `retryable` is true; once the target is
 *   back, writing the same batch again succeeds (the outbox retries exactly like that);
 * - a message the target refuses for good is a non-retryable `OutputError` (when the
 *   subject can make one);
 * - every error is an `OutputError` with an `SB_ERR_…` code;
 * - `close()` may be called twice (and concurrently), and a write after it rejects.
 */

/** What arrived at the target, in the terms of an outbox message, as far as the target keeps it. */
export interface Arrival {
  readonly topic?: string;
  readonly payload?: Buffer;
  readonly qos?: QoS;
  readonly retain?: boolean;
  readonly properties?: MessageProperties;
}

/** Fields of a message a target can keep (a time-series database keeps no QoS, say). */
export type KeptField = 'topic' | 'payload' | 'qos' | 'retain' | 'properties';

const ALL_FIELDS: readonly KeptField[] = ['topic', 'payload', 'qos', 'retain', 'properties'];

/** One connector under test and its target. Made fresh for each test by the factory. */
export interface ContractSubject {
  /**
   * The connector, created the way the engine creates it (`type.create(name, settings,
   * deps)`), not yet started: the suite calls `start()` itself, once, as the drain does.
   */
  readonly connector: Connector;
  /**
   * Everything that arrived at the target since the subject was made, oldest first, as
   * arrivals (a bridge subject reads them from a subscriber on the remote broker; an influx
   * subject maps stored points back to topic and payload). Messages are written on topics
   * under `contract/`; a subject whose output remaps topics maps them back here.
   */
  received(): Promise<Arrival[]>;
  /** Makes the target unavailable (stop the peer, block its port, answer 503, ...). */
  breakTarget(): Promise<void>;
  /** Makes it available again; the same connector must recover without being recreated. */
  repairTarget(): Promise<void>;
  /** Tears down the target and whatever the subject started. Called after each test. */
  close(): Promise<void>;
  /** What the target keeps of a message; only these are compared. Default: all fields. */
  readonly keeps?: readonly KeptField[];
  /**
   * How long `received()` may lag behind the target confirming a write, in ms: 0 (the
   * default) means it shows the messages as soon as `write` resolved. A subscriber on a
   * remote broker, or a database that makes writes queryable after a flush, needs more.
   */
  readonly settleMs?: number;
  /** The longest `start()` or `write()` may take to give up on an unavailable target, in ms. Default 5000. */
  readonly unavailableWithinMs?: number;
  /** Adapts a message for this output type (e.g. adds the time-series points it needs in `data`). */
  prepare?(message: OutboxMessage): OutboxMessage;
  /** A version of `message` the target refuses for good; omit when the target cannot be made to. */
  poison?(message: OutboxMessage): OutboxMessage;
  /**
   * A write after `close()`: `rejects` (the default and the expectation) with an
   * OutputError, or a documented other behaviour, which must still settle and deliver nothing.
   */
  readonly writeAfterClose?: 'rejects' | { readonly documented: string };
}

/** Deadline for a write to a reachable target in these tests. */
const WRITE_WITHIN_MS = 5000;

/** `promise`, or a rejection naming `what` when it has not settled within `ms`. */
export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** What `promise` rejected with; fails the test when it resolved or hung past `ms`. */
async function rejectionOf(promise: Promise<unknown>, ms: number, what: string): Promise<unknown> {
  let outcome: { resolved: true } | { resolved: false; error: unknown };
  try {
    await within(promise, ms, what);
    outcome = { resolved: true };
  } catch (error) {
    outcome = { resolved: false, error };
  }
  if (outcome.resolved) throw new Error(`${what} resolved; it should have rejected`);
  if (outcome.error instanceof Error && outcome.error.message.endsWith(`did not settle within ${ms} ms`)) throw outcome.error;
  return outcome.error;
}

/** A message as the outbox hands it to a connector. */
export function contractMessage(seq: number, overrides: Partial<OutboxMessage> = {}): OutboxMessage {
  return {
    seq,
    time: Date.UTC(2026, 0, 1) + seq,
    ruleId: 'contract-rule',
    clientId: 'contract-client',
    topic: `contract/${seq % 3}`,
    payload: Buffer.from(JSON.stringify({ n: seq })),
    qos: 1,
    retain: false,
    properties: undefined,
    data: undefined,
    attempts: 0,
    ...overrides,
  };
}

/** A deep copy, so a connector that changed the messages it was given cannot hide it. */
function copy(m: OutboxMessage): OutboxMessage {
  const p = m.properties;
  return {
    ...m,
    payload: Buffer.from(m.payload),
    properties: p === undefined ? undefined : { ...p, ...(p.correlationData ? { correlationData: Buffer.from(p.correlationData) } : {}), ...(p.userProperties ? { userProperties: structuredClone(p.userProperties) } : {}) },
  };
}

/** The kept fields of a written message, in the shape arrivals are compared in. */
function expected(m: OutboxMessage, keeps: readonly KeptField[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of keeps) out[f] = f === 'properties' ? normalProperties(m.properties) : m[f];
  return out;
}

function observed(a: Arrival, keeps: readonly KeptField[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of keeps) out[f] = f === 'properties' ? normalProperties(a.properties) : a[f];
  return out;
}

/** No properties and an empty set are the same thing at a target. */
function normalProperties(p: MessageProperties | undefined): MessageProperties | undefined {
  if (p === undefined) return undefined;
  const defined = Object.entries(p).filter(([, v]) => v !== undefined);
  return defined.length === 0 ? undefined : (Object.fromEntries(defined) as MessageProperties);
}

/** Checks that `error` is an OutputError with an SB_ERR_ code and the given retryability. */
function expectOutputError(error: unknown, retryable: boolean): void {
  expect(error, `expected an OutputError, got ${String(error)}`).toBeInstanceOf(OutputError);
  const e = error as OutputError;
  expect(e.code, `error "${e.message}" has no SB_ERR_ code`).toMatch(/^SB_ERR_[A-Z0-9_]+$/);
  expect(e.retryable, `error "${e.message}" (${e.code}) should have retryable: ${retryable}`).toBe(retryable);
  expect(e.message.length).toBeGreaterThan(0);
}

/**
 * The shared output contract, run against whatever `make` builds. Each test gets a fresh
 * subject and closes it afterwards.
 */
export function describeOutputContract(name: string, make: () => Promise<ContractSubject>): void {
  describe(`output contract: ${name}`, () => {
    let subject: ContractSubject;
    let keeps: readonly KeptField[];
    let started = false;

    beforeEach(async () => {
      subject = await make();
      keeps = subject.keeps ?? ALL_FIELDS;
      started = false;
    });

    afterEach(async () => {
      await subject.connector.close().catch(() => undefined);
      await subject.close();
    });

    /** Starts the connector once, as the drain does before its first write. */
    async function start(): Promise<void> {
      if (started) return;
      started = true;
      await within(Promise.resolve(subject.connector.start?.()), subject.unavailableWithinMs ?? WRITE_WITHIN_MS, 'connector.start()');
    }

    /** Builds a batch the way this output type needs it, and a private copy of what was written. */
    function batchOf(messages: OutboxMessage[]): { batch: OutboxMessage[]; sent: OutboxMessage[] } {
      const batch = messages.map((m) => (subject.prepare ? subject.prepare(m) : m));
      return { batch, sent: batch.map(copy) };
    }

    async function write(batch: readonly OutboxMessage[]): Promise<void> {
      await within(subject.connector.write(batch), WRITE_WITHIN_MS, `write of a ${batch.length}-message batch`);
    }

    /**
     * What arrived, once `count` messages are there: at once for a subject without lag,
     * else polled for up to its `settleMs`.
     */
    async function arrivals(count: number): Promise<Arrival[]> {
      const settleMs = subject.settleMs ?? 0;
      const deadline = Date.now() + settleMs;
      let got = await subject.received();
      while (got.length < count && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(25, settleMs)));
        got = await subject.received();
      }
      return got;
    }

    it('delivers a whole batch, in order, before write resolves', async () => {
      await start();
      const { batch, sent } = batchOf(Array.from({ length: DEFAULT_OUTBOX_BATCH }, (_, i) => contractMessage(i + 1)));
      await write(batch);
      const got = await arrivals(sent.length);
      expect(got.map((a) => observed(a, keeps))).toEqual(sent.map((m) => expected(m, keeps)));
    });

    it('keeps the order across consecutive batches', async () => {
      await start();
      const first = batchOf([1, 2, 3].map((n) => contractMessage(n, { topic: 'contract/order' })));
      const second = batchOf([4, 5, 6].map((n) => contractMessage(n, { topic: 'contract/order' })));
      await write(first.batch);
      await write(second.batch);
      const got = await arrivals(6);
      expect(got.map((a) => observed(a, keeps))).toEqual([...first.sent, ...second.sent].map((m) => expected(m, keeps)));
    });

    it('resolves an empty batch and delivers nothing', async () => {
      await start();
      await write([]);
      // Something real after it, so a lagging subject has had time to show a stray arrival.
      const { batch, sent } = batchOf([contractMessage(1)]);
      await write(batch);
      const got = await arrivals(1);
      expect(got.map((a) => observed(a, keeps))).toEqual(sent.map((m) => expected(m, keeps)));
    });

    it('delivers topic, payload bytes, QoS, retain and MQTT 5 properties unchanged, as far as the target keeps them', async () => {
      await start();
      const { batch, sent } = batchOf([
        contractMessage(1, {
          topic: 'contract/props',
          payload: Buffer.from([0x00, 0xff, 0x80, 0x0a, 0x7b]),
          qos: 1,
          retain: false,
          properties: {
            contentType: 'application/octet-stream',
            responseTopic: 'contract/reply',
            correlationData: Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00]),
            payloadFormatIndicator: false,
            userProperties: { site: 'a', tag: ['x', 'y'] },
          },
        }),
        contractMessage(2, { topic: 'contract/température/ü', payload: Buffer.from('{"c":21.5,"note":"grüß"}'), qos: 0, retain: true }),
        contractMessage(3, { topic: 'contract/qos2', payload: Buffer.from('plain text'), qos: 2, retain: false, properties: { contentType: 'text/plain', payloadFormatIndicator: true } }),
      ]);
      await write(batch);
      const got = await arrivals(sent.length);
      expect(got.map((a) => observed(a, keeps))).toEqual(sent.map((m) => expected(m, keeps)));
    });

    it('rejects a write with a retryable OutputError, within a deadline, while the target is unavailable', async () => {
      await start();
      await subject.breakTarget();
      const { batch } = batchOf([contractMessage(1), contractMessage(2)]);
      const error = await rejectionOf(subject.connector.write(batch), subject.unavailableWithinMs ?? WRITE_WITHIN_MS, 'write to an unavailable target');
      expectOutputError(error, true);
    });

    it('delivers the same batch again once the target is back', async () => {
      await start();
      await subject.breakTarget();
      const { batch, sent } = batchOf([1, 2, 3, 4].map((n) => contractMessage(n, { topic: 'contract/again' })));
      const error = await rejectionOf(subject.connector.write(batch), subject.unavailableWithinMs ?? WRITE_WITHIN_MS, 'write to an unavailable target');
      expectOutputError(error, true);
      await subject.repairTarget();
      // The outbox retries with backoff; the connector may need a few tries to reconnect.
      const deadline = Date.now() + WRITE_WITHIN_MS;
      for (;;) {
        try {
          await write(batch);
          break;
        } catch (err) {
          expectOutputError(err, true);
          if (Date.now() > deadline) throw err;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
      const got = await arrivals(sent.length);
      // At least once: a failed attempt may have delivered a prefix; the retry ends with all of it, in order.
      expect(got.slice(-sent.length).map((a) => observed(a, keeps))).toEqual(sent.map((m) => expected(m, keeps)));
    });

    it('starts within a deadline even when the target is unavailable', async () => {
      await subject.breakTarget();
      await start().catch((err: unknown) => {
        // The drain tolerates a failed start and keeps retrying writes; hanging is what it cannot survive.
        if (err instanceof Error && err.message.includes('did not settle')) throw err;
      });
      const { batch } = batchOf([contractMessage(1)]);
      expectOutputError(await rejectionOf(subject.connector.write(batch), subject.unavailableWithinMs ?? WRITE_WITHIN_MS, 'write to an unavailable target'), true);
    });

    it('refuses a message the target rejects for good with a non-retryable OutputError', async (ctx) => {
      if (!subject.poison) return ctx.skip(`${name}: the target cannot be made to refuse a message`);
      await start();
      const { batch } = batchOf([contractMessage(1), subject.poison(contractMessage(2)), contractMessage(3)]);
      const error = await rejectionOf(subject.connector.write(batch), WRITE_WITHIN_MS, 'write of a batch with a poison message');
      expectOutputError(error, false);
    });

    it('can be closed twice, also at once', async () => {
      await start();
      const { batch } = batchOf([contractMessage(1)]);
      await write(batch);
      await within(Promise.all([subject.connector.close(), subject.connector.close()]), WRITE_WITHIN_MS, 'two concurrent close() calls');
      await within(subject.connector.close(), WRITE_WITHIN_MS, 'a third close()');
    });

    it('refuses a write after close with an OutputError', async () => {
      await start();
      await within(subject.connector.close(), WRITE_WITHIN_MS, 'close()');
      const { batch } = batchOf([contractMessage(1, { topic: 'contract/after-close' })]);
      const behaviour = subject.writeAfterClose ?? 'rejects';
      if (behaviour === 'rejects') {
        const error = await rejectionOf(subject.connector.write(batch), WRITE_WITHIN_MS, 'write after close');
        expect(error, `expected an OutputError, got ${String(error)}`).toBeInstanceOf(OutputError);
        expect((error as OutputError).code).toMatch(/^SB_ERR_[A-Z0-9_]+$/);
      } else {
        expect(behaviour.documented.length, 'a write after close that does not reject must say why').toBeGreaterThan(0);
        await within(subject.connector.write(batch).catch(() => undefined), WRITE_WITHIN_MS, 'write after close');
      }
      // Nothing was written before close, so nothing may have arrived.
      expect(await arrivals(1)).toEqual([]);
    });
  });
}
