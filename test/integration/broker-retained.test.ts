import type { IClientOptions, MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import * as helpers from '../helpers/mqtt.js';
import { startEngine } from '../helpers/engine.js';
import { connect, startBroker, type TestBroker } from '../helpers/mqtt.js';

/** Marks a wait started early as handled: its rejection still fails the test where it is awaited, never as an unhandled error. */
const { nextMessage } = helpers;
const { collect } = helpers;

// Every test gets its own broker, so retained messages never leak between tests.
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function broker(): Promise<TestBroker> {
  const tb = await startBroker();
  cleanups.push(() => tb.close());
  return tb;
}

async function client(tb: TestBroker, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(tb.url, options);
  cleanups.push(() => c.endAsync(true));
  return c;
}

describe('retained store', () => {
  test.each([4, 5] as const)('a retained message is sent to a later MQTT v%i subscriber with the retain flag set', async (version) => {
    const tb = await broker();
    const publisher = await client(tb);
    await publisher.publishAsync('r/t', 'kept', { qos: 1, retain: true });

    const subscriber = await client(tb, { protocolVersion: version });
    const received = nextMessage(subscriber);
    await subscriber.subscribeAsync('r/t', { qos: 1 });
    const m = await received;

    expect(m.topic).toBe('r/t');
    expect(m.payload.toString()).toBe('kept');
    expect(m.packet.retain).toBe(true);
    expect(m.packet.qos).toBe(1);
  });

  test('a retained message is delivered at the lower of its QoS and the subscription QoS', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    await publisher.publishAsync('rq/two', 'q2', { qos: 2, retain: true });
    await publisher.publishAsync('rq/zero', 'q0', { qos: 0, retain: true });
    // The QoS 0 retained publish has no ack; a QoS 1 publish after it proves the broker has handled it.
    await publisher.publishAsync('rq/sync', '', { qos: 1 });

    const subscriber = await client(tb);
    const received = collect(subscriber, 2);
    await subscriber.subscribeAsync('rq/+', { qos: 1 });
    const byTopic = Object.fromEntries((await received).map((m) => [m.topic, m.packet.qos]));
    expect(byTopic).toEqual({ 'rq/two': 1, 'rq/zero': 0 });
  });

  test('every retained message matching a wildcard subscription is sent', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    for (const topic of ['w/a', 'w/b', 'w/b/c', 'other/a']) await publisher.publishAsync(topic, topic, { qos: 1, retain: true });

    const subscriber = await client(tb);
    const received = collect(subscriber, 4);
    await subscriber.subscribeAsync('w/#', { qos: 1 });
    await publisher.publishAsync('w/live', 'sentinel', { qos: 1 });
    const got = (await received).map((m) => m.topic);
    expect(got.slice(0, 3).sort()).toEqual(['w/a', 'w/b', 'w/b/c']);
    expect(got[3]).toBe('w/live');
  });

  test('a newer retained publish replaces the stored one', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    await publisher.publishAsync('rep/t', 'old', { qos: 1, retain: true });
    await publisher.publishAsync('rep/t', 'new', { qos: 1, retain: true });

    const subscriber = await client(tb);
    const received = collect(subscriber, 2);
    await subscriber.subscribeAsync('rep/t', { qos: 1 });
    await publisher.publishAsync('rep/t', 'live', { qos: 1 });
    // Only one retained message per topic: a leftover 'old' would come before 'live'.
    expect((await received).map((m) => m.payload.toString())).toEqual(['new', 'live']);
  });

  test('a retained publish with an empty payload clears the stored message', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    await publisher.publishAsync('clr/t', 'doomed', { qos: 1, retain: true });
    await publisher.publishAsync('clr/t', '', { qos: 1, retain: true });

    const subscriber = await client(tb);
    const received = nextMessage(subscriber);
    await subscriber.subscribeAsync('clr/t', { qos: 1 });
    await publisher.publishAsync('clr/t', 'live', { qos: 1 });
    const m = await received;
    expect(m.payload.toString()).toBe('live');
    expect(m.packet.retain).toBe(false);
  });
});

describe('retain flag on live delivery', () => {
  test('a 3.1.1 subscriber gets retain=false on a live delivery of a retained publish', async () => {
    const tb = await broker();
    const subscriber = await client(tb);
    const publisher = await client(tb);
    await subscriber.subscribeAsync('live/t', { qos: 1 });

    const received = nextMessage(subscriber);
    await publisher.publishAsync('live/t', 'now', { qos: 1, retain: true });
    const m = await received;
    expect(m.payload.toString()).toBe('now');
    expect(m.packet.retain).toBe(false);
  });

  test('an MQTT 5 subscription without Retain As Published gets retain=false on live deliveries', async () => {
    const tb = await broker();
    const subscriber = await client(tb, { protocolVersion: 5 });
    const publisher = await client(tb);
    await subscriber.subscribeAsync('rap/t', { qos: 1, rap: false });

    const received = nextMessage(subscriber);
    await publisher.publishAsync('rap/t', 'now', { qos: 1, retain: true });
    expect((await received).packet.retain).toBe(false);
  });

  test('an MQTT 5 subscription with Retain As Published keeps the publisher retain flag on live deliveries', async () => {
    const tb = await broker();
    const subscriber = await client(tb, { protocolVersion: 5 });
    const publisher = await client(tb);
    await subscriber.subscribeAsync('rap/t', { qos: 1, rap: true });

    const received = collect(subscriber, 2);
    await publisher.publishAsync('rap/t', 'retained', { qos: 1, retain: true });
    await publisher.publishAsync('rap/t', 'plain', { qos: 1, retain: false });
    const [retained, plain] = await received;
    expect(retained!.payload.toString()).toBe('retained');
    expect(retained!.packet.retain).toBe(true);
    expect(plain!.payload.toString()).toBe('plain');
    expect(plain!.packet.retain).toBe(false);
  });
});

describe('Retain Handling', () => {
  /** A broker with one retained message on rh/t and an MQTT 5 subscriber. */
  async function setup() {
    const tb = await broker();
    const publisher = await client(tb);
    await publisher.publishAsync('rh/t', 'retained', { qos: 1, retain: true });
    const subscriber = await client(tb, { protocolVersion: 5 });
    /** Subscribes with `rh`, then publishes a live sentinel; resolves with the payloads received up to the sentinel. */
    const subscribeAndSee = async (rh: 0 | 1 | 2): Promise<string[]> => {
      const got: string[] = [];
      const done = new Promise<string[]>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no sentinel; got ${got.join(', ')}`)), 2000);
        const on = (_t: string, payload: Buffer) => {
          got.push(payload.toString());
          if (payload.toString() === 'sentinel') {
            clearTimeout(timer);
            subscriber.off('message', on);
            resolve(got);
          }
        };
        subscriber.on('message', on);
      });
      await subscriber.subscribeAsync('rh/t', { qos: 1, rh });
      // Retained messages are sent right after SUBACK, so a later live publish arrives after them.
      await publisher.publishAsync('rh/t', 'sentinel', { qos: 1 });
      return done;
    };
    return { subscribeAndSee };
  }

  test('Retain Handling 0 sends retained messages on every subscribe', async () => {
    const { subscribeAndSee } = await setup();
    expect(await subscribeAndSee(0)).toEqual(['retained', 'sentinel']);
    expect(await subscribeAndSee(0)).toEqual(['retained', 'sentinel']);
  });

  test('Retain Handling 1 sends retained messages only when the subscription is new', async () => {
    const { subscribeAndSee } = await setup();
    expect(await subscribeAndSee(1)).toEqual(['retained', 'sentinel']);
    expect(await subscribeAndSee(1)).toEqual(['sentinel']);
  });

  test('Retain Handling 2 never sends retained messages', async () => {
    const { subscribeAndSee } = await setup();
    expect(await subscribeAndSee(2)).toEqual(['sentinel']);
    expect(await subscribeAndSee(2)).toEqual(['sentinel']);
  });
});

describe('No Local', () => {
  test('a No Local subscriber never gets its own messages but gets everyone else’s', async () => {
    const tb = await broker();
    const self = await client(tb, { protocolVersion: 5, clientId: 'nl-self' });
    const other = await client(tb, { protocolVersion: 5, clientId: 'nl-other' });
    await self.subscribeAsync('nl/t', { qos: 1, nl: true });
    await other.subscribeAsync('nl/t', { qos: 1 });

    const toSelf = nextMessage(self);
    const toOther = collect(other, 2);
    await self.publishAsync('nl/t', 'mine', { qos: 1 });
    await other.publishAsync('nl/t', 'theirs', { qos: 1 });

    expect((await toSelf).payload.toString()).toBe('theirs');
    // Without No Local a client does get its own messages.
    expect((await toOther).map((m) => m.payload.toString())).toEqual(['mine', 'theirs']);
  });
});

describe('retained messages while their commit is pending', () => {
  test('a subscriber arriving between a retained publish and its commit gets the retained message', async () => {
    const te = await startEngine({});
    try {
      const sub = await connect(te.url, { protocolVersion: 5 });
      // The publish is accepted now and committed at the end of this turn; the SUBSCRIBE
      // is handled in between.
      const subscribed = sub.subscribeAsync('state/i', { qos: 1 });
      await new Promise((resolve) => setImmediate(resolve));
      const got = nextMessage(sub, { within: 2000 });
      void te.engine.broker.publish({ topic: 'state/i', payload: 'online', retain: true, qos: 0 });
      await subscribed;
      expect((await got).payload.toString()).toBe('online');
      await sub.endAsync();
    } finally {
      await te.close();
    }
  });
});
