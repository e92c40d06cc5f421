import { readFileSync } from 'node:fs';
import net from 'node:net';
import mqtt, { type IClientOptions, type MqttClient, type Packet } from 'mqtt';
import { describe, expect, it, onTestFinished, type TestContext } from 'vitest';
import type { QoS } from '../../src/broker/types.js';
import { divertAcks } from '../../src/outputs/bridge-acks.js';
import { BridgeSender, FIRST_ID, mqttjsIdProvider } from '../../src/outputs/bridge-sender.js';
import type { OutboxMessage } from '../../src/outputs/connector.js';
import { makeCertificates, opensslPeer } from '../helpers/certs.js';
import { eventually, recordingLogger } from '../helpers/durable.js';
import { startEngine } from '../helpers/engine.js';
import { startListeners } from '../helpers/listeners.js';
import { collect, connect, waitFor } from '../helpers/mqtt.js';
import { bridgeState, mosquittoPeer, startMosquitto } from '../helpers/mosquitto.js';

/**
 * The bridge reads the remote's PUBACK / PUBREC / PUBCOMP for its own publishes itself and
 * hands MQTT.js only the rest. These check that QoS 1 and 2 still arrive, complete and in
 * order, over every URL scheme and both protocol versions, and that MQTT.js sees none of
 * those acknowledgements yet still gets its own and keeps its keepalive.
 */

/** Messages per case: enough that acknowledgements share socket reads and split across them. */
const MESSAGES = 400;
const PUBLISH_GROUP = 50;

interface Remote {
  /** What the bridge connects to. */
  url: string;
  /** Extra bridge settings (the CA for TLS). */
  settings: Record<string, unknown>;
  /** Where a subscriber at the remote connects. */
  subscriberUrl: string;
  subscriberOptions: IClientOptions;
}

/** Mosquitto over mqtt:// or mqtts:// (it has no WebSocket listener here). */
async function mosquittoRemote(ctx: TestContext, tls: boolean): Promise<Remote> {
  mosquittoPeer.require(ctx);
  if (!tls) {
    const m = await startMosquitto();
    return { url: m.url, settings: {}, subscriberUrl: m.url, subscriberOptions: {} };
  }
  opensslPeer.require(ctx);
  const certs = makeCertificates();
  const m = await startMosquitto({ tls: certs });
  return { url: m.url, settings: { ca: certs.ca }, subscriberUrl: m.url, subscriberOptions: { ca: readFileSync(certs.ca) } };
}

/** signalbox's own broker with a ws:// or wss:// listener (and a plain one for the subscriber). */
async function webSocketRemote(ctx: TestContext, tls: boolean): Promise<Remote> {
  const files = tls ? (opensslPeer.require(ctx), makeCertificates()) : undefined;
  const remote = await startListeners({
    listeners: [
      { type: 'mqtt', host: '127.0.0.1', port: 0 },
      files ? { type: 'wss', host: '127.0.0.1', port: 0, cert: files.cert, key: files.key } : { type: 'ws', host: '127.0.0.1', port: 0 },
    ],
  });
  onTestFinished(() => remote.close());
  const [plain, web] = remote.addresses;
  return {
    url: `${files ? 'wss' : 'ws'}://127.0.0.1:${web!.port}/mqtt`,
    settings: files ? { ca: files.ca } : {},
    subscriberUrl: `mqtt://127.0.0.1:${plain!.port}`,
    subscriberOptions: {},
  };
}

async function client(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(url, options);
  onTestFinished(() => {
    c.end(true);
  });
  return c;
}

const qosOf = (n: number): QoS => (n % 2 === 0 ? 1 : 2);

describe('a bridge taking its own acknowledgements out of the remote\'s stream', () => {
  const cases = (['mqtt', 'mqtts', 'ws', 'wss'] as const).flatMap((scheme) => [4, 5].map((protocolVersion) => ({ scheme, protocolVersion })));

  it.for(cases)('delivers QoS 1 and 2 messages alternately over $scheme:// with MQTT protocol version $protocolVersion: every one once, each QoS in order', async ({ scheme, protocolVersion }, ctx) => {
    const tls = scheme === 'mqtts' || scheme === 'wss';
    const remote = scheme.startsWith('ws') ? await webSocketRemote(ctx, tls) : await mosquittoRemote(ctx, tls);
    const cloud = {
      type: 'bridge',
      url: remote.url,
      protocolVersion,
      // No maxInflight: with MQTT 3.1.1 (no Receive Maximum) the default must stay within
      // Mosquitto's max_inflight_messages (20): once unfinished QoS 2 messages fill it,
      // Mosquitto drops what arrives while still acknowledging it. With MQTT 5 the remote's
      // Receive Maximum says it.
      ...remote.settings,
      reconnect: { retryMinMs: 50, retryMaxMs: 500 },
      outbox: { batchSize: 100, retryMinMs: 50, retryMaxMs: 500 },
      out: [{ local: 'telemetry/#', remote: 'site-a/telemetry/#' }],
    };
    const sb = await startEngine({ config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs: ${JSON.stringify({ cloud })}\n` });
    onTestFinished(() => sb.close());
    await bridgeState(sb.url, 'online');
    const subscriber = await client(remote.subscriberUrl, { ...remote.subscriberOptions, protocolVersion: 5 });
    await subscriber.subscribeAsync('site-a/telemetry/#', { qos: 2 });
    const publisher = await client(sb.url, { protocolVersion: 5 });

    const arriving = collect(subscriber, MESSAGES, { within: 8000 });
    // In groups well under signalbox's Receive Maximum (100), which MQTT.js does not enforce
    // for QoS 2: past it the local broker disconnects the publisher [MQTT-3.3.4-9].
    for (let n = 0; n < MESSAGES; n += PUBLISH_GROUP) {
      await Promise.all(Array.from({ length: PUBLISH_GROUP }, (_, i) => publisher.publishAsync(`telemetry/${n + i}`, `m${n + i}`, { qos: qosOf(n + i) })));
    }
    const received = await arriving;

    // Each QoS in publish order (the local broker takes a QoS 2 message in only on PUBREL, so
    // the two interleave differently), each message at its QoS.
    for (const qos of [1, 2]) {
      const sent = Array.from({ length: MESSAGES }, (_, n) => n).filter((n) => qosOf(n) === qos).map((n) => `m${n}`);
      expect(received.filter((m) => m.packet.qos === qos).map((m) => m.payload.toString()), `QoS ${qos}`).toEqual(sent);
    }
    await expect(collect(subscriber, 1, { within: 300 }), 'no duplicates').rejects.toThrow(/got 0/);
    expect(sb.engine.outputs.status()[0]).toMatchObject({ name: 'cloud', waiting: 0, delivered: MESSAGES });
  });
});

function message(n: number, qos: QoS): OutboxMessage {
  return { seq: n, time: n, ruleId: 'r', clientId: 'c', topic: `acks/${n}`, payload: Buffer.from(String(n)), qos, retain: false, properties: undefined, data: undefined, attempts: 0 };
}

interface Wired {
  client: MqttClient;
  sender: BridgeSender;
  /** Every packet MQTT.js parsed, in order. */
  seen: Packet[];
  /** Every packet MQTT.js wrote itself, in order. */
  sent: Packet[];
}

/** An MQTT.js client and a sender on one connection to `url`, wired the way the bridge wires them. */
async function wire(url: string, options: IClientOptions): Promise<Wired> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, messageIdProvider: mqttjsIdProvider(), manualConnect: true, ...options });
  onTestFinished(() => {
    c.end(true);
  });
  const sender = new BridgeSender('acks', 'signalbox-hops');
  divertAcks(c, FIRST_ID, { onAck: (type, id, reasonCode) => sender.onAck(type, id, reasonCode), onMalformed: () => undefined }, Date.now);
  const seen: Packet[] = [];
  const sent: Packet[] = [];
  c.on('packetreceive', (p) => seen.push(p));
  c.on('packetsend', (p) => sent.push(p));
  const connected = waitFor(c, 'connect', { within: 5000 });
  c.connect();
  await connected;
  sender.attach(c.stream, { window: 20, maxPacketSize: Infinity }, options.protocolVersion === 5, false);
  return { client: c, sender, seen, sent };
}

const isAck = (p: Packet) => p.cmd === 'puback' || p.cmd === 'pubrec' || p.cmd === 'pubcomp';

describe('MQTT.js beside the bridge\'s acknowledgement filter', () => {
  it.for([4, 5] as const)('never parses the acknowledgements of the sender\'s messages, and still gets its own (MQTT %s)', async (protocolVersion, ctx) => {
    mosquittoPeer.require(ctx);
    const m = await startMosquitto();
    const { client: c, sender, seen } = await wire(m.url, { protocolVersion });

    await sender.send(Array.from({ length: 200 }, (_, n) => message(n, n % 2 === 0 ? 1 : 2)));
    // MQTT.js's own QoS 1 and 2 publishes complete through its own handlers.
    await c.publishAsync('acks/own', 'one', { qos: 1 });
    await c.publishAsync('acks/own', 'two', { qos: 2 });

    const acks = seen.filter(isAck).map((p) => ({ cmd: p.cmd, id: (p as { messageId: number }).messageId }));
    expect(acks.every((a) => a.id < FIRST_ID), JSON.stringify(acks)).toBe(true);
    expect(acks.map((a) => a.cmd).sort()).toEqual(['puback', 'pubcomp', 'pubrec']);
    expect(sender.pending).toBe(0);
  });

  it('does not ping while acknowledgements keep arriving, and pings once they stop (keepalive 1 s)', async (ctx) => {
    mosquittoPeer.require(ctx);
    const m = await startMosquitto();
    const { client: c, sender, sent } = await wire(m.url, { protocolVersion: 5, keepalive: 1 });

    // 1.5 s of messages, each batch sent once the previous one is acknowledged: without the
    // acknowledgements counting as traffic, MQTT.js would send PINGREQ after 1 s.
    const started = Date.now();
    for (let n = 0; n < 100_000 && Date.now() - started < 1500; n += 10) {
      await sender.send(Array.from({ length: 10 }, (_, i) => message(n + i, 1)));
    }
    expect(sent.filter((p) => p.cmd === 'pingreq')).toEqual([]);

    // Idle: MQTT.js's keepalive carries on as before, and PINGRESP still reaches it.
    const pingresp = waitFor(c, 'packetreceive', { within: 4000 });
    await waitFor(c, 'packetsend', { within: 3000 });
    expect(sent.at(-1)?.cmd).toBe('pingreq');
    expect((await pingresp as Packet).cmd).toBe('pingresp');
    expect(c.connected).toBe(true);
  });
});

describe('a bridge whose remote sends bytes that are not MQTT', () => {
  it('logs it, closes that connection and connects again', async () => {
    // A remote that accepts the CONNECT, then sends a packet of reserved type 0 [MQTT-2.2.2].
    const sockets = new Set<net.Socket>();
    let connections = 0;
    const remote = net.createServer((socket) => {
      sockets.add(socket);
      connections++;
      socket.on('error', () => undefined);
      socket.once('data', () => socket.write(Buffer.from([0x20, 0x03, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00])));
    });
    await new Promise<void>((resolve) => remote.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => {
      for (const s of sockets) s.destroy();
      return new Promise<void>((resolve) => remote.close(() => resolve()));
    });
    const { port } = remote.address() as net.AddressInfo;
    const cloud = { type: 'bridge', url: `mqtt://127.0.0.1:${port}`, reconnect: { retryMinMs: 20, retryMaxMs: 100 }, out: [{ local: 'telemetry/#', remote: 'site-a/telemetry/#' }] };
    const { log, lines } = recordingLogger();
    const sb = await startEngine({ config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs: ${JSON.stringify({ cloud })}\n` }, { log });
    onTestFinished(() => sb.close());

    const warning = await eventually(() => lines.find((l) => /malformed packet/.test(String(l.msg))), 'a warning about the malformed packet');
    expect(warning).toMatchObject({ bridge: 'cloud', level: 40, error: expect.stringContaining('invalid packet type or flags 0x0') });
    await eventually(() => connections >= 2, 'a second connection');
  });
});
