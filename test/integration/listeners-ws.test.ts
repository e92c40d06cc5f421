import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { FRAME_SLACK_BYTES } from '../../src/broker/listeners/websocket-server.js';
import { CLIENT_CN, makeCertificates, opensslPeer } from '../helpers/certs.js';
import { eventually, recordingLogger } from '../helpers/durable.js';
import { startListeners, type ListenersBroker } from '../helpers/listeners.js';
import { collect, connect, nextMessage, noMessage, waitFor } from '../helpers/mqtt.js';

// The ws and wss listeners against MQTT.js, the `ws` client, and a raw socket for what a
// well-behaved client never sends (oversized and text frames, stalled upgrade requests).

const MAX_PACKET = 4096;
let running: ListenersBroker | undefined;
const clients: MqttClient[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.endAsync(true)));
  await running?.close();
  running = undefined;
});

async function startWs(extra: Record<string, unknown> = {}, { connectTimeoutMs = 10_000, log = recordingLogger('debug').log } = {}) {
  running = await startListeners({
    listeners: [
      { type: 'ws', host: '127.0.0.1', port: 0, ...extra },
      { type: 'mqtt', host: '127.0.0.1', port: 0 },
    ],
    limits: { maxPacketSize: MAX_PACKET },
    connectTimeoutMs,
  }, { log });
  return { port: running.addresses[0]!.port, plainPort: running.addresses[1]!.port, ...running };
}

async function client(url: string, options: Parameters<typeof connect>[1] = {}): Promise<MqttClient> {
  const c = await connect(url, options);
  clients.push(c);
  return c;
}

const CONNECT = (clientId: string) => mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 30 });

/** The HTTP status of a refused upgrade (the `ws` client's 'unexpected-response'). */
function refusedStatus(ws: WebSocket, within = 2000): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no refusal within ${within} ms`)), within);
    ws.on('error', () => undefined); // the refusal itself is what is checked
    ws.once('unexpected-response', (req: http.ClientRequest, res: http.IncomingMessage) => {
      clearTimeout(timer);
      res.resume();
      req.destroy();
      resolve(res.statusCode ?? 0);
    });
    ws.once('open', () => reject(new Error('the upgrade was accepted')));
  });
}

/** Opens a `ws` client WebSocket and waits for it to open. */
async function openSocket(url: string, protocol: string | string[] = 'mqtt'): Promise<WebSocket> {
  const ws = new WebSocket(url, protocol);
  await waitFor(ws, 'open');
  return ws;
}

/** The MQTT bytes a `ws` client receives, concatenated, until `predicate` holds (or `within` ms). */
function receiveUntil(ws: WebSocket, predicate: (bytes: Buffer) => boolean, within = 2000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let bytes = Buffer.alloc(0);
    const timer = setTimeout(() => reject(new Error(`not received within ${within} ms; got ${bytes.toString('hex')}`)), within);
    ws.on('message', (data: Buffer) => {
      bytes = Buffer.concat([bytes, data]);
      if (predicate(bytes)) {
        clearTimeout(timer);
        resolve(bytes);
      }
    });
  });
}

/** A raw TCP connection that did the WebSocket upgrade by hand, for frames `ws` would never send. */
async function rawUpgrade(port: number, path = '/mqtt'): Promise<{ socket: net.Socket; closed: Promise<Buffer> }> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let received = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    received = Buffer.concat([received, chunk]);
  });
  const closed = new Promise<Buffer>((resolve) => socket.once('close', () => resolve(received)));
  await waitFor(socket, 'connect');
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`);
  const deadline = Date.now() + 2000;
  while (!received.includes('\r\n\r\n')) {
    if (Date.now() > deadline) throw new Error(`no upgrade response: ${received.toString()}`);
    await new Promise((resolve) => socket.once('data', resolve));
  }
  expect(received.toString()).toMatch(/^HTTP\/1\.1 101 /);
  received = received.subarray(received.indexOf('\r\n\r\n') + 4);
  return { socket, closed };
}

/** A client frame header (masked with a zero key, so the payload goes as is) announcing `length` bytes. */
function frameHeader(length: number, opcode = 2): Buffer {
  const mask = Buffer.alloc(4);
  if (length < 126) return Buffer.concat([Buffer.from([0x80 | opcode, 0x80 | length]), mask]);
  if (length < 65_536) {
    const h = Buffer.from([0x80 | opcode, 0x80 | 126, 0, 0]);
    h.writeUInt16BE(length, 2);
    return Buffer.concat([h, mask]);
  }
  const h = Buffer.alloc(10);
  h[0] = 0x80 | opcode;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return Buffer.concat([h, mask]);
}

/** The close code in the first server close frame (opcode 8) of `bytes`, if any. */
function closeCode(bytes: Buffer): number | undefined {
  let i = 0;
  while (i + 2 <= bytes.length) {
    const opcode = bytes[i]! & 0x0f;
    let length = bytes[i + 1]! & 0x7f;
    let at = i + 2;
    if (length === 126) {
      length = bytes.readUInt16BE(at);
      at += 2;
    }
    if (opcode === 8) return length >= 2 ? bytes.readUInt16BE(at) : undefined;
    i = at + length;
  }
  return undefined;
}

describe('ws listener', () => {
  it.each([
    { version: 4 as const, subprotocol: 'mqtt' },
    { version: 5 as const, subprotocol: 'mqtt' },
    { version: 3 as const, subprotocol: 'mqttv3.1' },
  ])('MQTT.js (MQTT level $version, subprotocol $subprotocol) publishes and subscribes over ws://…/mqtt', async ({ version }) => {
    const { port, plainPort } = await startWs();
    // MQTT.js sends the subprotocol mqttv3.1 for MQTT 3.1 (protocol name MQIsdp), mqtt otherwise.
    const sub = await client(`ws://127.0.0.1:${port}/mqtt`, { protocolVersion: version, ...(version === 3 ? { protocolId: 'MQIsdp' as const } : {}) });
    await sub.subscribeAsync('ws/#', { qos: 1 });
    const pub = await client(`mqtt://127.0.0.1:${plainPort}`);
    const got = nextMessage(sub);
    await pub.publishAsync('ws/a', 'from tcp', { qos: 1 });
    expect((await got).payload.toString()).toBe('from tcp');
  });

  it('serves another path when configured, and answers 404 on any other path', async () => {
    const { port, broker } = await startWs({ path: '/ws' });
    await client(`ws://127.0.0.1:${port}/ws`);
    const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, 'mqtt');
    expect(await refusedStatus(ws)).toBe(404);
    expect(broker.stats.websocketUpgradesRefused).toBe(1);
    expect(broker.connectionCount).toBe(1);
  });

  it('answers plain HTTP requests with 426 on the path and 404 elsewhere, closing the connection', async () => {
    const { port, broker } = await startWs();
    for (const [path, status] of [['/mqtt', 426], ['/', 404], ['/mqtt/x', 404]] as const) {
      const res = await fetch(`http://127.0.0.1:${port}${path}`);
      expect(res.status).toBe(status);
      expect(res.headers.get('connection')).toBe('close');
      await res.text();
    }
    expect(broker.stats.websocketUpgradesRefused).toBe(3);
  });

  it('refuses an upgrade offering only other subprotocols with 400', async () => {
    const { port } = await startWs();
    const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, ['chat', 'soap']);
    expect(await refusedStatus(ws)).toBe(400);
  });

  it('reassembles packets split across frames and splits frames holding several packets', async () => {
    const { port, plainPort } = await startWs();
    const ws = await openSocket(`ws://127.0.0.1:${port}/mqtt`);
    const connect3 = CONNECT('split-frames');
    // CONNECT in three frames, the first of them one byte.
    const acked = receiveUntil(ws, (b) => b.length >= 4);
    ws.send(connect3.subarray(0, 1));
    ws.send(connect3.subarray(1, 5));
    ws.send(connect3.subarray(5));
    expect((await acked).subarray(0, 4).toString('hex')).toBe('20020000');

    const watcher = await client(`mqtt://127.0.0.1:${plainPort}`);
    await watcher.subscribeAsync('split/#', { qos: 1 });
    const got = collect(watcher, 2);
    const payload = Buffer.alloc(1000, 0x61);
    const first = mqttPacket.generate({ cmd: 'publish', topic: 'split/one', payload, qos: 1, messageId: 1, retain: false, dup: false });
    const second = mqttPacket.generate({ cmd: 'publish', topic: 'split/two', payload: Buffer.from('b'), qos: 0, retain: false, dup: false });
    // The first PUBLISH over three frames, the last of them also carrying the second PUBLISH.
    const pubacked = receiveUntil(ws, (b) => b.includes(Buffer.from([0x40, 0x02, 0x00, 0x01])));
    ws.send(first.subarray(0, 3));
    ws.send(first.subarray(3, 600));
    ws.send(Buffer.concat([first.subarray(600), second]));
    await pubacked;
    const messages = await got;
    expect(messages.map((m) => [m.topic, m.payload.length])).toEqual([['split/one', 1000], ['split/two', 1]]);
    ws.close();
  });

  it('closes the connection on a text frame [MQTT-6.0.0-1]', async () => {
    const { port } = await startWs();
    const ws = await openSocket(`ws://127.0.0.1:${port}/mqtt`);
    const closed = waitFor<number>(ws, 'close');
    ws.send(CONNECT('texty').toString('latin1'), { binary: false });
    expect(await closed).toBe(1003);
  });

  it('refuses a frame larger than maxPacketSize from its header: closed with 1009 before the body is sent, nothing routed or retained', async () => {
    const { port, plainPort, broker } = await startWs();
    const watcher = await client(`mqtt://127.0.0.1:${plainPort}`);
    await watcher.subscribeAsync('#');
    const quiet = noMessage(watcher, { forMs: 300 });
    const { socket, closed } = await rawUpgrade(port);
    socket.write(Buffer.concat([frameHeader(CONNECT('big').length), CONNECT('big')]));
    // A retained PUBLISH of 1 MiB: only the frame header and the MQTT header are ever sent.
    const size = 1024 * 1024;
    const mqttHeader = mqttPacket.generate({ cmd: 'publish', topic: 'big/x', payload: Buffer.alloc(size), qos: 0, retain: true, dup: false }).subarray(0, 16);
    socket.write(Buffer.concat([frameHeader(size + 16), mqttHeader]));
    const bytes = await closed;
    expect(bytes.subarray(0, 6).toString('hex')).toBe('820420020000'); // CONNACK in a binary frame
    expect(closeCode(bytes)).toBe(1009); // then the close frame: message too big
    await quiet;
    expect(broker.stats.messagesReceived).toBe(0);
    // Nothing retained: a new subscriber gets nothing either.
    const late = await client(`mqtt://127.0.0.1:${plainPort}`);
    await late.subscribeAsync('big/#');
    await noMessage(late, { forMs: 200 });
  });

  it('closes a connection sending malformed WebSocket frames and goes on serving others', async () => {
    const { port, broker } = await startWs();
    const { socket, closed } = await rawUpgrade(port);
    // Reserved bits set, reserved opcode, unmasked: three ways wrong.
    socket.write(Buffer.from([0xf3, 0x05, 1, 2, 3, 4, 5]));
    await closed;
    expect(broker.connectionCount).toBe(0);
    await client(`ws://127.0.0.1:${port}/mqtt`);
    expect(broker.connectionCount).toBe(1);
  });

  it('refuses a PUBLISH announcing more than maxPacketSize in small frames, from its MQTT header, nothing routed', async () => {
    const { port, plainPort, broker } = await startWs();
    expect(MAX_PACKET + FRAME_SLACK_BYTES).toBeLessThan(8192);
    const watcher = await client(`mqtt://127.0.0.1:${plainPort}`);
    await watcher.subscribeAsync('#');
    const ws = await openSocket(`ws://127.0.0.1:${port}/mqtt`);
    const acked = receiveUntil(ws, (b) => b.length >= 4);
    ws.send(CONNECT('announcer'));
    await acked;
    const big = mqttPacket.generate({ cmd: 'publish', topic: 'big/y', payload: Buffer.alloc(MAX_PACKET * 4), qos: 1, messageId: 1, retain: true, dup: false });
    const closed = waitFor(ws, 'close');
    ws.send(big.subarray(0, 1000)); // header and a little body, in a frame well under the limit
    await closed;
    await noMessage(watcher, { forMs: 200 });
    expect(broker.stats.messagesReceived).toBe(0);
    expect(broker.stats.protocolErrors).toBeGreaterThan(0);
  });

  it('drops an upgrade request whose headers are not complete within connectTimeoutMs (408), and counts it', async () => {
    const { port, broker } = await startWs({}, { connectTimeoutMs: 300 });
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    let received = '';
    socket.on('data', (c: Buffer) => (received += c.toString()));
    await waitFor(socket, 'connect');
    socket.write('GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n'); // and never the blank line
    const started = Date.now();
    await waitFor(socket, 'close', { within: 3000 });
    expect(Date.now() - started).toBeLessThan(2500);
    expect(received).toMatch(/^HTTP\/1\.1 408 /);
    await eventually(() => broker.stats.websocketUpgradesRefused === 1, 'counted');
  });

  it('shuts down gracefully over WebSocket: an MQTT 5 client gets DISCONNECT 0x8B, then the close', async () => {
    const { port } = await startWs();
    const c = await client(`ws://127.0.0.1:${port}/mqtt`, { protocolVersion: 5 });
    const disconnected = waitFor<{ reasonCode: number }>(c, 'disconnect');
    const started = Date.now();
    await running!.close();
    running = undefined;
    expect((await disconnected).reasonCode).toBe(0x8b);
    expect(Date.now() - started).toBeLessThan(3000); // not ws's 30 s close timeout
  });

  it('stops promptly with an upgrade request half sent', async () => {
    const { port } = await startWs();
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined);
    await waitFor(socket, 'connect');
    socket.write('GET /mqtt HTTP/1.1\r\n');
    const started = Date.now();
    await running!.close();
    running = undefined;
    expect(Date.now() - started).toBeLessThan(3000); // not the 10 s headers timeout
  });
});

describe('wss listener and several listeners at once', () => {
  it('routes between mqtt, mqtts, ws and wss clients of one broker, with a client certificate on wss', async (ctx) => {
    opensslPeer.require(ctx);
    const certs = makeCertificates();
    const tlsFiles = { cert: certs.cert, key: certs.key };
    running = await startListeners({
      listeners: [
        { type: 'mqtt', host: '127.0.0.1', port: 0 },
        { type: 'mqtts', host: '127.0.0.1', port: 0, ...tlsFiles },
        { type: 'ws', host: '127.0.0.1', port: 0 },
        { type: 'wss', host: '127.0.0.1', port: 0, ...tlsFiles, ca: certs.ca, requireCertificate: true },
      ],
    });
    const [mqttPort, mqttsPort, wsPort, wssPort] = running.addresses.map((a) => a.port);
    const ca = readFileSync(certs.ca);
    const urls = {
      mqtt: [`mqtt://127.0.0.1:${mqttPort}`, {}],
      mqtts: [`mqtts://127.0.0.1:${mqttsPort}`, { ca }],
      ws: [`ws://127.0.0.1:${wsPort}/mqtt`, {}],
      wss: [`wss://127.0.0.1:${wssPort}/mqtt`, { ca, cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) }],
    } as const;
    const connected: Record<string, MqttClient> = {};
    for (const [name, [url, options]] of Object.entries(urls)) {
      connected[name] = await client(url, { ...options, clientId: `multi-${name}` });
      await connected[name].subscribeAsync('multi/#', { qos: 1 });
    }
    const names = Object.keys(urls);
    for (const from of names) {
      const all = names.map((n) => collect(connected[n]!, 1));
      await connected[from]!.publishAsync(`multi/${from}`, from, { qos: 1 });
      for (const got of await Promise.all(all)) expect(got[0]!.topic).toBe(`multi/${from}`);
    }
    expect(running.peers.find((p) => p.type === 'wss')).toMatchObject({ certificateUsername: CLIENT_CN });
    // wss without a client certificate is refused during the TLS handshake.
    await expect(connect(urls.wss[0], { ca, connectTimeout: 2000 })).rejects.toThrow();
    await eventually(() => running!.broker.stats.tlsHandshakeFailures >= 1, 'counted');
  });
});
