import Database from 'better-sqlite3';
import type { IClientOptions, MqttClient } from 'mqtt';
import { generate } from 'mqtt-packet';
import { afterEach, describe, expect, test } from 'vitest';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { connect, quiet } from '../helpers/mqtt.js';
import { openRaw, varint, type RawClient } from '../helpers/raw-client.js';

// Every test gets its own broker; cleanups run last-registered first.
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function client(tb: TestEngine, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(tb.url, options);
  cleanups.push(() => c.endAsync(true));
  return c;
}

/** Every rule keeps history of every topic, so anything routed leaves a history row. */
const HISTORY_OF_ALL = 'rules:\n  - id: keep-all\n    on: "#"\n    to:\n      - history: {}\n';

/**
 * A whole signalbox (broker, SQLite, a rule storing history of `#`) with three well-behaved
 * clients: a `#` watcher, a bystander that publishes, and `parked`, a persistent QoS 1 `#`
 * session that is offline, so every message routed to it is written to storage.
 * `othersUnaffected(expected)` proves, after the bad client is gone, that both live clients
 * still work, that the watcher got exactly `expected` topics before the bystander's sentinel
 * (by default none: nothing from the bad client was delivered), and that nothing else was
 * stored anywhere: no retained message, history row or queued session message but those of
 * `expected` and the sentinel.
 */
async function scene(config: BrokerConfigInput = {}) {
  const brokerSection = { listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }], ...config };
  const tb = await startEngine({ config: `broker: ${JSON.stringify(brokerSection)}\n`, rules: { 'all.yaml': HISTORY_OF_ALL } });
  cleanups.push(() => tb.close());
  const parked = await connect(tb.url, { protocolVersion: 5, clientId: 'parked', clean: false, properties: { sessionExpiryInterval: 3600 } });
  await parked.subscribeAsync('#', { qos: 1 });
  await parked.endAsync();
  const watcher = await client(tb, { protocolVersion: 5, clientId: 'watcher' });
  await watcher.subscribeAsync('#', { qos: 1 });
  const bystander = await client(tb, { clientId: 'bystander' });
  const seen: string[] = [];
  const sentinel = quiet(
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the watcher got no sentinel; it got: ${seen.join(', ')}`)), 2500);
      watcher.on('message', (topic) => {
        seen.push(topic);
        if (topic === 'ok/after') {
          clearTimeout(timer);
          resolve();
        }
      });
    }),
  );

  /** An MQTT `version` raw client that has connected successfully. */
  const bad = async (version: 4 | 5): Promise<RawClient> => {
    const r = await openRaw(tb.port, { protocolVersion: version });
    cleanups.push(() => r.destroy());
    const connack = await r.connect({ clientId: `bad-${version}` });
    expect(connack.returnCode ?? connack.reasonCode).toBe(0);
    return r;
  };

  const othersUnaffected = async (expected: string[] = []) => {
    // Retained, so a retained row would show up too; PUBACK means all it caused is committed.
    await bystander.publishAsync('ok/after', 'sentinel', { qos: 1, retain: true });
    await sentinel;
    expect(seen).toEqual([...expected, 'ok/after']);
    expect(watcher.connected).toBe(true);
    expect(bystander.connected).toBe(true);
    const db = new Database(tb.project.config.storage.path, { readonly: true });
    try {
      const topics = (sql: string) => db.prepare(sql).pluck().all() as string[];
      expect(topics('SELECT topic FROM retained ORDER BY topic').sort()).toEqual([...expected, 'ok/after'].sort());
      expect(topics('SELECT topic FROM history ORDER BY id')).toEqual([...expected, 'ok/after']);
      expect(topics("SELECT topic FROM session_messages WHERE client_id = 'parked' ORDER BY seq")).toEqual([...expected, 'ok/after']);
    } finally {
      db.close();
    }
  };
  return { tb, bad, othersUnaffected };
}

/**
 * MQTT 3.1.1: the broker closes the connection without sending anything.
 * MQTT 5: it sends DISCONNECT `reasonCode` first, then closes.
 */
async function expectRefused(r: RawClient, version: 4 | 5, reasonCode: number): Promise<void> {
  if (version === 5) {
    expect(await r.expectPacket('disconnect')).toMatchObject({ reasonCode });
  }
  await r.closed();
  // Nothing else was sent (no PUBACK/SUBACK for the refused packet, no DISCONNECT to a 3.1.1 client).
  await expect(r.nextPacket()).rejects.toThrow(/closed/);
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/**
 * A PUBLISH built byte by byte, so the topic can hold bytes mqtt-packet would never produce.
 * QoS 1, retained (so a refusal that failed would leave a retained row), packet id 1.
 */
function handBuiltPublish(topic: Buffer, version: 4 | 5, payload = Buffer.from('x')): Buffer {
  const body = Buffer.concat([u16(topic.length), topic, u16(1), version === 5 ? Buffer.from([0]) : Buffer.alloc(0), payload]);
  return Buffer.concat([Buffer.from([0x33]), varint(body.length), body]);
}

const versions = [4, 5] as const;

describe('PUBLISH with a topic that is not allowed', () => {
  const topics = [
    { name: "a '+' wildcard", bytes: Buffer.from('bad/+/t'), reason: 0x90 }, // [MQTT-3.3.2-2]
    { name: "a '#' wildcard", bytes: Buffer.from('bad/#'), reason: 0x90 }, // [MQTT-3.3.2-2]
    { name: 'an empty topic and no alias', bytes: Buffer.alloc(0), reason: 0x90 }, // [MQTT-4.7.3-1]
    { name: 'U+0000', bytes: Buffer.from('bad/\u0000/t'), reason: 0x81 }, // [MQTT-1.5.4-2]
    { name: 'the invalid UTF-8 bytes C3 28', bytes: Buffer.from([0x62, 0x2f, 0xc3, 0x28]), reason: 0x81 }, // [MQTT-1.5.4-1]
    { name: 'ED A0 80 (an encoded UTF-16 surrogate)', bytes: Buffer.from([0x62, 0x2f, 0xed, 0xa0, 0x80]), reason: 0x81 }, // [MQTT-1.5.4-1]
  ];
  const cases = topics.flatMap((t) => versions.map((version) => ({ ...t, version, hex: `0x${t.reason.toString(16)}` })));

  for (const { name, bytes, version, reason, hex } of cases) {
    const how = version === 5 ? `gets DISCONNECT ${hex} and is closed` : 'is closed';
    test(`an MQTT v${version} PUBLISH whose topic has ${name} ${how}, and nothing is delivered or stored`, async () => {
      const { bad, othersUnaffected } = await scene();
      const r = await bad(version);
      r.send(handBuiltPublish(bytes, version));
      await expectRefused(r, version, reason);
      await othersUnaffected();
    });
  }
});

describe('packet size', () => {
  test.each(versions)('an MQTT v%i fixed header announcing ~250 MB closes the connection before any body arrives (v5: DISCONNECT 0x95 first)', async (version) => {
    const { bad, othersUnaffected } = await scene();
    const r = await bad(version);
    // Only the fixed header: a broker that waits for the body would never close.
    const header = Buffer.concat([Buffer.from([0x30]), varint(250_000_000)]);
    expect(header).toHaveLength(5);
    r.send(header);
    await expectRefused(r, version, 0x95);
    await othersUnaffected();
  });

  /** A retained QoS 1 PUBLISH on big/t whose whole encoding (fixed header included) is exactly `bytes` long. */
  function publishOfSize(bytes: number, version: 4 | 5): Buffer {
    for (let payload = 0; payload < bytes; payload++) {
      const packet = generate(
        { cmd: 'publish', topic: 'big/t', payload: Buffer.alloc(payload, 0x61), qos: 1, messageId: 1, dup: false, retain: true },
        { protocolVersion: version },
      );
      if (packet.length === bytes) return packet;
    }
    throw new Error(`no PUBLISH encodes to exactly ${bytes} bytes`);
  }

  const max = 200;

  test.each(versions)('with maxPacketSize 200, an MQTT v%i PUBLISH of exactly 200 bytes is delivered', async (version) => {
    const { bad, othersUnaffected } = await scene({ limits: { maxPacketSize: max } });
    const r = await bad(version);
    r.send(publishOfSize(max, version));
    expect(await r.expectPacket('puback')).toMatchObject({ messageId: 1 });
    await othersUnaffected(['big/t']);
  });

  test.each(versions)('with maxPacketSize 200, an MQTT v%i PUBLISH of 201 bytes closes the connection (v5: DISCONNECT 0x95 first), stores nothing, and is counted', async (version) => {
    const { tb, bad, othersUnaffected } = await scene({ limits: { maxPacketSize: max } });
    const r = await bad(version);
    r.send(publishOfSize(max + 1, version));
    await expectRefused(r, version, 0x95);
    await othersUnaffected();
    expect(tb.engine.broker.stats.packetsTooLarge).toBe(1);
  });

  test.each(versions)('with maxPacketSize 200, an MQTT v%i PUBLISH announcing 100,000 bytes is refused before its body is sent, and nothing is stored', async (version) => {
    const { tb, bad, othersUnaffected } = await scene({ limits: { maxPacketSize: max } });
    const r = await bad(version);
    // The header and the start of a valid retained QoS 1 PUBLISH; the rest is never sent, so
    // a broker that buffered the body before deciding would never close.
    const start = Buffer.concat([u16(5), Buffer.from('big/t'), u16(1), version === 5 ? Buffer.from([0]) : Buffer.alloc(0), Buffer.alloc(100, 0x61)]);
    r.send(Buffer.concat([Buffer.from([0x33]), varint(100_000), start]));
    await expectRefused(r, version, 0x95);
    await othersUnaffected();
    expect(tb.engine.broker.stats.packetsTooLarge).toBe(1);
  });
});

describe('reserved flag bits', () => {
  /** Packets whose fixed-header flags break [MQTT-2.2.2-1]; bodies are otherwise valid. */
  const packets = (version: 4 | 5) => {
    const props = version === 5 ? Buffer.from([0]) : Buffer.alloc(0);
    const withLength = (first: number, body: Buffer) => Buffer.concat([Buffer.from([first]), varint(body.length), body]);
    const filter = Buffer.concat([u16(5), Buffer.from('f/l/t')]);
    return [
      { name: 'SUBSCRIBE with flags 0000 instead of 0010', bytes: withLength(0x80, Buffer.concat([u16(1), props, filter, Buffer.from([1])])) },
      { name: 'UNSUBSCRIBE with flags 0000 instead of 0010', bytes: withLength(0xa0, Buffer.concat([u16(1), props, filter])) },
      { name: 'PUBREL with flags 0000 instead of 0010', bytes: withLength(0x60, u16(1)) },
      { name: 'PINGREQ with flags 0001', bytes: withLength(0xc1, Buffer.alloc(0)) },
      {
        name: 'PUBLISH with both QoS bits set',
        bytes: withLength(0x36, Buffer.concat([u16(3), Buffer.from('q/3'), u16(1), props, Buffer.from('x')])),
      },
    ];
  };
  const cases = versions.flatMap((version) => packets(version).map(({ name }, i) => ({ name, i, version })));

  for (const { name, i, version } of cases) {
    const how = version === 5 ? 'gets DISCONNECT 0x81 and is closed' : 'is closed';
    test(`an MQTT v${version} connection that sends a ${name} ${how}`, async () => {
      const { bad, othersUnaffected } = await scene();
      const r = await bad(version);
      r.send(packets(version)[i]!.bytes);
      await expectRefused(r, version, 0x81);
      await othersUnaffected();
    });
  }
});
