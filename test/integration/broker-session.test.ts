import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { Clock } from '../../src/clock.js';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { collect, noMessage, startBroker, type Received, type TestBroker } from '../helpers/mqtt.js';
import { openRaw, type RawClient, type RawClientOptions } from '../helpers/raw-client.js';

// Everything a test opens is closed after it, clients first, then the broker.
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function broker(config: BrokerConfigInput = {}, clock?: Clock): Promise<TestBroker> {
  const b = await startBroker(config, clock ? { clock } : {});
  cleanups.push(() => b.close());
  return b;
}

async function raw(b: TestBroker, options: RawClientOptions = {}): Promise<RawClient> {
  const r = await openRaw(b.port, options);
  cleanups.push(() => r.destroy());
  return r;
}

/**
 * Starts an MQTT.js client. `expect` messages are collected from the first byte on, so messages
 * the broker sends right after CONNACK (a resumed session's queue) are not missed.
 */
async function client(
  b: TestBroker,
  options: IClientOptions,
  { expect: count = 0, within = 2000 }: { expect?: number; within?: number } = {},
): Promise<{ client: MqttClient; connack: IConnackPacket; messages: Promise<Received[]> }> {
  const c = mqtt.connect(b.url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
  cleanups.push(() => c.end(true));
  const messages = count > 0 ? collect(c, count, { within }) : Promise.resolve([]);
  messages.catch(() => {}); // awaited by the test; this only keeps an early failure from going unhandled
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    c.once('connect', resolve);
    // Kept for the client's life: a later error must not become an unhandled 'error' event.
    c.on('error', reject);
    c.once('close', () => reject(new Error('connection closed before CONNACK')));
  });
  return { client: c, connack, messages };
}

/** Ends an MQTT.js client with DISCONNECT and waits until its socket is closed. */
async function disconnect(c: MqttClient): Promise<void> {
  await c.endAsync();
}

/** A publisher that has connected; its QoS 1/2 publishes resolve once the broker has routed them. */
async function publisher(b: TestBroker): Promise<MqttClient> {
  return (await client(b, { clientId: `pub-${Math.random().toString(36).slice(2, 8)}` })).client;
}

let settleId = 0;
/**
 * A CONNECT/CONNACK round trip on a fresh connection: by the time it returns, the broker has
 * had a full event-loop turn to finish handling connections that closed before it, so the fake
 * clock can be moved without racing the broker's own bookkeeping.
 */
async function settle(b: TestBroker): Promise<void> {
  const r = await openRaw(b.port);
  try {
    expect((await r.connect({ clientId: `settle-${++settleId}` })).returnCode).toBe(0);
  } finally {
    r.destroy();
  }
}

/** An MQTT 5 raw client that connects with cleanStart=false and the given Session Expiry Interval. */
async function connect5(b: TestBroker, clientId: string, sessionExpiryInterval: number): Promise<{ r: RawClient; connack: IConnackPacket }> {
  const r = await raw(b, { protocolVersion: 5 });
  const connack = await r.connect({ clientId, clean: false, properties: { sessionExpiryInterval } });
  expect(connack.reasonCode).toBe(0);
  return { r, connack };
}

/** Sends MQTT 5 DISCONNECT 0x00 (with `sessionExpiryInterval` if given), half-closes and waits for the close. */
async function disconnect5(r: RawClient, sessionExpiryInterval?: number): Promise<void> {
  r.send({ cmd: 'disconnect', reasonCode: 0, ...(sessionExpiryInterval === undefined ? {} : { properties: { sessionExpiryInterval } }) });
  r.end();
  await r.closed();
}

describe('clean and persistent sessions', () => {
  it('MQTT 3.1.1: a clean session starts empty and keeps nothing after it ends', async () => {
    const b = await broker();
    const first = await client(b, { clientId: 'clean-4', clean: true });
    expect(first.connack.sessionPresent).toBe(false);
    await first.client.subscribeAsync('clean/t', { qos: 1 });
    await disconnect(first.client);

    const second = await client(b, { clientId: 'clean-4', clean: false });
    expect(second.connack.sessionPresent).toBe(false);
    const pub = await publisher(b);
    await pub.publishAsync('clean/t', 'not for you', { qos: 1 });
    await noMessage(second.client, { forMs: 300 });
  });

  it('MQTT 3.1.1: reconnecting with clean=false resumes the session (sessionPresent true)', async () => {
    const b = await broker();
    const first = await client(b, { clientId: 'resume-4', clean: false });
    expect(first.connack.sessionPresent).toBe(false);
    await disconnect(first.client);
    const second = await client(b, { clientId: 'resume-4', clean: false });
    expect(second.connack.sessionPresent).toBe(true);
  });

  it('MQTT 3.1.1: connecting with clean=true discards a persistent session', async () => {
    const b = await broker();
    await disconnect((await client(b, { clientId: 'discard-4', clean: false })).client);
    const clean = await client(b, { clientId: 'discard-4', clean: true });
    expect(clean.connack.sessionPresent).toBe(false);
    await disconnect(clean.client);
    const again = await client(b, { clientId: 'discard-4', clean: false });
    expect(again.connack.sessionPresent).toBe(false);
  });

  it('MQTT 5: cleanStart=false with sessionExpiryInterval > 0 resumes the session (sessionPresent true)', async () => {
    const b = await broker();
    const options: IClientOptions = { protocolVersion: 5, clientId: 'resume-5', clean: false, properties: { sessionExpiryInterval: 60 } };
    const first = await client(b, options);
    expect(first.connack.sessionPresent).toBe(false);
    await disconnect(first.client);
    const second = await client(b, options);
    expect(second.connack.sessionPresent).toBe(true);
  });

  it('MQTT 5: with sessionExpiryInterval 0 (the default) nothing is kept after disconnect', async () => {
    const b = await broker();
    const options: IClientOptions = { protocolVersion: 5, clientId: 'expiry-0', clean: false };
    const first = await client(b, options);
    await first.client.subscribeAsync('gone/t', { qos: 1 });
    await disconnect(first.client);
    const second = await client(b, options);
    expect(second.connack.sessionPresent).toBe(false);
    const pub = await publisher(b);
    await pub.publishAsync('gone/t', 'not for you', { qos: 1 });
    await noMessage(second.client, { forMs: 300 });
  });
});

describe('offline persistent sessions', () => {
  it('keeps the subscriptions of a persistent session across a reconnect', async () => {
    const b = await broker();
    const first = await client(b, { clientId: 'subs-keep', clean: false });
    await first.client.subscribeAsync('keep/#', { qos: 1 });
    await disconnect(first.client);

    const second = await client(b, { clientId: 'subs-keep', clean: false }, { expect: 1 });
    const pub = await publisher(b);
    await pub.publishAsync('keep/a', 'still subscribed', { qos: 1 });
    const [m] = await second.messages;
    expect(m!.topic).toBe('keep/a');
    expect(m!.payload.toString()).toBe('still subscribed');
  });

  it('queues QoS 1 and 2 messages while offline and delivers them, in order and at their QoS, on reconnect', async () => {
    const b = await broker();
    const first = await client(b, { clientId: 'queue-12', clean: false });
    await first.client.subscribeAsync('offline/#', { qos: 2 });
    await disconnect(first.client);

    const pub = await publisher(b);
    await pub.publishAsync('offline/1', 'one', { qos: 1 });
    await pub.publishAsync('offline/2', 'two', { qos: 2 });

    const second = await client(b, { clientId: 'queue-12', clean: false }, { expect: 2 });
    expect(second.connack.sessionPresent).toBe(true);
    const got = await second.messages;
    expect(got.map((m) => [m.topic, m.payload.toString(), m.packet.qos])).toEqual([
      ['offline/1', 'one', 1],
      ['offline/2', 'two', 2],
    ]);
  });

  it('does not queue QoS 0 messages for an offline session', async () => {
    const b = await broker();
    const first = await client(b, { clientId: 'queue-0', clean: false });
    await first.client.subscribeAsync('off0/#', { qos: 1 });
    await disconnect(first.client);

    const pub = await publisher(b);
    await pub.publishAsync('off0/zero', 'qos 0', { qos: 0 });
    // Same connection, so the broker handles it after the QoS 0 one: its PUBACK means both were routed.
    await pub.publishAsync('off0/marker', 'qos 1', { qos: 1 });

    const second = await client(b, { clientId: 'queue-0', clean: false }, { expect: 1 });
    const [m] = await second.messages;
    expect(m!.topic).toBe('off0/marker');
    await noMessage(second.client, { forMs: 300 });
  });

  it('drops the oldest queued messages beyond maxQueued', async () => {
    const b = await broker({ limits: { maxQueued: 2 } });
    const first = await client(b, { clientId: 'queue-cap', clean: false });
    await first.client.subscribeAsync('cap/t', { qos: 1 });
    await disconnect(first.client);

    const pub = await publisher(b);
    for (const n of [1, 2, 3, 4]) await pub.publishAsync('cap/t', `m${n}`, { qos: 1 });

    const second = await client(b, { clientId: 'queue-cap', clean: false }, { expect: 2 });
    const got = await second.messages;
    expect(got.map((m) => m.payload.toString())).toEqual(['m3', 'm4']);
    await noMessage(second.client, { forMs: 300 });
  });

  it('MQTT 3.1.1: an unacknowledged QoS 1 delivery is resent with dup=true and the same packet id on reconnect', async () => {
    const b = await broker();
    const sub = await raw(b);
    expect((await sub.connect({ clientId: 'resend-4', clean: false })).sessionPresent).toBe(false);
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'resend/4', qos: 1 }] });
    expect(await sub.expectPacket('suback')).toMatchObject({ granted: [1] });

    const pub = await publisher(b);
    await pub.publishAsync('resend/4', 'unacked', { qos: 1 });
    const first = await sub.expectPacket('publish');
    expect(first).toMatchObject({ topic: 'resend/4', qos: 1, dup: false });
    sub.destroy(); // gone without PUBACK

    const again = await raw(b);
    expect((await again.connect({ clientId: 'resend-4', clean: false })).sessionPresent).toBe(true);
    const resent = await again.expectPacket('publish');
    expect(resent).toMatchObject({ topic: 'resend/4', qos: 1, dup: true, messageId: first.messageId });
    expect(resent.payload.toString()).toBe('unacked');
  });

  it('MQTT 5: an unacknowledged QoS 2 delivery is resent with dup=true and the same packet id on reconnect', async () => {
    const b = await broker();
    const { r: sub } = await connect5(b, 'resend-5', 60);
    sub.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'resend/5', qos: 2 }] });
    expect(await sub.expectPacket('suback')).toMatchObject({ granted: [2] });

    const pub = await publisher(b);
    await pub.publishAsync('resend/5', 'unreceived', { qos: 2 });
    const first = await sub.expectPacket('publish');
    expect(first).toMatchObject({ topic: 'resend/5', qos: 2, dup: false });
    sub.destroy(); // gone without PUBREC

    const { r: again, connack } = await connect5(b, 'resend-5', 60);
    expect(connack.sessionPresent).toBe(true);
    const resent = await again.expectPacket('publish');
    expect(resent).toMatchObject({ topic: 'resend/5', qos: 2, dup: true, messageId: first.messageId });
    expect(resent.payload.toString()).toBe('unreceived');
    // The flow goes on from there.
    again.send({ cmd: 'pubrec', messageId: resent.messageId! });
    expect(await again.expectPacket('pubrel')).toMatchObject({ messageId: resent.messageId });
  });
});

describe('session expiry', () => {
  it('MQTT 5: a session with sessionExpiryInterval 1 is kept for 1 s after disconnect and is gone after', async () => {
    const clock = new FakeClock();
    const b = await broker({}, clock);
    for (const id of ['expire-early', 'expire-late']) await disconnect5((await connect5(b, id, 1)).r);
    await settle(b);

    clock.advance(900);
    expect((await connect5(b, 'expire-early', 1)).connack.sessionPresent).toBe(true);
    await settle(b);
    clock.advance(200);
    expect((await connect5(b, 'expire-late', 1)).connack.sessionPresent).toBe(false);
  });

  it('MQTT 5: a Session Expiry Interval sent in DISCONNECT replaces the one from CONNECT', async () => {
    const clock = new FakeClock();
    const b = await broker({}, clock);
    await disconnect5((await connect5(b, 'longer', 1)).r, 60);
    await disconnect5((await connect5(b, 'shorter', 60)).r, 1);
    await settle(b);

    clock.advance(5000);
    expect((await connect5(b, 'longer', 60)).connack.sessionPresent).toBe(true);
    expect((await connect5(b, 'shorter', 60)).connack.sessionPresent).toBe(false);
  });

  it('MQTT 5: a non-zero Session Expiry Interval in DISCONNECT after 0 at CONNECT is answered with DISCONNECT 0x82', async () => {
    const b = await broker();
    const r = await raw(b, { protocolVersion: 5 });
    expect((await r.connect({ clientId: 'zero-then-ten', properties: { sessionExpiryInterval: 0 } })).reasonCode).toBe(0);
    r.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 10 } });
    expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x82 });
    await r.closed();
  });

  it('MQTT 5: sessionExpiryInterval above maxSessionExpiryS is capped, CONNACK says so, and the cap applies', async () => {
    const clock = new FakeClock();
    const b = await broker({ limits: { maxSessionExpiryS: 2 } }, clock);
    const { r, connack } = await connect5(b, 'capped', 3600);
    expect(connack.properties?.sessionExpiryInterval).toBe(2);
    await disconnect5(r);
    await settle(b);

    clock.advance(2100);
    expect((await connect5(b, 'capped', 3600)).connack.sessionPresent).toBe(false);
  });

  it('MQTT 3.1.1: a clean=false session expires after maxSessionExpiryS', async () => {
    const clock = new FakeClock();
    const b = await broker({ limits: { maxSessionExpiryS: 2 } }, clock);
    for (const id of ['v4-kept', 'v4-expired']) {
      const r = await raw(b);
      expect((await r.connect({ clientId: id, clean: false })).returnCode).toBe(0);
      r.send({ cmd: 'disconnect' });
      r.end();
      await r.closed();
    }
    await settle(b);

    clock.advance(1900);
    const kept = await raw(b);
    expect((await kept.connect({ clientId: 'v4-kept', clean: false })).sessionPresent).toBe(true);
    await settle(b);
    clock.advance(200);
    const expired = await raw(b);
    expect((await expired.connect({ clientId: 'v4-expired', clean: false })).sessionPresent).toBe(false);
  });
});
