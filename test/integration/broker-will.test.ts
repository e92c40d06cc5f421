import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type { IConnectPacket } from 'mqtt-packet';
import { afterEach, describe, expect, it } from 'vitest';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import { nextMessage, noMessage, startBroker, type TestBroker } from '../helpers/mqtt.js';
import { openRaw, type ProtocolVersion, type RawClient } from '../helpers/raw-client.js';

// Everything a test opens is closed after it, clients first, then the broker.
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function broker(config: BrokerConfigInput = {}): Promise<TestBroker> {
  const b = await startBroker(config);
  cleanups.push(() => b.close());
  return b;
}

async function client(b: TestBroker, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await mqtt.connectAsync(b.url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
  cleanups.push(() => c.end(true));
  c.on('error', () => {}); // a failure shows up as a missing message, with its own message
  return c;
}

/** A 3.1.1 client subscribed to will/# at QoS 2. */
async function willWatcher(b: TestBroker): Promise<MqttClient> {
  const c = await client(b, { clientId: `watcher-${Math.random().toString(36).slice(2, 8)}` });
  await c.subscribeAsync('will/#', { qos: 2 });
  return c;
}

type Will = NonNullable<IConnectPacket['will']>;

/** A raw client connected with `will`; the rest of CONNECT (keepalive, clean, properties) from `connect`. */
async function withWill(
  b: TestBroker,
  clientId: string,
  will: Will,
  { protocolVersion = 4, ...connect }: Partial<Omit<IConnectPacket, 'cmd' | 'will'>> & { protocolVersion?: ProtocolVersion } = {},
): Promise<RawClient> {
  const r = await openRaw(b.port, { protocolVersion });
  cleanups.push(() => r.destroy());
  const connack = await r.connect({ clientId, will, ...connect });
  expect(connack.returnCode ?? connack.reasonCode).toBe(0);
  return r;
}

describe('will on abnormal end', () => {
  it('publishes the will when the socket drops without DISCONNECT', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'dropper', { topic: 'will/drop', payload: 'dropped', qos: 0, retain: false });
    const got = nextMessage(watcher, { within: 2000 });
    r.destroy();
    const m = await got;
    expect(m.topic).toBe('will/drop');
    expect(m.payload.toString()).toBe('dropped');
  });

  it('publishes the will when the client is closed for missing its keepalive', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const got = nextMessage(watcher, { within: 3000 });
    await withWill(b, 'sleeper', { topic: 'will/keepalive', payload: 'timed out', qos: 1, retain: false }, { keepalive: 1 });
    const start = Date.now();
    const m = await got;
    expect(m.topic).toBe('will/keepalive');
    expect(Date.now() - start).toBeGreaterThanOrEqual(1000);
  });

  it('publishes the will when the broker closes the connection for a protocol error (second CONNECT)', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'erring', { topic: 'will/error', payload: 'protocol error', qos: 0, retain: false });
    const got = nextMessage(watcher, { within: 2000 });
    r.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'erring', clean: true, keepalive: 0 });
    await r.closed();
    expect((await got).topic).toBe('will/error');
  });

  it('publishes the will of a connection taken over by a new one with the same client id', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const old = await withWill(b, 'taken', { topic: 'will/takeover', payload: 'replaced', qos: 0, retain: false });
    const got = nextMessage(watcher, { within: 2000 });
    await client(b, { clientId: 'taken' });
    await old.closed();
    expect((await got).topic).toBe('will/takeover');
  });
});

describe('no will on normal DISCONNECT', () => {
  it('MQTT 3.1.1: does not publish the will after DISCONNECT', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'polite-4', { topic: 'will/polite', payload: 'should not', qos: 1, retain: false });
    r.send({ cmd: 'disconnect' });
    r.end();
    await r.closed();
    await noMessage(watcher, { forMs: 500 });
  });

  it('MQTT 5: does not publish the will after DISCONNECT 0x00', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'polite-5', { topic: 'will/polite', payload: 'should not', qos: 1, retain: false }, { protocolVersion: 5 });
    r.send({ cmd: 'disconnect', reasonCode: 0x00 });
    r.end();
    await r.closed();
    await noMessage(watcher, { forMs: 500 });
  });

  it('MQTT 5: publishes the will after DISCONNECT 0x04 (Disconnect with Will Message)', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'wants-will', { topic: 'will/asked', payload: 'as asked', qos: 1, retain: false }, { protocolVersion: 5 });
    const got = nextMessage(watcher, { within: 2000 });
    r.send({ cmd: 'disconnect', reasonCode: 0x04 });
    r.end();
    const m = await got;
    expect(m.topic).toBe('will/asked');
    expect(m.payload.toString()).toBe('as asked');
  });
});

describe('will QoS and retain', () => {
  it('delivers a QoS 1 retained will at QoS 1 and keeps it as the retained message of its topic', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'retainer', { topic: 'will/retained', payload: 'last words', qos: 1, retain: true });
    const got = nextMessage(watcher, { within: 2000 });
    r.destroy();
    expect((await got).packet.qos).toBe(1);

    const late = await client(b, { clientId: 'late-retained' });
    const retained = nextMessage(late, { within: 2000 });
    await late.subscribeAsync('will/retained', { qos: 2 });
    const m = await retained;
    expect(m.payload.toString()).toBe('last words');
    expect(m.packet.retain).toBe(true);
    expect(m.packet.qos).toBe(1);
  });

  it('delivers a QoS 2 will without retain at QoS 2 and does not retain it', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(b, 'not-retainer', { topic: 'will/plain', payload: 'once', qos: 2, retain: false });
    const got = nextMessage(watcher, { within: 2000 });
    r.destroy();
    expect((await got).packet.qos).toBe(2);

    const late = await client(b, { clientId: 'late-plain' });
    await late.subscribeAsync('will/plain', { qos: 2 });
    await noMessage(late, { forMs: 300 });
  });
});

describe('MQTT 5 Will Delay Interval', () => {
  it('publishes a will with Will Delay Interval 1 about 1 s after the drop, not before', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(
      b,
      'delayed',
      { topic: 'will/delayed', payload: 'late', qos: 1, retain: false, properties: { willDelayInterval: 1 } },
      { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 10 } },
    );
    const got = nextMessage(watcher, { within: 3000 });
    const start = Date.now();
    r.destroy();
    const m = await got;
    expect(m.topic).toBe('will/delayed');
    expect(Date.now() - start).toBeGreaterThanOrEqual(950);
  });

  it('does not publish a delayed will when the client reconnects within the delay', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const session = { protocolVersion: 5 as const, clean: false, properties: { sessionExpiryInterval: 10 } };
    const r = await withWill(
      b,
      'comes-back',
      { topic: 'will/back', payload: 'should not', qos: 1, retain: false, properties: { willDelayInterval: 1 } },
      session,
    );
    r.destroy();
    const back = await openRaw(b.port, { protocolVersion: 5 });
    cleanups.push(() => back.destroy());
    expect(await back.connect({ clientId: 'comes-back', ...session })).toMatchObject({ reasonCode: 0, sessionPresent: true });
    await noMessage(watcher, { forMs: 1800 });
  });

  it('publishes a delayed will at once when the session ends with the connection (session expiry 0)', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(
      b,
      'no-session',
      { topic: 'will/now', payload: 'now', qos: 1, retain: false, properties: { willDelayInterval: 10 } },
      { protocolVersion: 5, properties: { sessionExpiryInterval: 0 } },
    );
    const got = nextMessage(watcher, { within: 800 });
    r.destroy();
    expect((await got).topic).toBe('will/now');
  });

  it('publishes a delayed will when the session expires before the delay is over', async () => {
    const b = await broker();
    const watcher = await willWatcher(b);
    const r = await withWill(
      b,
      'short-session',
      { topic: 'will/expired', payload: 'session over', qos: 1, retain: false, properties: { willDelayInterval: 30 } },
      { protocolVersion: 5, clean: false, properties: { sessionExpiryInterval: 1 } },
    );
    const got = nextMessage(watcher, { within: 2500 });
    const start = Date.now();
    r.destroy();
    const m = await got;
    expect(m.topic).toBe('will/expired');
    expect(Date.now() - start).toBeGreaterThanOrEqual(950);
  });
});
