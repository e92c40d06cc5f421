import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import { nextMessage, startBroker, waitFor, type TestBroker } from '../helpers/mqtt.js';
import { encodeConnect, openRaw, type RawClient, type RawClientOptions } from '../helpers/raw-client.js';

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

async function raw(b: TestBroker, options: RawClientOptions = {}): Promise<RawClient> {
  const r = await openRaw(b.port, options);
  cleanups.push(() => r.destroy());
  return r;
}

/** Connects an MQTT.js client and resolves with it and its CONNACK; rejects on a refused CONNACK. */
function client(b: TestBroker, options: IClientOptions = {}): Promise<{ client: MqttClient; connack: IConnackPacket }> {
  const c = mqtt.connect(b.url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
  cleanups.push(() => c.end(true));
  return new Promise((resolve, reject) => {
    c.once('connect', (connack) => resolve({ client: c, connack }));
    // Kept for the client's life: a later error must not become an unhandled 'error' event.
    c.on('error', reject);
    c.once('close', () => reject(new Error('connection closed before CONNACK')));
  });
}

/** Proves `c` works end to end: it subscribes and receives its own QoS 1 message. */
async function roundTrip(c: MqttClient, topic: string): Promise<void> {
  await c.subscribeAsync(topic, { qos: 1 });
  const got = nextMessage(c, { within: 2000 });
  await c.publishAsync(topic, 'ping', { qos: 1 });
  expect((await got).payload.toString()).toBe('ping');
}

/** Asserts the broker closed `r` and sent nothing before closing. */
async function closedSilently(r: RawClient, within = 2000): Promise<void> {
  await r.closed({ within });
  await expect(r.nextPacket({ within: 0 })).rejects.toThrow(/closed with no packet/);
}

describe('CONNECT timeout and first packet', () => {
  it('closes a connection that sends no CONNECT within connectTimeoutMs, sending nothing', async () => {
    const b = await broker({ connectTimeoutMs: 500 });
    const r = await raw(b);
    const start = Date.now();
    await closedSilently(r, 3000);
    expect(Date.now() - start).toBeGreaterThanOrEqual(450);
  });

  it('keeps a connection that sent CONNECT in time open past connectTimeoutMs', async () => {
    const b = await broker({ connectTimeoutMs: 300 });
    const r = await raw(b);
    expect((await r.connect({ clientId: 'in-time' })).returnCode).toBe(0);
    await expect(r.closed({ within: 900 })).rejects.toThrow(/still open/);
  });

  it('closes a connection whose first packet is not CONNECT, sending nothing', async () => {
    const b = await broker();
    const r = await raw(b);
    r.send({ cmd: 'pingreq' });
    await closedSilently(r);
  });

  it('closes a connection that sends non-MQTT bytes (an HTTP request), sending nothing', async () => {
    const b = await broker();
    const r = await raw(b);
    r.send(Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
    await closedSilently(r);
  });
});

describe('second CONNECT', () => {
  it('MQTT 5: a second CONNECT on a connection gets DISCONNECT 0x82 and the connection closes', async () => {
    const b = await broker();
    const r = await raw(b, { protocolVersion: 5 });
    expect((await r.connect({ clientId: 'twice-5' })).reasonCode).toBe(0);
    r.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId: 'twice-5', clean: true, keepalive: 0 });
    expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x82 });
    await r.closed();
  });

  it('MQTT 3.1.1: a second CONNECT on a connection closes it without a reply', async () => {
    const b = await broker();
    const r = await raw(b);
    expect((await r.connect({ clientId: 'twice-4' })).returnCode).toBe(0);
    r.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'twice-4', clean: true, keepalive: 0 });
    await closedSilently(r);
  });
});

describe('protocol level', () => {
  // The doc's "reason 0x84 (5)" has no client that could ask for it: a CONNECT whose level we
  // do not speak cannot be answered in its own format, so, like Mosquitto 2, we expect the
  // 3.1.1-format CONNACK (return code 1) that every client version can read.
  it('refuses an unknown protocol level (6) with CONNACK return code 1 and closes', async () => {
    const b = await broker();
    const r = await raw(b);
    r.send(encodeConnect({ level: 6, clientId: 'level-6' }));
    expect(await r.expectPacket('connack')).toMatchObject({ returnCode: 1, sessionPresent: false });
    await r.closed();
  });

  it('accepts an MQTT 3.1 client (protocol name MQIsdp, level 3) that subscribes and receives', async () => {
    const b = await broker();
    const { client: legacy, connack } = await client(b, { protocolId: 'MQIsdp', protocolVersion: 3, clientId: 'legacy-31' });
    expect(connack.returnCode).toBe(0);
    await legacy.subscribeAsync('legacy/t', { qos: 1 });
    const { client: pub } = await client(b, { clientId: 'legacy-pub' });
    const got = nextMessage(legacy, { within: 2000 });
    await pub.publishAsync('legacy/t', 'from 3.1.1', { qos: 1 });
    const m = await got;
    expect(m.topic).toBe('legacy/t');
    expect(m.payload.toString()).toBe('from 3.1.1');
    expect(m.packet.qos).toBe(1);
  });
});

describe('client id', () => {
  it('MQTT 5: an empty client id is accepted and assigned a unique id starting with "sb-"', async () => {
    const b = await broker();
    const { client: first, connack: ack1 } = await client(b, { protocolVersion: 5, clientId: '' });
    const { client: second, connack: ack2 } = await client(b, { protocolVersion: 5, clientId: '' });
    expect(ack1.reasonCode).toBe(0);
    expect(ack1.properties?.assignedClientIdentifier).toMatch(/^sb-/);
    expect(ack2.properties?.assignedClientIdentifier).toMatch(/^sb-/);
    expect(ack2.properties?.assignedClientIdentifier).not.toBe(ack1.properties?.assignedClientIdentifier);
    // Two assigned ids are two sessions: the second must not have taken the first over.
    await roundTrip(first, 'assigned/1');
    await roundTrip(second, 'assigned/2');
  });

  it('MQTT 3.1.1: an empty client id with clean session is accepted', async () => {
    const b = await broker();
    const { client: c, connack } = await client(b, { clientId: '', clean: true });
    expect(connack.returnCode).toBe(0);
    await roundTrip(c, 'anon/t');
  });

  it('MQTT 3.1.1: an empty client id without clean session is refused with return code 2', async () => {
    const b = await broker();
    const r = await raw(b);
    r.send(encodeConnect({ level: 4, clean: false, clientId: '' }));
    expect(await r.expectPacket('connack')).toMatchObject({ returnCode: 2, sessionPresent: false });
    await r.closed();
  });

  it('MQTT 3.1: an empty client id is refused with return code 2', async () => {
    const b = await broker();
    const r = await raw(b, { protocolVersion: 3 });
    r.send(encodeConnect({ protocolId: 'MQIsdp', level: 3, clean: true, clientId: '' }));
    expect(await r.expectPacket('connack')).toMatchObject({ returnCode: 2 });
    await r.closed();
  });

  it('accepts a client id of exactly maxClientIdLength characters', async () => {
    const b = await broker({ limits: { maxClientIdLength: 23 } });
    const r = await raw(b);
    expect((await r.connect({ clientId: 'x'.repeat(23) })).returnCode).toBe(0);
  });

  it('MQTT 3.1.1: a client id longer than maxClientIdLength is refused with return code 2', async () => {
    const b = await broker({ limits: { maxClientIdLength: 23 } });
    const r = await raw(b);
    expect(await r.connect({ clientId: 'x'.repeat(24) })).toMatchObject({ returnCode: 2 });
    await r.closed();
  });

  it('MQTT 5: a client id longer than maxClientIdLength is refused with reason 0x85', async () => {
    const b = await broker({ limits: { maxClientIdLength: 23 } });
    const r = await raw(b, { protocolVersion: 5 });
    expect(await r.connect({ clientId: 'x'.repeat(24) })).toMatchObject({ reasonCode: 0x85 });
    await r.closed();
  });
});

describe('takeover', () => {
  it('MQTT 3.1.1: a second connection with the same client id closes the first, and the second works', async () => {
    const b = await broker();
    const { client: old } = await client(b, { clientId: 'same-4' });
    const oldClosed = waitFor(old as unknown as NodeJS.EventEmitter, 'close', { within: 2000 });
    const { client: fresh, connack } = await client(b, { clientId: 'same-4' });
    expect(connack.returnCode).toBe(0);
    await oldClosed;
    await roundTrip(fresh, 'takeover/4');
  });

  it('MQTT 5: the old connection gets DISCONNECT 0x8E before it is closed, and the new one works', async () => {
    const b = await broker();
    const old = await raw(b, { protocolVersion: 5 });
    expect((await old.connect({ clientId: 'same-5' })).reasonCode).toBe(0);
    const { client: fresh, connack } = await client(b, { protocolVersion: 5, clientId: 'same-5' });
    expect(connack.reasonCode).toBe(0);
    expect(await old.expectPacket('disconnect')).toMatchObject({ reasonCode: 0x8e });
    await old.closed();
    await roundTrip(fresh, 'takeover/5');
  });
});

describe('keepalive', () => {
  it('closes a silent client with keepalive 1 after about 1.5 s, not before 1 s', async () => {
    const b = await broker();
    const r = await raw(b);
    expect((await r.connect({ clientId: 'silent', keepalive: 1 })).returnCode).toBe(0);
    const start = Date.now();
    await r.closed({ within: 3000 });
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual(1000);
    expect(elapsed).toBeLessThanOrEqual(2500);
  });

  it('keeps a client with keepalive 1 that sends PINGREQ every 0.5 s connected, answering each', async () => {
    const b = await broker();
    const r = await raw(b);
    expect((await r.connect({ clientId: 'pinger', keepalive: 1 })).returnCode).toBe(0);
    // The client's own behaviour, not a wait: it pings, the test waits on the socket with a deadline.
    const pinger = setInterval(() => r.send({ cmd: 'pingreq' }), 500);
    try {
      await expect(r.closed({ within: 2500 })).rejects.toThrow(/still open/);
    } finally {
      clearInterval(pinger);
    }
    expect(await r.expectPacket('pingresp', { within: 0 })).toMatchObject({ cmd: 'pingresp' });
  });

  it('MQTT 5: a keepalive above maxKeepalive gets Server Keep Alive = maxKeepalive, which is enforced', async () => {
    const b = await broker({ maxKeepalive: 1 });
    const r = await raw(b, { protocolVersion: 5 });
    const connack = await r.connect({ clientId: 'too-long-ka', keepalive: 60 });
    expect(connack.reasonCode).toBe(0);
    expect(connack.properties?.serverKeepAlive).toBe(1);
    const start = Date.now();
    await r.closed({ within: 3000 });
    expect(Date.now() - start).toBeGreaterThanOrEqual(1000);
  });

  it('MQTT 5: keepalive 0 gets Server Keep Alive = maxKeepalive, which is enforced', async () => {
    const b = await broker({ maxKeepalive: 1 });
    const r = await raw(b, { protocolVersion: 5 });
    const connack = await r.connect({ clientId: 'zero-ka', keepalive: 0 });
    expect(connack.reasonCode).toBe(0);
    expect(connack.properties?.serverKeepAlive).toBe(1);
    const start = Date.now();
    await r.closed({ within: 3000 });
    expect(Date.now() - start).toBeGreaterThanOrEqual(1000);
  });
});
