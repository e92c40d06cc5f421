import type { IClientOptions, MqttClient } from 'mqtt';
import type { IConnackPacket, IConnectPacket, IPublishPacket } from 'mqtt-packet';
import { afterEach, describe, expect, test } from 'vitest';
import type { BrokerDeps } from '../../src/broker/broker.js';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import * as helpers from '../helpers/mqtt.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { connect, startBroker, type TestBroker } from '../helpers/mqtt.js';
import { openRaw, type RawClient } from '../helpers/raw-client.js';

/** Marks a wait started early as handled: its rejection still fails the test where it is awaited, never as an unhandled error. */
const { nextMessage } = helpers;
const { collect } = helpers;

// Every test gets its own broker; cleanups run last-registered first (clients and hook gates before their broker).
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function broker(config: BrokerConfigInput = {}, deps: Partial<BrokerDeps> = {}): Promise<TestBroker> {
  const tb = await startBroker(config, deps);
  cleanups.push(() => tb.close());
  return tb;
}

async function client(tb: TestBroker, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(tb.url, { protocolVersion: 5, ...options });
  cleanups.push(() => c.endAsync(true));
  return c;
}

/** An MQTT 5 raw client that has sent CONNECT; resolves with it and the CONNACK (checked to be a success). */
async function raw(tb: TestBroker, connect: Partial<Omit<IConnectPacket, 'cmd'>> = {}): Promise<{ r: RawClient; connack: IConnackPacket }> {
  const r = await openRaw(tb.port, { protocolVersion: 5 });
  cleanups.push(() => r.destroy());
  const connack = await r.connect(connect);
  expect(connack.reasonCode).toBe(0);
  return { r, connack };
}

/** A PUBLISH packet for the raw client (QoS 0 unless `fields` say otherwise). */
function publishPacket(topic: string, payload: string, fields: Partial<IPublishPacket> = {}): IPublishPacket {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, dup: false, retain: false, ...fields };
}

/** Subscribes a raw client and checks the SUBACK granted what was asked. */
async function rawSubscribe(r: RawClient, topic: string, qos: 0 | 1 | 2, messageId = 1): Promise<void> {
  r.send({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos }] });
  expect(await r.expectPacket('suback')).toMatchObject({ messageId, granted: [qos] });
}

/** A promise with its resolve exposed, for hooks the test releases by hand. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

describe('reason codes', () => {
  test('PUBACK, PUBREC and PUBCOMP carry 0x00 for an accepted publish that has subscribers', async () => {
    const tb = await broker();
    const subscriber = await client(tb);
    await subscriber.subscribeAsync('rc/#', { qos: 2 });
    const { r } = await raw(tb);

    r.send(publishPacket('rc/one', 'x', { qos: 1, messageId: 1 }));
    expect(await r.expectPacket('puback')).toMatchObject({ messageId: 1, reasonCode: 0x00 });
    r.send(publishPacket('rc/two', 'x', { qos: 2, messageId: 2 }));
    expect(await r.expectPacket('pubrec')).toMatchObject({ messageId: 2, reasonCode: 0x00 });
    r.send({ cmd: 'pubrel', messageId: 2 });
    expect(await r.expectPacket('pubcomp')).toMatchObject({ messageId: 2, reasonCode: 0x00 });
  });

  test('PUBACK says success even when no client subscribes, since rules may have taken the message', async () => {
    // Mosquitto answers 0x10 (No matching subscribers) here; signalbox does not, because a
    // message nobody subscribes to may still have been stored or forwarded by a rule.
    const tb = await broker();
    const { r } = await raw(tb);
    r.send(publishPacket('nobody/listens', 'x', { qos: 1, messageId: 1 }));
    const ack = (await r.expectPacket('puback')) as { messageId: number; reasonCode?: number };
    expect(ack.messageId).toBe(1);
    expect(ack.reasonCode ?? 0).toBe(0);
  });

  test('a rejected onPublish hook gives PUBACK and PUBREC 0x80 and the connection stays', async () => {
    const tb = await broker({}, { onPublish: () => Promise.reject(new Error('rule store is down')) });
    const { r } = await raw(tb);

    r.send(publishPacket('deny/one', 'x', { qos: 1, messageId: 1 }));
    expect(await r.expectPacket('puback')).toMatchObject({ messageId: 1, reasonCode: 0x80 });
    r.send(publishPacket('deny/two', 'x', { qos: 2, messageId: 2 }));
    expect(await r.expectPacket('pubrec')).toMatchObject({ messageId: 2, reasonCode: 0x80 });
    r.send({ cmd: 'pingreq' });
    await r.expectPacket('pingresp');
  });

  test('SUBACK carries the granted QoS of each filter as its reason code', async () => {
    const tb = await broker();
    const { r } = await raw(tb);
    r.send({
      cmd: 'subscribe',
      messageId: 3,
      subscriptions: [
        { topic: 'g/0', qos: 0 },
        { topic: 'g/1', qos: 1 },
        { topic: 'g/2', qos: 2 },
      ],
    });
    expect(await r.expectPacket('suback')).toMatchObject({ messageId: 3, granted: [0x00, 0x01, 0x02] });
  });
});

describe('Topic Alias from the client', () => {
  test('CONNACK advertises the configured maxTopicAlias as Topic Alias Maximum', async () => {
    const tb = await broker({ limits: { maxTopicAlias: 3 } });
    const { connack } = await raw(tb);
    expect(connack.properties?.topicAliasMaximum).toBe(3);
  });

  test('a client may set an alias, publish with an empty topic and the alias, and remap the alias', async () => {
    const tb = await broker({ limits: { maxTopicAlias: 3 } });
    const subscriber = await client(tb);
    await subscriber.subscribeAsync('ta/#', { qos: 1 });
    const { r } = await raw(tb);

    const received = collect(subscriber, 4);
    r.send(publishPacket('ta/x', 'set', { qos: 1, messageId: 1, properties: { topicAlias: 3 } }));
    r.send(publishPacket('', 'use', { qos: 1, messageId: 2, properties: { topicAlias: 3 } }));
    r.send(publishPacket('ta/y', 'remap', { qos: 1, messageId: 3, properties: { topicAlias: 3 } }));
    r.send(publishPacket('', 'use-again', { qos: 1, messageId: 4, properties: { topicAlias: 3 } }));

    const got = (await received).map((m) => `${m.topic} ${m.payload.toString()}`);
    expect(got).toEqual(['ta/x set', 'ta/x use', 'ta/y remap', 'ta/y use-again']);
    for (const id of [1, 2, 3, 4]) expect(await r.expectPacket('puback')).toMatchObject({ messageId: id });
  });

  for (const { alias, why } of [
    { alias: 4, why: 'above the advertised maximum' },
    { alias: 0, why: 'of zero' },
  ]) {
    test(`a Topic Alias ${why} gets DISCONNECT 0x94 and the message is not delivered`, async () => {
      const tb = await broker({ limits: { maxTopicAlias: 3 } });
      const subscriber = await client(tb);
      await subscriber.subscribeAsync('ta/#', { qos: 1 });
      const bystander = await client(tb);
      const { r } = await raw(tb);

      const received = nextMessage(subscriber);
      r.send(publishPacket('ta/bad', 'x', { qos: 1, messageId: 1, properties: { topicAlias: alias } }));
      expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x94 });
      await r.closed();

      await bystander.publishAsync('ta/ok', 'sentinel', { qos: 1 });
      expect((await received).topic).toBe('ta/ok');
    });
  }

  test('an empty topic with an alias that was never set gets DISCONNECT 0x82', async () => {
    const tb = await broker({ limits: { maxTopicAlias: 3 } });
    const subscriber = await client(tb);
    await subscriber.subscribeAsync('#', { qos: 1 });
    const bystander = await client(tb);
    const { r } = await raw(tb);

    const received = nextMessage(subscriber);
    r.send(publishPacket('', 'x', { qos: 1, messageId: 1, properties: { topicAlias: 2 } }));
    expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x82 });
    await r.closed();

    await bystander.publishAsync('ok/after', 'sentinel', { qos: 1 });
    expect((await received).topic).toBe('ok/after');
  });
});

describe('Topic Alias towards the client', () => {
  test('a client that sets topicAliasMaximum gets topic and alias first, then an empty topic with the same alias', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const { r } = await raw(tb, { properties: { topicAliasMaximum: 5 } });
    await rawSubscribe(r, 'oa/#', 0);

    await publisher.publishAsync('oa/t', 'first', { qos: 1 });
    await publisher.publishAsync('oa/t', 'second', { qos: 1 });
    const first = await r.expectPacket('publish');
    const second = await r.expectPacket('publish');

    expect(first.topic).toBe('oa/t');
    const alias = first.properties?.topicAlias;
    expect(alias).toBeGreaterThanOrEqual(1);
    expect(alias).toBeLessThanOrEqual(5);
    expect(second.topic).toBe('');
    expect(second.properties?.topicAlias).toBe(alias);
    expect(second.payload.toString()).toBe('second');
  });

  test('a client that does not set topicAliasMaximum never gets an alias', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const { r } = await raw(tb);
    await rawSubscribe(r, 'na/#', 0);

    await publisher.publishAsync('na/t', 'first', { qos: 1 });
    await publisher.publishAsync('na/t', 'second', { qos: 1 });
    for (const payload of ['first', 'second']) {
      const p = await r.expectPacket('publish');
      expect(p).toMatchObject({ topic: 'na/t' });
      expect(p.payload.toString()).toBe(payload);
      expect(p.properties?.topicAlias).toBeUndefined();
    }
  });

  test('outbound aliases stay within the client maximum and always resolve to the right topic', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const { r } = await raw(tb, { properties: { topicAliasMaximum: 1 } });
    await rawSubscribe(r, 'ob/#', 0);

    const topics = ['ob/a', 'ob/b', 'ob/a', 'ob/a', 'ob/c', 'ob/b'];
    for (const [i, topic] of topics.entries()) await publisher.publishAsync(topic, `m${i}`, { qos: 1 });

    // Resolve what arrives the way a client must [MQTT-3.3.2-12]: a topic with an alias (re)maps it, an empty topic looks it up.
    const aliases = new Map<number, string>();
    const resolved: string[] = [];
    for (const _ of topics) {
      const p = await r.expectPacket('publish');
      const alias = p.properties?.topicAlias;
      if (alias !== undefined) {
        expect(alias).toBe(1);
        if (p.topic) aliases.set(alias, p.topic);
      }
      resolved.push(p.topic || (alias !== undefined ? aliases.get(alias) ?? '<unknown alias>' : '<empty topic, no alias>'));
    }
    expect(resolved).toEqual(topics);
  });
});

describe('Message Expiry Interval', () => {
  test('a live message is forwarded with its Message Expiry Interval', async () => {
    const clock = new FakeClock();
    const tb = await broker({}, { clock });
    const subscriber = await client(tb);
    const publisher = await client(tb);
    await subscriber.subscribeAsync('exp/t', { qos: 1 });

    const received = nextMessage(subscriber);
    await publisher.publishAsync('exp/t', 'x', { qos: 1, properties: { messageExpiryInterval: 60 } });
    expect((await received).packet.properties?.messageExpiryInterval).toBe(60);
  });

  test('a retained message is sent with the seconds it has left', async () => {
    const clock = new FakeClock();
    const tb = await broker({}, { clock });
    const publisher = await client(tb);
    await publisher.publishAsync('exp/r', 'x', { qos: 1, retain: true, properties: { messageExpiryInterval: 60 } });

    clock.advance(20_000);
    const subscriber = await client(tb);
    const received = nextMessage(subscriber);
    await subscriber.subscribeAsync('exp/r', { qos: 1 });
    expect((await received).packet.properties?.messageExpiryInterval).toBe(40);
  });

  test('an expired retained message is not sent to a new subscriber', async () => {
    const clock = new FakeClock();
    const tb = await broker({}, { clock });
    const publisher = await client(tb);
    await publisher.publishAsync('exp/gone', 'x', { qos: 1, retain: true, properties: { messageExpiryInterval: 10 } });

    clock.advance(11_000);
    const subscriber = await client(tb);
    const received = nextMessage(subscriber);
    await subscriber.subscribeAsync('exp/gone', { qos: 1 });
    await publisher.publishAsync('exp/gone', 'live', { qos: 1 });
    expect((await received).payload.toString()).toBe('live');
  });

  /**
   * Connects `clientId` with a persistent session subscribed to exp/q/#, disconnects it cleanly and
   * waits until the broker has closed the socket, so what is published next is queued.
   */
  async function offlineSession(tb: TestBroker, clientId: string): Promise<void> {
    const { r } = await raw(tb, { clientId, clean: false, properties: { sessionExpiryInterval: 300 } });
    await rawSubscribe(r, 'exp/q/#', 1);
    r.send({ cmd: 'disconnect', reasonCode: 0 });
    r.end();
    await r.closed();
  }

  test('a message queued for an offline session is delivered with the seconds it has left', async () => {
    const clock = new FakeClock();
    const tb = await broker({}, { clock });
    await offlineSession(tb, 'exp-left');
    const publisher = await client(tb);
    await publisher.publishAsync('exp/q/a', 'x', { qos: 1, properties: { messageExpiryInterval: 100 } });

    clock.advance(15_000);
    const { r, connack } = await raw(tb, { clientId: 'exp-left', clean: false, properties: { sessionExpiryInterval: 300 } });
    expect(connack.sessionPresent).toBe(true);
    const p = await r.expectPacket('publish');
    expect(p.topic).toBe('exp/q/a');
    expect(p.properties?.messageExpiryInterval).toBe(85);
  });

  test('a message that expired while queued for an offline session is never delivered', async () => {
    const clock = new FakeClock();
    const tb = await broker({}, { clock });
    await offlineSession(tb, 'exp-drop');
    const publisher = await client(tb);
    await publisher.publishAsync('exp/q/old', 'x', { qos: 1, properties: { messageExpiryInterval: 10 } });
    await publisher.publishAsync('exp/q/kept', 'y', { qos: 1 });

    clock.advance(11_000);
    const { r, connack } = await raw(tb, { clientId: 'exp-drop', clean: false, properties: { sessionExpiryInterval: 300 } });
    expect(connack.sessionPresent).toBe(true);
    const p = await r.expectPacket('publish');
    expect(p.topic).toBe('exp/q/kept');
    expect(p.properties?.messageExpiryInterval).toBeUndefined();
  });
});

describe('Receive Maximum', () => {
  test('CONNACK advertises maxInflight as Receive Maximum, and one unacked QoS 1 PUBLISH more gets DISCONNECT 0x93', async () => {
    const gate = deferred();
    const tb = await broker({ limits: { maxInflight: 2 } }, { onPublish: () => gate.promise });
    cleanups.push(() => gate.resolve()); // the hook never resolves during the test, so nothing is acked
    const { r, connack } = await raw(tb);
    expect(connack.properties?.receiveMaximum).toBe(2);

    for (const messageId of [1, 2, 3]) r.send(publishPacket('rm/in', `m${messageId}`, { qos: 1, messageId }));
    expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x93 });
    await r.closed();
  });

  test('a client with receiveMaximum 2 gets only 2 unacked messages until it acks', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const { r } = await raw(tb, { properties: { receiveMaximum: 2 } });
    await rawSubscribe(r, 'rm/out', 1);

    // Each PUBACK to the publisher comes after the broker routed that message, so all four are routed after this.
    for (const n of [1, 2, 3, 4]) await publisher.publishAsync('rm/out', `m${n}`, { qos: 1 });
    const first = await r.expectPacket('publish');
    const second = await r.expectPacket('publish');
    expect([first.payload.toString(), second.payload.toString()]).toEqual(['m1', 'm2']);
    // The broker answers in order: PINGRESP next means it held m3 back.
    r.send({ cmd: 'pingreq' });
    await r.expectPacket('pingresp');

    r.send({ cmd: 'puback', messageId: first.messageId, reasonCode: 0 });
    const third = await r.expectPacket('publish');
    expect(third.payload.toString()).toBe('m3');
    r.send({ cmd: 'pingreq' });
    await r.expectPacket('pingresp');

    r.send({ cmd: 'puback', messageId: second.messageId, reasonCode: 0 });
    r.send({ cmd: 'puback', messageId: third.messageId, reasonCode: 0 });
    expect((await r.expectPacket('publish')).payload.toString()).toBe('m4');
  });

  test('a QoS 2 message towards a client counts against its receiveMaximum until PUBCOMP', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const { r } = await raw(tb, { properties: { receiveMaximum: 1 } });
    await rawSubscribe(r, 'rm/two', 2);

    for (const n of [1, 2]) await publisher.publishAsync('rm/two', `m${n}`, { qos: 2 });
    const first = await r.expectPacket('publish');
    expect(first.payload.toString()).toBe('m1');

    r.send({ cmd: 'pubrec', messageId: first.messageId, reasonCode: 0 });
    expect(await r.expectPacket('pubrel')).toMatchObject({ messageId: first.messageId });
    // [MQTT-4.9.0-2] the quota comes back with PUBCOMP, not PUBREC: m2 must still wait.
    r.send({ cmd: 'pingreq' });
    await r.expectPacket('pingresp');

    r.send({ cmd: 'pubcomp', messageId: first.messageId, reasonCode: 0 });
    expect((await r.expectPacket('publish')).payload.toString()).toBe('m2');
  });
});

describe('Maximum Packet Size', () => {
  test('a client with maximumPacketSize 100 does not get a 500-byte message but does get a small one after it', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const unlimited = await client(tb);
    await unlimited.subscribeAsync('mp/#', { qos: 1 });
    const { r } = await raw(tb, { properties: { maximumPacketSize: 100 } });
    await rawSubscribe(r, 'mp/#', 1);

    const toUnlimited = collect(unlimited, 2);
    await publisher.publishAsync('mp/big', Buffer.alloc(500, 0x61), { qos: 1 });
    await publisher.publishAsync('mp/small', 'fits', { qos: 1 });

    const p = await r.expectPacket('publish');
    expect(p.topic).toBe('mp/small');
    expect(p.payload.toString()).toBe('fits');
    // Skipped only for the small client: others still get the big one.
    expect((await toUnlimited).map((m) => `${m.topic}:${m.payload.length}`)).toEqual(['mp/big:500', 'mp/small:4']);
  });

  test('the maximum packet size counts the whole PUBLISH, properties included', async () => {
    const tb = await broker();
    const publisher = await client(tb);
    const { r } = await raw(tb, { properties: { maximumPacketSize: 100 } });
    await rawSubscribe(r, 'mp/#', 1);

    // A 5-byte payload, but the user property makes the packet about 230 bytes.
    await publisher.publishAsync('mp/props', 'small', { qos: 1, properties: { userProperties: { note: 'x'.repeat(200) } } });
    await publisher.publishAsync('mp/plain', 'small', { qos: 1 });
    expect((await r.expectPacket('publish')).topic).toBe('mp/plain');
  });
});

describe('message properties', () => {
  test('User Properties, Content Type, Payload Format Indicator, Response Topic and Correlation Data are forwarded untouched', async () => {
    const tb = await broker();
    const subscriber = await client(tb);
    const publisher = await client(tb);
    await subscriber.subscribeAsync('props/t', { qos: 1 });
    const properties = {
      payloadFormatIndicator: true,
      contentType: 'application/json; charset=utf-8',
      responseTopic: 'props/reply/42',
      correlationData: Buffer.from([0x00, 0xff, 0x10, 0x80]),
      userProperties: { site: 'greenhouse-1', tag: ['a', 'b', 'a'], 'ünïcode': 'värde' },
    };

    const received = nextMessage(subscriber);
    await publisher.publishAsync('props/t', '{"t":21.5}', { qos: 1, properties });
    const got = (await received).packet.properties;

    expect(got).toMatchObject({
      payloadFormatIndicator: true,
      contentType: properties.contentType,
      responseTopic: properties.responseTopic,
      userProperties: properties.userProperties,
    });
    expect(Buffer.from(got!.correlationData!)).toEqual(properties.correlationData);
  });

  test('a client with Request Problem Information false gets no reason string or user properties on acks', async () => {
    const tb = await broker({}, { onPublish: (m) => (m.topic.startsWith('deny/') ? Promise.reject(new Error('denied by test')) : undefined) });
    const { r } = await raw(tb, { properties: { requestProblemInformation: false } });

    r.send(publishPacket('deny/t', 'x', { qos: 1, messageId: 1 }));
    const puback = await r.expectPacket('puback');
    expect(puback.reasonCode).toBe(0x80);
    expect(puback.properties).toBeUndefined();

    r.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'bad/#/filter', qos: 1 }] });
    const suback = await r.expectPacket('suback');
    expect(suback.granted).toEqual([0x8f]);
    expect(suback.properties).toBeUndefined();

    r.send({ cmd: 'unsubscribe', messageId: 3, unsubscriptions: ['never/subscribed'] });
    const unsuback = await r.expectPacket('unsuback');
    expect(unsuback.granted).toEqual([0x11]);
    expect(unsuback.properties).toBeUndefined();
  });
});
