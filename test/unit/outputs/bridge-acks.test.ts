import { Duplex, PassThrough, Writable } from 'node:stream';
import fc from 'fast-check';
import { MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { AckFilter, divertAcks, PUBACK, PUBCOMP, PUBREC, type AckType } from '../../../src/outputs/bridge-acks.js';
import { FIRST_ID } from '../../../src/outputs/bridge-sender.js';

/** An acknowledgement as the sink saw it. */
type Ack = [type: AckType, id: number, reasonCode: number];

const v5 = (packet: Record<string, unknown>) => mqttPacket.generate(packet as unknown as mqttPacket.Packet, { protocolVersion: 5 });
const v4 = (packet: Record<string, unknown>) => mqttPacket.generate(packet as unknown as mqttPacket.Packet, { protocolVersion: 4 });

/** Packets a remote sends that MQTT.js must get, byte for byte. */
const FOR_MQTTJS: Record<string, Buffer> = {
  connack: v5({ cmd: 'connack', sessionPresent: false, reasonCode: 0, properties: { receiveMaximum: 100 } }),
  suback: v5({ cmd: 'suback', messageId: 7, granted: [1, 2] }),
  unsuback: v4({ cmd: 'unsuback', messageId: 8 }),
  'publish qos 0': v5({ cmd: 'publish', topic: 'a/b', payload: Buffer.from('hello'), qos: 0, retain: false, dup: false }),
  // An inbound message's identifier is the remote's: it may well be the sender's range.
  'publish qos 2, id 2000': v5({ cmd: 'publish', topic: 'c', payload: Buffer.alloc(300, 1), qos: 2, messageId: 2000, retain: true, dup: false }),
  'pubrel id 2000 (inbound QoS 2)': v5({ cmd: 'pubrel', messageId: 2000 }),
  pingresp: v5({ cmd: 'pingresp' }),
  disconnect: v5({ cmd: 'disconnect', reasonCode: 0x8b }),
  auth: v5({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x' } }),
  // MQTT.js's own publishes and its status message use identifiers 1..FIRST_ID-1.
  'puback id 1 (MQTT.js)': v4({ cmd: 'puback', messageId: 1 }),
  'pubrec id FIRST_ID-1 (MQTT.js)': v5({ cmd: 'pubrec', messageId: FIRST_ID - 1, reasonCode: 0x10 }),
  'pubcomp id 5 (MQTT.js)': v5({ cmd: 'pubcomp', messageId: 5 }),
};

/** Acknowledgements of the sender's identifiers, and what the sink must see for each. */
const FOR_SENDER: Array<{ name: string; bytes: Buffer; ack: Ack }> = [
  { name: 'MQTT 3.1.1 puback id FIRST_ID', bytes: v4({ cmd: 'puback', messageId: FIRST_ID }), ack: [PUBACK, FIRST_ID, 0] },
  { name: 'MQTT 5 puback, reason omitted', bytes: Buffer.from([0x40, 0x02, 0x07, 0xd0]), ack: [PUBACK, 2000, 0] },
  { name: 'MQTT 5 puback 0x97 with a reason string', bytes: v5({ cmd: 'puback', messageId: 2001, reasonCode: 0x97, properties: { reasonString: 'quota exceeded' } }), ack: [PUBACK, 2001, 0x97] },
  { name: 'MQTT 5 pubrec 0x10 with empty properties', bytes: Buffer.from([0x50, 0x04, 0x0b, 0xb8, 0x10, 0x00]), ack: [PUBREC, 3000, 0x10] },
  { name: 'MQTT 5 pubrec, reason code without properties', bytes: Buffer.from([0x50, 0x03, 0x0b, 0xb9, 0x87]), ack: [PUBREC, 3001, 0x87] },
  { name: 'pubcomp id 65535', bytes: v5({ cmd: 'pubcomp', messageId: 65_535 }), ack: [PUBCOMP, 65_535, 0] },
  { name: 'MQTT 5 pubcomp 0x92', bytes: v5({ cmd: 'pubcomp', messageId: 4000, reasonCode: 0x92 }), ack: [PUBCOMP, 4000, 0x92] },
];

interface Outcome {
  /** Every write MQTT.js's side got, in order. */
  writes: Buffer[];
  acks: Ack[];
  /** How often the keepalive hook ran (once per chunk with a diverted acknowledgement). */
  acksRead: number;
  malformed: string[];
  source: PassThrough;
}

/** Pipes `chunks` through a filter, as the remote's socket would, and resolves once MQTT.js's side has ended. */
async function feed(chunks: Buffer[], dest: Writable = collector()): Promise<Outcome> {
  const source = new PassThrough();
  const outcome: Outcome = { writes: (dest as Collector).writes ?? [], acks: [], acksRead: 0, malformed: [], source };
  const filter = new AckFilter(source, dest, FIRST_ID, {
    onAck: (type, id, reasonCode) => outcome.acks.push([type, id, reasonCode]),
    onMalformed: (reason) => outcome.malformed.push(reason),
  }, () => outcome.acksRead++);
  const ended = new Promise<void>((resolve) => {
    dest.once('finish', resolve);
    source.once('close', resolve);
  });
  source.pipe(filter);
  for (const chunk of chunks) source.write(chunk);
  source.end();
  await ended;
  return outcome;
}

type Collector = Writable & { writes: Buffer[] };

/** MQTT.js's side: records each write. */
function collector(): Collector {
  const writes: Buffer[] = [];
  const w = new Writable({
    write(chunk: Buffer, _enc, done) {
      writes.push(chunk);
      done();
    },
  }) as Collector;
  w.writes = writes;
  return w;
}

/** `bytes` cut at every given offset (sorted, within range). */
function cut(bytes: Buffer, at: number[]): Buffer[] {
  const points = [...new Set(at.filter((n) => n > 0 && n < bytes.length))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    chunks.push(Buffer.from(bytes.subarray(from, p))); // a copy: each chunk its own buffer, as from a socket
    from = p;
  }
  return chunks;
}

describe('the bridge\'s acknowledgement filter', () => {
  it('passes every packet that is not an acknowledgement of the sender\'s identifiers to MQTT.js unchanged, in order', async () => {
    const stream = Buffer.concat(Object.values(FOR_MQTTJS));
    const { writes, acks, acksRead } = await feed([stream]);
    expect(Buffer.concat(writes).equals(stream)).toBe(true);
    expect(acks).toEqual([]);
    expect(acksRead, 'MQTT.js reschedules its own pings for these').toBe(0);
  });

  it.for(FOR_SENDER)('takes out $name and hands the sink its type, identifier and reason code', async ({ bytes, ack }) => {
    const { writes, acks, acksRead } = await feed([bytes]);
    expect(acks).toEqual([ack]);
    expect(writes).toEqual([]);
    expect(acksRead).toBe(1);
  });

  it('takes out acknowledgements between other packets of one chunk, and passes each run of the rest as one view of the chunk', async () => {
    const { connack, suback, pingresp } = FOR_MQTTJS;
    const chunk = Buffer.concat([connack!, suback!, FOR_SENDER[0]!.bytes, FOR_SENDER[2]!.bytes, pingresp!, FOR_SENDER[5]!.bytes]);
    const { writes, acks, acksRead } = await feed([chunk]);
    expect(acks).toEqual([FOR_SENDER[0]!.ack, FOR_SENDER[2]!.ack, FOR_SENDER[5]!.ack]);
    expect(writes.map((w) => w.toString('hex'))).toEqual([Buffer.concat([connack!, suback!]).toString('hex'), pingresp!.toString('hex')]);
    expect(writes.every((w) => w.buffer === chunk.buffer), 'no copies').toBe(true);
    expect(acksRead, 'once per chunk, not per acknowledgement').toBe(1);
  });

  it('joins packets split across chunks, one byte at a time included', async () => {
    const stream = Buffer.concat([FOR_SENDER[1]!.bytes, FOR_MQTTJS['publish qos 2, id 2000']!, FOR_SENDER[2]!.bytes, FOR_MQTTJS.pingresp!]);
    const { writes, acks } = await feed(cut(stream, Array.from({ length: stream.length }, (_, i) => i)));
    expect(acks).toEqual([FOR_SENDER[1]!.ack, FOR_SENDER[2]!.ack]);
    expect(Buffer.concat(writes).equals(Buffer.concat([FOR_MQTTJS['publish qos 2, id 2000']!, FOR_MQTTJS.pingresp!]))).toBe(true);
  });

  it('for any mix of packets cut anywhere: MQTT.js gets exactly the rest, byte for byte and in order; the sink every acknowledgement in order', async () => {
    const pool = [
      ...Object.values(FOR_MQTTJS).map((bytes) => ({ bytes, ack: undefined as Ack | undefined })),
      ...FOR_SENDER.map(({ bytes, ack }) => ({ bytes, ack: ack as Ack | undefined })),
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: pool.length - 1 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.nat({ max: 4000 }), { maxLength: 30 }),
        async (picks, cuts) => {
          const packets = picks.map((i) => pool[i]!);
          const { writes, acks, malformed } = await feed(cut(Buffer.concat(packets.map((p) => p.bytes)), cuts));
          expect(malformed).toEqual([]);
          expect(acks).toEqual(packets.filter((p) => p.ack).map((p) => p.ack));
          expect(Buffer.concat(writes).equals(Buffer.concat(packets.filter((p) => !p.ack).map((p) => p.bytes)))).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('passes an acknowledgement too short to carry an identifier to MQTT.js, which reports it', async () => {
    const short = Buffer.from([0x40, 0x00]);
    const { writes, acks } = await feed([short]);
    expect(acks).toEqual([]);
    expect(Buffer.concat(writes).equals(short)).toBe(true);
  });

  it('closes the connection on bytes that are not MQTT, and passes nothing after them', async () => {
    const { writes, acks, malformed, source } = await feed([FOR_MQTTJS.connack!, Buffer.from([0x00, 0x02, 0x00, 0x01]), FOR_SENDER[0]!.bytes, FOR_MQTTJS.pingresp!]);
    expect(malformed).toEqual([expect.stringContaining('invalid packet type or flags 0x0')]);
    expect(source.destroyed).toBe(true);
    expect(writes.map((w) => w.toString('hex'))).toEqual([FOR_MQTTJS.connack!.toString('hex')]);
    expect(acks).toEqual([]);
  });

  it('reads no further while MQTT.js holds back (a remote message waiting for its local commit), then goes on in order', async () => {
    const held: Array<() => void> = [];
    const writes: Buffer[] = [];
    // MQTT.js's side with no room: each write completes only when released.
    const slow = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _enc, done) {
        writes.push(chunk);
        held.push(done);
      },
    });
    const acks: Ack[] = [];
    const source = new PassThrough();
    const filter = new AckFilter(source, slow, FIRST_ID, { onAck: (...ack) => acks.push(ack), onMalformed: () => undefined });
    const publish = FOR_MQTTJS['publish qos 2, id 2000']!;
    filter.write(publish);
    filter.write(FOR_SENDER[0]!.bytes);
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes).toHaveLength(1);
    expect(acks, 'the next chunk waits for MQTT.js').toEqual([]);
    for (let i = 0; i < 10 && held.length > 0; i++) {
      held.shift()!();
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(acks).toEqual([FOR_SENDER[0]!.ack]);
    expect(Buffer.concat(writes).equals(publish)).toBe(true);
  });
});

describe('an MQTT.js client with its acknowledgements diverted', () => {
  /** A client on an in-memory connection: `remote` is what the broker sends; time is `clock.now`. */
  function divertedClient(keepaliveS: number) {
    const remote = new PassThrough();
    const connection = Duplex.from({ readable: remote, writable: new Writable({ write: (_c, _e, done) => done() }) });
    const client = new MqttClient(() => connection, { manualConnect: true, keepalive: keepaliveS, protocolVersion: 5, reconnectPeriod: 0, log: () => undefined });
    const clock = { now: 0 };
    const acks: Ack[] = [];
    let reschedules = 0;
    client.reschedulePing = () => {
      reschedules++;
    };
    // Ending the client aborts the in-memory connection, which MQTT.js reports as an error.
    client.on('error', () => undefined);
    divertAcks(client, FIRST_ID, { onAck: (...ack) => acks.push(ack), onMalformed: () => undefined }, () => clock.now);
    client.connect();
    return { client, remote, clock, acks, reschedules: () => reschedules };
  }

  const tick = () => new Promise((resolve) => setImmediate(resolve));

  it('gives MQTT.js the rest of the stream (its CONNACK) and the sink the acknowledgements', async () => {
    const { client, remote, acks } = divertedClient(60);
    const connected = new Promise((resolve) => client.once('connect', resolve));
    remote.write(Buffer.concat([FOR_MQTTJS.connack!, FOR_SENDER[1]!.bytes]));
    await connected;
    await tick();
    expect(acks).toEqual([FOR_SENDER[1]!.ack]);
    client.end(true);
  });

  it('counts acknowledgements as traffic for the keepalive at most once per quarter keepalive', async () => {
    const { client, remote, clock, reschedules } = divertedClient(4);
    const ack = FOR_SENDER[0]!.bytes;
    remote.write(ack);
    await tick();
    expect(reschedules()).toBe(1);
    clock.now = 999;
    remote.write(ack);
    await tick();
    expect(reschedules(), 'within a quarter of 4 s').toBe(1);
    clock.now = 1000;
    remote.write(ack);
    await tick();
    expect(reschedules()).toBe(2);
    clock.now = 5000;
    remote.write(FOR_MQTTJS.suback!);
    await tick();
    expect(reschedules(), 'MQTT.js itself, for its SUBACK').toBe(3);
    client.end(true);
  });
});
