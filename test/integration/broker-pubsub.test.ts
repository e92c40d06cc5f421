import type { IClientOptions, MqttClient } from 'mqtt';
import type { IConnectPacket } from 'mqtt-packet';
import { afterEach, describe, expect, test } from 'vitest';
import type { BrokerDeps } from '../../src/broker/broker.js';
import type { Message, PublisherInfo, QoS } from '../../src/broker/types.js';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import * as helpers from '../helpers/mqtt.js';
import { connect, startBroker, type Received, type TestBroker } from '../helpers/mqtt.js';
import { openRaw, type RawClient } from '../helpers/raw-client.js';

/** Marks a wait started early as handled: its rejection still fails the test where it is awaited, never as an unhandled error. */
const { nextMessage, quiet } = helpers;
const { collect } = helpers;

// Every test gets its own broker, so retained messages and `#` subscribers never leak between tests.
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  // Last registered first: clients and hook releases before the broker they belong to.
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function broker(config: BrokerConfigInput = {}, deps: Partial<BrokerDeps> = {}): Promise<TestBroker> {
  const tb = await startBroker(config, deps);
  cleanups.push(() => tb.close());
  return tb;
}

async function client(tb: TestBroker, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(tb.url, options);
  cleanups.push(() => c.endAsync(true));
  return c;
}

/** A raw client that has sent CONNECT and got CONNACK 0. */
async function raw(tb: TestBroker, protocolVersion: 4 | 5, connect: Partial<Omit<IConnectPacket, 'cmd'>> = {}): Promise<RawClient> {
  const r = await openRaw(tb.port, { protocolVersion });
  cleanups.push(() => r.destroy());
  const connack = await r.connect(connect);
  expect(connack.returnCode ?? connack.reasonCode).toBe(0);
  return r;
}

/** Resolves like `promise`, or rejects with `what` after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    promise.then(
      (v) => (clearTimeout(timer), resolve(v)),
      (e) => (clearTimeout(timer), reject(e)),
    );
  });
}

/** A promise with its resolve exposed, for hooks the test releases by hand. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

const versions = [4, 5] as const;
const qosLevels = [0, 1, 2] as const;

describe('QoS', () => {
  const combos = versions.flatMap((pub) => versions.flatMap((sub) => qosLevels.map((qos) => ({ pub, sub, qos }))));

  test.each(combos)(
    'a QoS $qos message from an MQTT v$pub publisher reaches an MQTT v$sub subscriber at QoS $qos',
    async ({ pub, sub, qos }) => {
      const tb = await broker();
      const subscriber = await client(tb, { protocolVersion: sub });
      const publisher = await client(tb, { protocolVersion: pub });
      await subscriber.subscribeAsync('q/t', { qos: 2 });

      const received = nextMessage(subscriber);
      // publishAsync settles on PUBACK (QoS 1) or PUBCOMP (QoS 2): the inbound flow completed.
      await publisher.publishAsync('q/t', `qos-${qos}`, { qos });
      const m = await received;

      expect(m.topic).toBe('q/t');
      expect(m.payload.toString()).toBe(`qos-${qos}`);
      expect(m.packet.qos).toBe(qos);
    },
  );

  const pairs = qosLevels.flatMap((pubQos) => qosLevels.map((subQos) => ({ pubQos, subQos, want: Math.min(pubQos, subQos) })));

  test.each(pairs)('a QoS $pubQos publish to a QoS $subQos subscription is delivered at QoS $want', async ({ pubQos, subQos, want }) => {
    const tb = await broker();
    const subscriber = await client(tb, { protocolVersion: 5 });
    const publisher = await client(tb);
    const granted = await subscriber.subscribeAsync('m/t', { qos: subQos });
    expect(granted[0]!.qos).toBe(subQos);

    const received = nextMessage(subscriber);
    await publisher.publishAsync('m/t', 'x', { qos: pubQos });
    expect((await received).packet.qos).toBe(want);
  });

  test('a QoS 2 publish resent with dup before PUBREL is delivered once', async () => {
    const tb = await broker();
    const subscriber = await client(tb);
    // QoS 1 delivery: the subscriber sees each copy the moment the broker sends it, in the broker's order.
    await subscriber.subscribeAsync('dup/t', { qos: 1 });
    const publisher = await raw(tb, 4, { clientId: 'dup-pub' });

    const got: string[] = [];
    const sentinelSeen = quiet(
      new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no sentinel; got ${got.join(', ')}`)), 2000);
        subscriber.on('message', (_t, payload) => {
          got.push(payload.toString());
          if (payload.toString() === 'sentinel') {
            clearTimeout(timer);
            resolve();
          }
        });
      }),
    );

    publisher.send({ cmd: 'publish', topic: 'dup/t', payload: Buffer.from('once'), qos: 2, messageId: 7, dup: false, retain: false });
    expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pubrec', messageId: 7 });
    // [MQTT-4.3.3-9] the receiver must not deliver the resent copy again before PUBREL.
    publisher.send({ cmd: 'publish', topic: 'dup/t', payload: Buffer.from('once'), qos: 2, messageId: 7, dup: true, retain: false });
    expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pubrec', messageId: 7 });
    publisher.send({ cmd: 'pubrel', messageId: 7 });
    expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pubcomp', messageId: 7 });

    // After PUBCOMP the packet id is free again, so reusing it is a new message [MQTT-4.3.3-12]: it must be
    // delivered, and once it arrives any second copy of 'once' would have too.
    publisher.send({ cmd: 'publish', topic: 'dup/t', payload: Buffer.from('sentinel'), qos: 2, messageId: 7, dup: false, retain: false });
    expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pubrec', messageId: 7 });
    await sentinelSeen;
    expect(got).toEqual(['once', 'sentinel']);
  });
});

describe('topic matching', () => {
  /** Publishes each topic in order (QoS 1, one after the other) and returns what the subscriber got, up to `expected.length`. */
  async function deliveredTopics(filter: string, published: string[], expectedCount: number): Promise<string[]> {
    const tb = await broker();
    const subscriber = await client(tb);
    const publisher = await client(tb);
    await subscriber.subscribeAsync(filter, { qos: 1 });
    const received = collect(subscriber, expectedCount);
    for (const topic of published) await publisher.publishAsync(topic, topic, { qos: 1 });
    return (await received).map((m) => m.topic);
  }

  test('+ matches exactly one level, including an empty one', async () => {
    // Non-matching topics come first; the last one published matches, so a stray delivery shows up in the list.
    const got = await deliveredTopics('p/+/c', ['p/c', 'p/b/x/c', 'p/b', 'px/b/c', 'p/b/c', 'p//c'], 2);
    expect(got).toEqual(['p/b/c', 'p//c']);
  });

  test('# matches the parent level and every level below it', async () => {
    const got = await deliveredTopics('h/#', ['hx', 'hx/a', 'x/h/a', 'h', 'h/a', 'h/a/b/c'], 3);
    expect(got).toEqual(['h', 'h/a', 'h/a/b/c']);
  });

  test('$SYS topics are not matched by # or +/x but are by $SYS/#', async () => {
    const tb = await broker();
    const all = await client(tb);
    const plusX = await client(tb);
    const sys = await client(tb);
    await all.subscribeAsync('#', { qos: 1 });
    await plusX.subscribeAsync('+/x', { qos: 1 });
    await sys.subscribeAsync('$SYS/#', { qos: 1 });

    const toAll = nextMessage(all);
    const toPlusX = nextMessage(plusX);
    const toSys = nextMessage(sys);
    // [MQTT-4.7.2-1] a filter starting with a wildcard must not match a topic starting with '$'.
    await tb.broker.publish({ topic: '$SYS/x', payload: 'system', qos: 1 });
    await tb.broker.publish({ topic: 'app/x', payload: 'sentinel', qos: 1 });

    expect((await toSys).topic).toBe('$SYS/x');
    expect((await toAll).topic).toBe('app/x');
    expect((await toPlusX).topic).toBe('app/x');
  });
});

describe('subscriptions', () => {
  test('overlapping subscriptions of one client give one copy at the highest granted QoS', async () => {
    const tb = await broker();
    const subscriber = await client(tb);
    const publisher = await client(tb);
    await subscriber.subscribeAsync({ 'o/#': { qos: 0 }, 'o/+': { qos: 2 }, 'o/a': { qos: 1 } });

    const received = collect(subscriber, 2);
    await publisher.publishAsync('o/a', 'overlap', { qos: 2 });
    // Matches only o/# (QoS 0): a second copy of o/a would arrive before it.
    await publisher.publishAsync('o/b/c', 'sentinel', { qos: 2 });
    const [first, second] = await received;

    expect(first!.topic).toBe('o/a');
    expect(first!.packet.qos).toBe(2);
    expect(second!.topic).toBe('o/b/c');
    expect(second!.packet.qos).toBe(0);
  });

  test('MQTT 5 delivery through overlapping subscriptions carries every matching subscription identifier', async () => {
    const tb = await broker();
    const subscriber = await client(tb, { protocolVersion: 5 });
    const publisher = await client(tb);
    await subscriber.subscribeAsync('si/#', { qos: 1, properties: { subscriptionIdentifier: 11 } });
    await subscriber.subscribeAsync('si/+', { qos: 1, properties: { subscriptionIdentifier: 22 } });
    await subscriber.subscribeAsync('si/a', { qos: 1 }); // no identifier: contributes none

    const received = collect(subscriber, 2);
    await publisher.publishAsync('si/a', 'both', { qos: 1 });
    await publisher.publishAsync('si/a/b', 'only-hash', { qos: 1 });
    const [both, onlyHash] = await received;

    const ids = (m: Received) => [m.packet.properties?.subscriptionIdentifier ?? []].flat().sort((a, b) => a - b);
    expect(both!.topic).toBe('si/a');
    expect(ids(both!)).toEqual([11, 22]);
    expect(onlyHash!.topic).toBe('si/a/b');
    expect(ids(onlyHash!)).toEqual([11]);
  });

  test('unsubscribing stops delivery', async () => {
    const tb = await broker();
    const subscriber = await client(tb);
    const publisher = await client(tb);
    await subscriber.subscribeAsync({ 'u/gone': { qos: 1 }, 'u/kept': { qos: 1 } });
    await subscriber.unsubscribeAsync('u/gone');

    const received = nextMessage(subscriber);
    await publisher.publishAsync('u/gone', 'should not arrive', { qos: 1 });
    await publisher.publishAsync('u/kept', 'sentinel', { qos: 1 });
    expect((await received).topic).toBe('u/kept');
  });

  test('MQTT 5 UNSUBACK says 0x00 for a subscription that existed and 0x11 for one that did not', async () => {
    const tb = await broker();
    const subscriber = await client(tb, { protocolVersion: 5 });
    await subscriber.subscribeAsync('u5/a', { qos: 1 });

    const unsuback = await subscriber.unsubscribeAsync(['u5/a', 'u5/never']);
    expect(unsuback).toMatchObject({ cmd: 'unsuback', granted: [0x00, 0x11] });
    // Unsubscribing again: now it is gone.
    expect(await subscriber.unsubscribeAsync('u5/a')).toMatchObject({ granted: [0x11] });
  });

  for (const { version, code } of [
    { version: 4 as const, code: 0x80 },
    { version: 5 as const, code: 0x8f },
  ]) {
    const hex = `0x${code.toString(16).toUpperCase()}`;
    test(`an MQTT v${version} SUBSCRIBE with invalid filters gets SUBACK ${hex} for those filters only and the connection stays`, async () => {
      const tb = await broker();
      const publisher = await client(tb);
      const subscriber = await raw(tb, version, { clientId: `bad-filter-${version}` });

      // MQTT.js refuses to send these filters, so the raw client does.
      subscriber.send({
        cmd: 'subscribe',
        messageId: 1,
        subscriptions: [
          { topic: 'a/#/b', qos: 1 },
          { topic: 'ok/t', qos: 1 },
          { topic: 'sport+', qos: 0 },
          { topic: 'x#', qos: 2 },
        ],
      });
      expect(await subscriber.nextPacket()).toMatchObject({ cmd: 'suback', messageId: 1, granted: [code, 1, code, code] });

      // Still connected, and the valid filter works.
      await publisher.publishAsync('ok/t', 'still here', { qos: 1 });
      expect(await subscriber.nextPacket()).toMatchObject({ cmd: 'publish', topic: 'ok/t', qos: 1 });
    });
  }
});

describe('shared subscriptions', () => {
  test('each message goes to exactly one member of a group, both members get some, and other subscribers get all', async () => {
    const tb = await broker();
    const memberA = await client(tb, { protocolVersion: 5 });
    const memberB = await client(tb); // groups may mix MQTT 3.1.1 and 5 members
    const loneGroup = await client(tb, { protocolVersion: 5 });
    const plain = await client(tb, { protocolVersion: 5 });
    const publisher = await client(tb);
    await memberA.subscribeAsync('$share/g/sh/#', { qos: 1 });
    await memberB.subscribeAsync('$share/g/sh/#', { qos: 1 });
    await loneGroup.subscribeAsync('$share/h/sh/#', { qos: 1 });
    await plain.subscribeAsync('sh/#', { qos: 1 });

    const n = 10;
    const sent = Array.from({ length: n }, (_, i) => `m${i}`);
    const gotA: string[] = [];
    const gotB: string[] = [];
    memberA.on('message', (_t, p) => gotA.push(p.toString()));
    memberB.on('message', (_t, p) => gotB.push(p.toString()));
    const groupDone = quiet(new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`group g got ${gotA.length + gotB.length} of ${n}`)), 2000);
      const check = () => {
        if (gotA.length + gotB.length >= n) {
          clearTimeout(timer);
          resolve();
        }
      };
      memberA.on('message', check);
      memberB.on('message', check);
    }));
    const toLone = collect(loneGroup, n);
    const toPlain = collect(plain, n);

    for (const payload of sent) await publisher.publishAsync(`sh/${payload}`, payload, { qos: 1 });
    await groupDone;

    // Exactly once per group: n deliveries in total with no payload missing means no duplicates either.
    expect([...gotA, ...gotB].sort()).toEqual([...sent].sort());
    expect(gotA.length).toBeGreaterThan(0);
    expect(gotB.length).toBeGreaterThan(0);
    expect((await toLone).map((m) => m.payload.toString())).toEqual(sent);
    expect((await toPlain).map((m) => m.payload.toString())).toEqual(sent);
    // Shared deliveries use the real topic, not the $share filter.
    expect((await toPlain)[0]!.topic).toBe('sh/m0');
  });

  test('retained messages are not sent to a new shared subscription', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    await publisher.publishAsync('rs/t', 'retained', { qos: 1, retain: true });

    const member = await client(tb, { protocolVersion: 5 });
    const received = nextMessage(member);
    await member.subscribeAsync('$share/g/rs/t', { qos: 1 });
    await publisher.publishAsync('rs/t', 'live', { qos: 1 });

    const m = await received;
    expect(m.payload.toString()).toBe('live');
    expect(m.packet.retain).toBe(false);
  });
});

describe('the onPublish hook', () => {
  test('sees every accepted publish with its message fields and the publisher', async () => {
    const seen: Array<{ message: Message; publisher: PublisherInfo }> = [];
    const tb = await broker({}, { onPublish: (message, publisher) => void seen.push({ message, publisher }) });
    const v4 = await client(tb, { clientId: 'hook-pub-4' });
    const v5 = await client(tb, { clientId: 'hook-pub-5', protocolVersion: 5 });

    await v4.publishAsync('hk/a', 'zero', { qos: 0 });
    await v4.publishAsync('hk/b', 'one', { qos: 1, retain: true });
    await v5.publishAsync('hk/c', 'two', { qos: 2, properties: { contentType: 'text/plain', userProperties: { k: 'v' } } });

    // QoS 0 has no ack: the QoS 1 and 2 acks (sent after the hook) prove the earlier QoS 0 was seen too.
    expect(seen).toHaveLength(3);
    expect(seen[0]!.message).toMatchObject({ topic: 'hk/a', qos: 0, retain: false, clientId: 'hook-pub-4' });
    expect(seen[0]!.message.payload.toString()).toBe('zero');
    expect(seen[0]!.publisher).toMatchObject({ clientId: 'hook-pub-4', protocolVersion: 4 });
    expect(seen[1]!.message).toMatchObject({ topic: 'hk/b', qos: 1, retain: true, clientId: 'hook-pub-4' });
    expect(seen[1]!.message.payload.toString()).toBe('one');
    expect(seen[2]!.message).toMatchObject({
      topic: 'hk/c',
      qos: 2,
      retain: false,
      clientId: 'hook-pub-5',
      properties: { contentType: 'text/plain', userProperties: { k: 'v' } },
    });
    expect(seen[2]!.message.payload.toString()).toBe('two');
    expect(seen[2]!.publisher).toMatchObject({ clientId: 'hook-pub-5', protocolVersion: 5 });
    expect(typeof seen[2]!.message.timestamp).toBe('number');
  });

  for (const { qos, ack } of [
    { qos: 1 as QoS, ack: 'puback' as const },
    { qos: 2 as QoS, ack: 'pubrec' as const },
  ]) {
    test(`the ${ack.toUpperCase()} for a QoS ${qos} publish waits until the hook promise resolves`, async () => {
      const gate = deferred();
      const called = deferred<Message>();
      const tb = await broker({}, { onPublish: (message) => (called.resolve(message), gate.promise) });
      cleanups.push(() => gate.resolve()); // never leave broker.close() waiting on the hook
      const publisher = await raw(tb, 5, { clientId: 'gated' });

      publisher.send({ cmd: 'publish', topic: 'gate/t', payload: Buffer.from('g'), qos, messageId: 42, dup: false, retain: false });
      expect((await within(called.promise, 2000, 'onPublish was not called')).topic).toBe('gate/t');
      // The broker answers packets in order: PINGRESP first proves no ack had been sent while the hook was pending.
      publisher.send({ cmd: 'pingreq' });
      expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pingresp' });

      gate.resolve();
      expect(await publisher.nextPacket()).toMatchObject({ cmd: ack, messageId: 42 });
    });
  }

  test('a rejected hook closes an MQTT 3.1.1 publisher connection without PUBACK, so it resends later', async () => {
    const tb = await broker({}, { onPublish: () => Promise.reject(new Error('store down')) });
    const publisher = await raw(tb, 4, { clientId: 'rejected-311' });
    publisher.send({ cmd: 'publish', topic: 'deny/t', payload: Buffer.from('x'), qos: 1, messageId: 3, dup: false, retain: false });
    await publisher.closed();
    await expect(publisher.nextPacket()).rejects.toThrow(/closed/);
  });

  test('a resent QoS 2 publish is not acknowledged while the hook for the first copy is still pending', async () => {
    const gate = deferred();
    const calls: Message[] = [];
    const called = deferred();
    const tb = await broker({}, { onPublish: (message) => (calls.push(message), called.resolve(), gate.promise) });
    cleanups.push(() => gate.resolve());
    const publisher = await raw(tb, 5, { clientId: 'gated-dup' });

    const publish = { cmd: 'publish', topic: 'gate/dup', payload: Buffer.from('g'), qos: 2, messageId: 9, retain: false } as const;
    publisher.send({ ...publish, dup: false });
    await within(called.promise, 2000, 'onPublish was not called');
    publisher.send({ ...publish, dup: true });
    // A PUBREC for the copy would tell the client the message is safe before the hook said so.
    publisher.send({ cmd: 'pingreq' });
    expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pingresp' });

    gate.resolve();
    expect(await publisher.nextPacket()).toMatchObject({ cmd: 'pubrec', messageId: 9 });
    publisher.send({ cmd: 'pubrel', messageId: 9 });
    // At most one more PUBREC (for the copy), then PUBCOMP; the hook saw the message once.
    let next = await publisher.nextPacket();
    if (next.cmd === 'pubrec') next = await publisher.nextPacket();
    expect(next).toMatchObject({ cmd: 'pubcomp', messageId: 9 });
    expect(calls).toHaveLength(1);
  });
});

describe('broker.publish', () => {
  test('resolves only once the onPublish hook has, and the hook sees clientId empty', async () => {
    const gate = deferred();
    const seen: Message[] = [];
    const tb = await broker({}, { onPublish: (message) => (seen.push(message), gate.promise) });
    cleanups.push(() => gate.resolve());

    let settled = false;
    const published = tb.broker.publish({ topic: 'engine/gated', payload: 'x', qos: 1 }).then(() => (settled = true));
    await within(
      new Promise<void>((resolve) => {
        const poll = () => (seen.length > 0 ? resolve() : setImmediate(poll));
        poll();
      }),
      2000,
      'onPublish was not called',
    );
    // A full turn of the event loop with the hook pending: publish() must still be waiting.
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(false);
    expect(seen[0]).toMatchObject({ topic: 'engine/gated', clientId: '', hops: 0 });

    gate.resolve();
    await within(published, 2000, 'broker.publish did not resolve');
    expect(settled).toBe(true);
  });


  test('a message published by the engine reaches matching subscribers', async () => {
    const tb = await broker();
    const v4 = await client(tb);
    const v5 = await client(tb, { protocolVersion: 5 });
    await v4.subscribeAsync('engine/#', { qos: 1 });
    await v5.subscribeAsync('engine/+', { qos: 2 });

    const to4 = nextMessage(v4);
    const to5 = nextMessage(v5);
    await tb.broker.publish({ topic: 'engine/out', payload: Buffer.from('from-rules'), qos: 2, properties: { userProperties: { rule: 'r1' } } });

    const [m4, m5] = await Promise.all([to4, to5]);
    expect(m4.topic).toBe('engine/out');
    expect(m4.payload.toString()).toBe('from-rules');
    expect(m4.packet.qos).toBe(1);
    expect(m5.packet.qos).toBe(2);
    expect(m5.packet.properties?.userProperties).toEqual({ rule: 'r1' });
  });
});
