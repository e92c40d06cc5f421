import { connect as netConnect, type Socket } from 'node:net';
import fc from 'fast-check';
import mqttPacket, { type Packet } from 'mqtt-packet';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collect, connect, nextMessage, type TestBroker, startBroker } from '../helpers/mqtt.js';

// Throws random and mutated MQTT packets at the broker over raw sockets on 127.0.0.1 and checks
// that no bad client takes the process down or disturbs a well-behaved one. Reproduce a
// failure with FUZZ_SEED=<seed printed below>; fast-check also prints the counterexample.

const SEED = Number(process.env.FUZZ_SEED ?? 20_250_101);
/** Sockets open at the same time in one run; at most this many, every one closed before the next run. */
const SESSIONS_PER_RUN = 40;
const NUM_RUNS = 100;
const MIN_PACKETS = 10_000;
/** After our FIN the broker should close its side at once; past this we destroy the socket ourselves. */
const CLOSE_WITHIN_MS = 2000;

// ---------------------------------------------------------------------------------------------
// Arbitraries: packets as mqtt-packet objects, mutations as data (so counterexamples print).

type Version = 3 | 4 | 5;

const shortText = fc.string({ maxLength: 12 });
// mqtt-packet writes nothing at all for an empty userProperties object, so at least one key.
const userProperties = fc.option(fc.dictionary(shortText, shortText, { minKeys: 1, maxKeys: 2 }), { nil: undefined });
const qos = fc.constantFrom<0 | 1 | 2>(0, 1, 2);
const messageId = fc.integer({ min: 1, max: 65_535 });
const bytes = (maxLength: number) => fc.uint8Array({ maxLength }).map((b) => Buffer.from(b));

/** Mostly plausible topics, plus the invalid ones the broker must refuse (wildcards, empty, U+0000). */
const topic = fc.oneof(
  fc.constantFrom('fz/a', 'fz/b/c', 'fz/+', 'fz/#', '#', '+', '', '$SYS/x', 'fz/\u0000', 'fz/é', '/', '//', '$share/g/fz/a'),
  shortText.map((s) => `fz/${s}`),
);

const publishProperties = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: fc.nat(),
    topicAlias: fc.integer({ min: 1, max: 20 }),
    responseTopic: topic,
    correlationData: bytes(8),
    userProperties,
    contentType: shortText,
  },
  { requiredKeys: [] },
);

const connectPacket = fc
  .record({
    protocolVersion: fc.constantFrom<Version>(3, 4, 5),
    clientId: fc.oneof(fc.constant(''), shortText.map((s) => `fz-${s}`)),
    clean: fc.boolean(),
    keepalive: fc.integer({ min: 0, max: 65_535 }),
    will: fc.option(
      fc.record({
        topic: topic.filter((t) => t !== ''), // mqtt-packet cannot write an empty will topic
        payload: bytes(16),
        qos,
        retain: fc.boolean(),
        properties: fc.record({ willDelayInterval: fc.integer({ min: 0, max: 5 }), messageExpiryInterval: fc.nat(), userProperties }, { requiredKeys: [] }),
      }),
      { nil: undefined },
    ),
    credentials: fc.option(fc.record({ username: shortText, password: fc.option(bytes(8), { nil: undefined }) }), { nil: undefined }),
    properties: fc.record(
      {
        sessionExpiryInterval: fc.nat(),
        receiveMaximum: fc.integer({ min: 1, max: 65_535 }),
        maximumPacketSize: fc.integer({ min: 1, max: 1 << 20 }),
        topicAliasMaximum: fc.integer({ min: 0, max: 65_535 }),
        requestResponseInformation: fc.boolean(),
        requestProblemInformation: fc.boolean(),
        userProperties,
      },
      { requiredKeys: [] },
    ),
  })
  .map(({ protocolVersion, credentials, properties, will, clientId, ...rest }): Packet => ({
    cmd: 'connect',
    protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
    protocolVersion,
    // mqtt-packet cannot write an empty client id for MQTT 3.1 or without clean session;
    // test/integration/broker-connect.test.ts covers those cases
    clientId: clientId === '' && (protocolVersion === 3 || !rest.clean) ? 'fz-empty' : clientId,
    ...rest,
    ...credentials,
    will: will && protocolVersion !== 5 ? { ...will, properties: undefined } : will,
    properties: protocolVersion === 5 ? properties : undefined,
  }));

/** Any packet a client might send after CONNECT, including ones only a server may send. */
const laterPacket: fc.Arbitrary<Packet> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ cmd: fc.constant('publish' as const), topic, payload: bytes(64), qos, dup: fc.boolean(), retain: fc.boolean(), messageId, properties: fc.option(publishProperties, { nil: undefined }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      cmd: fc.constant('subscribe' as const),
      messageId,
      subscriptions: fc.array(fc.record({ topic, qos, nl: fc.boolean(), rap: fc.boolean(), rh: fc.constantFrom(0, 1, 2) }), { minLength: 1, maxLength: 3 }),
      properties: fc.option(fc.record({ subscriptionIdentifier: fc.integer({ min: 1, max: 1000 }), userProperties }, { requiredKeys: [] }), { nil: undefined }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('unsubscribe' as const), messageId, unsubscriptions: fc.array(topic, { minLength: 1, maxLength: 3 }) }) },
  { weight: 2, arbitrary: fc.record({ cmd: fc.constantFrom('puback' as const, 'pubrec' as const, 'pubrel' as const, 'pubcomp' as const), messageId, reasonCode: fc.constantFrom(0, 0x10, 0x80, 0x92) }) },
  { weight: 1, arbitrary: fc.constant<Packet>({ cmd: 'pingreq' }) },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('disconnect' as const), reasonCode: fc.constantFrom(0, 0x04, 0x81), properties: fc.option(fc.record({ sessionExpiryInterval: fc.nat() }), { nil: undefined }) }) },
  { weight: 1, arbitrary: fc.record({ cmd: fc.constant('auth' as const), reasonCode: fc.constantFrom(0, 0x18, 0x19) }) },
  { weight: 1, arbitrary: fc.constantFrom<Packet>({ cmd: 'connack', returnCode: 0, reasonCode: 0, sessionPresent: false }, { cmd: 'pingresp' }, { cmd: 'suback', messageId: 1, granted: [0, 1] }, { cmd: 'unsuback', messageId: 2, granted: [0] }) },
  { weight: 1, arbitrary: connectPacket }, // a second CONNECT is a protocol error
);

type Mutation =
  | { flip: Array<[number, number]> }
  | { truncateAt: number }
  | { remainingLength: number }
  | { lengthBytes: number[] }
  | { insertAt: number; bytes: number[] }
  | { firstByte: number }
  | { duplicate: true };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ flip: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }) }),
  fc.record({ truncateAt: fc.nat() }),
  fc.record({ remainingLength: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 268_435_455 })) }),
  fc.record({ lengthBytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 5 }) }),
  fc.record({ insertAt: fc.nat(), bytes: fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 16 }) }),
  fc.record({ firstByte: fc.integer({ min: 0, max: 255 }) }),
  fc.constant({ duplicate: true as const }),
);

/** One packet's worth of bytes on the wire: a generated packet (maybe mutated), or raw bytes. */
type Item = { packet: Packet; version: Version; mutations: Mutation[] } | { raw: Uint8Array };

const randomBytes: fc.Arbitrary<Item> = fc.uint8Array({ minLength: 1, maxLength: 300 }).map((raw) => ({ raw }));
const item = (version: Version, packet: fc.Arbitrary<Packet>, mutate: number): fc.Arbitrary<Item> =>
  fc.record({
    packet,
    version: fc.oneof({ weight: 9, arbitrary: fc.constant(version) }, { weight: 1, arbitrary: fc.constantFrom<Version>(3, 4, 5) }),
    mutations: fc.oneof({ weight: 10 - mutate, arbitrary: fc.constant<Mutation[]>([]) }, { weight: mutate, arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }) }),
  });
const versionOf = (p: Packet): Version => (p.cmd === 'connect' ? (p.protocolVersion ?? 4) : 4);

interface Session {
  kind: string;
  items: Item[];
  /** Where the bytes are cut into separate writes, as fractions of the total. */
  cuts: number[];
}

const cuts = fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 3 });
const session: fc.Arbitrary<Session> = fc.oneof(
  // purely random byte strings
  fc.record({ kind: fc.constant('random bytes'), items: fc.array(randomBytes, { minLength: 1, maxLength: 12 }), cuts }),
  // a valid CONNECT, then valid and mutated packets
  connectPacket.chain((hello) =>
    fc.record({ kind: fc.constant('connect, then mutated packets'), items: fc.array(item(versionOf(hello), laterPacket, 4), { minLength: 1, maxLength: 20 }).map((rest) => [{ packet: hello, version: versionOf(hello), mutations: [] }, ...rest]), cuts }),
  ),
  // a mutated CONNECT, then whatever
  fc.record({ kind: fc.constant('mutated connect'), items: fc.tuple(item(4, connectPacket, 10), fc.array(fc.oneof(item(4, laterPacket, 3), randomBytes), { maxLength: 12 })).map(([first, rest]) => [first, ...rest]), cuts }),
  // a valid CONNECT, then garbage
  connectPacket.chain((hello) =>
    fc.record({ kind: fc.constant('connect, then garbage'), items: fc.array(randomBytes, { minLength: 1, maxLength: 10 }).map((rest) => [{ packet: hello, version: versionOf(hello), mutations: [] }, ...rest]), cuts }),
  ),
  // valid packets without any CONNECT
  fc.record({ kind: fc.constant('no connect'), items: fc.array(item(5, laterPacket, 2), { minLength: 1, maxLength: 12 }), cuts }),
);

// ---------------------------------------------------------------------------------------------
// Turning items into bytes.

function encodeRemainingLength(length: number): Buffer {
  const out: number[] = [];
  do {
    let digit = length % 128;
    length = Math.floor(length / 128);
    if (length > 0) digit |= 0x80;
    out.push(digit);
  } while (length > 0 && out.length < 4);
  return Buffer.from(out);
}

/** Replaces the fixed header's Remaining Length bytes (as far as they can be read) with `lengthBytes`. */
function replaceLength(packet: Buffer, lengthBytes: Buffer): Buffer {
  if (packet.length === 0) return packet;
  let end = 1;
  while (end < packet.length && end < 5 && (packet[end]! & 0x80) !== 0) end++;
  return Buffer.concat([packet.subarray(0, 1), lengthBytes, packet.subarray(Math.min(end + 1, packet.length))]);
}

function mutate(packet: Buffer, m: Mutation): Buffer {
  if ('flip' in m) {
    const copy = Buffer.from(packet);
    for (const [at, mask] of m.flip) if (copy.length > 0) copy[at % copy.length]! ^= mask;
    return copy;
  }
  if ('truncateAt' in m) return packet.subarray(0, packet.length === 0 ? 0 : m.truncateAt % packet.length);
  if ('remainingLength' in m) return replaceLength(packet, encodeRemainingLength(m.remainingLength));
  if ('lengthBytes' in m) return replaceLength(packet, Buffer.from(m.lengthBytes));
  if ('insertAt' in m) {
    const at = m.insertAt % (packet.length + 1);
    return Buffer.concat([packet.subarray(0, at), Buffer.from(m.bytes), packet.subarray(at)]);
  }
  if ('firstByte' in m) return Buffer.concat([Buffer.from([m.firstByte]), packet.subarray(1)]);
  return Buffer.concat([packet, packet]);
}

/** What one fuzz test sent and how its connections ended. */
interface FuzzStats {
  packets: number;
  sessions: number;
  /** Packets mqtt-packet refused to write in any version; each went out as a bare PINGREQ instead. */
  ungenerated: number;
  closedByBroker: number;
  closedByUs: number;
  runs: number;
}

/**
 * Writes the packet as `protocolVersion` or, when mqtt-packet refuses that (AUTH before MQTT 5),
 * as another version: the broker then sees a packet that does not belong to its session's version.
 */
function generateOrUndefined(packet: Packet, protocolVersion: Version): Buffer | undefined {
  for (const version of [protocolVersion, 5, 4]) {
    try {
      const wire = mqttPacket.generate(packet, { protocolVersion: version });
      if (wire.length > 0) return wire;
    } catch {
      // try the next version
    }
  }
  return undefined;
}

function toBytes(entry: Item, stats: FuzzStats): Buffer {
  if ('raw' in entry) return Buffer.from(entry.raw);
  const wire = generateOrUndefined(entry.packet, entry.version);
  if (wire === undefined) stats.ungenerated++;
  return entry.mutations.reduce(mutate, wire ?? Buffer.from([0xc0, 0x00]));
}

// ---------------------------------------------------------------------------------------------
// Playing sessions against the broker.

/** Settles when the socket has closed; destroys it ourselves after `within` ms. */
function closed(socket: Socket, within: number): Promise<'broker' | 'us'> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve('broker');
    const timer = setTimeout(() => {
      socket.destroy();
      resolve('us');
    }, within);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve('broker');
    });
  });
}

function openSocket(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    socket.setNoDelay(true);
    // The broker may close on us mid-write: EPIPE / ECONNRESET are expected outcomes here.
    socket.on('error', () => {});
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('connect to the broker took over 2000 ms'));
    }, 2000);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(socket);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      reject(new Error('socket closed before connecting'));
    });
  });
}

/** Writes the session's bytes in a few chunks, half-closes, and waits for the socket to close. */
async function play(port: number, s: Session, stats: FuzzStats): Promise<void> {
  const wire = Buffer.concat(s.items.map((entry) => toBytes(entry, stats)));
  stats.packets += s.items.length;
  stats.sessions++;
  const socket = await openSocket(port);
  socket.resume(); // read and drop whatever the broker answers, so its FIN is seen and 'close' follows
  try {
    const points = [...new Set(s.cuts.map((c) => Math.floor(c * wire.length)))].sort((a, b) => a - b);
    let from = 0;
    for (const to of [...points, wire.length]) {
      if (socket.destroyed) break;
      if (to > from) socket.write(wire.subarray(from, to));
      from = to;
    }
    socket.end();
    const by = await closed(socket, CLOSE_WITHIN_MS);
    if (by === 'broker') stats.closedByBroker++;
    else stats.closedByUs++;
  } finally {
    socket.destroy();
  }
}

/** A raw MQTT 3.1.1 CONNECT gets CONNACK 0 within 2 s: the listener still serves new clients. */
async function expectConnack(port: number, clientId: string): Promise<void> {
  const socket = await openSocket(port);
  try {
    const reply = await new Promise<Buffer>((resolve, reject) => {
      let got = Buffer.alloc(0);
      const timer = setTimeout(() => reject(new Error(`no CONNACK within 2000 ms (got ${got.toString('hex') || 'nothing'})`)), 2000);
      socket.on('data', (chunk: Buffer) => {
        got = Buffer.concat([got, chunk]);
        if (got.length >= 4) {
          clearTimeout(timer);
          resolve(got);
        }
      });
      socket.once('close', () => {
        clearTimeout(timer);
        reject(new Error(`closed before CONNACK (got ${got.toString('hex') || 'nothing'})`));
      });
      socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 30 }));
    });
    expect(reply.subarray(0, 4).toString('hex'), 'CONNACK, session present 0, return code 0').toBe('20020000');
    socket.end(Buffer.from([0xe0, 0x00]));
  } finally {
    socket.destroy();
  }
}

// ---------------------------------------------------------------------------------------------

describe('the broker under random and mutated packets', () => {
  let server: TestBroker;
  let bystander: MqttClient;
  const crashes: unknown[] = [];
  const onCrash = (error: unknown) => crashes.push(error);

  beforeAll(async () => {
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    // A short connect timeout so half-sent CONNECTs do not pile up; thousands of sockets from
    // 127.0.0.1 in a few seconds are far over the default connect rate per IP (100/s).
    server = await startBroker({ connectTimeoutMs: 2000, limits: { maxConnectRatePerIp: 1_000_000 } });
    bystander = await connect(server.url, { protocolVersion: 5, clientId: 'fuzz-bystander', keepalive: 0 });
    await bystander.subscribeAsync('health/#', { qos: 1 });
  });

  afterAll(async () => {
    process.off('uncaughtException', onCrash);
    process.off('unhandledRejection', onCrash);
    await bystander?.endAsync(true);
    await server?.close();
  });

  it(`survives at least ${MIN_PACKETS} random and mutated packets and still serves well-behaved clients`, { timeout: 60_000 }, async () => {
    const stats: FuzzStats = { packets: 0, sessions: 0, ungenerated: 0, closedByBroker: 0, closedByUs: 0, runs: 0 };
    console.info(`fuzz: seed ${SEED} (rerun with FUZZ_SEED=${SEED}), ${NUM_RUNS} runs of ${SESSIONS_PER_RUN} concurrent sockets`);

    await fc.assert(
      fc.asyncProperty(fc.array(session, { minLength: SESSIONS_PER_RUN, maxLength: SESSIONS_PER_RUN }), async (sessions) => {
        const crashesBefore = crashes.length;
        await Promise.all(sessions.map((s) => play(server.port, s, stats)));
        await expectConnack(server.port, `fuzz-health-${stats.runs++}`);
        expect(crashes.slice(crashesBefore)).toEqual([]);
      }),
      // Shrinking a failure is bounded by the time limit; an interrupted run counts as failed.
      { seed: SEED, numRuns: NUM_RUNS, interruptAfterTimeLimit: 40_000, markInterruptAsFailure: true },
    );

    console.info(`fuzz: ${stats.packets} packets in ${stats.sessions} sessions; broker closed ${stats.closedByBroker}, we closed ${stats.closedByUs} after ${CLOSE_WITHIN_MS} ms; ${stats.ungenerated} packets mqtt-packet refused to generate`);
    expect(stats.packets).toBeGreaterThanOrEqual(MIN_PACKETS);
    expect(crashes).toEqual([]);
    expect(stats.closedByUs, `connections still open ${CLOSE_WITHIN_MS} ms after the client's FIN`).toBe(0);

    // The connection that was open all along was not disturbed, and new clients work normally.
    expect(bystander.connected).toBe(true);
    const subscriber = await connect(server.url, { clientId: 'fuzz-after-subscriber' });
    const publisher = await connect(server.url, { protocolVersion: 5, clientId: 'fuzz-after-publisher' });
    try {
      await subscriber.subscribeAsync('health/after', { qos: 1 });
      const toSubscriber = nextMessage(subscriber, { within: 3000 });
      const toBystander = collect(bystander, 1, { within: 3000 });
      await publisher.publishAsync('health/after', 'still here', { qos: 1 });
      expect((await toSubscriber).payload.toString()).toBe('still here');
      expect((await toBystander)[0]!.payload.toString()).toBe('still here');
    } finally {
      await subscriber.endAsync();
      await publisher.endAsync();
    }
  });

  it('a connection whose first packet is not CONNECT is sent nothing and closed', { timeout: 30_000 }, async () => {
    // Complete packets of any other type: the broker must close without waiting for us.
    const notConnect = fc.oneof(
      laterPacket
        .filter((p) => p.cmd !== 'connect')
        .map((packet) => generateOrUndefined(packet, 5))
        .filter((wire): wire is Buffer => wire !== undefined),
      // any other first byte with Remaining Length 0, including the reserved types 0 and 15
      fc.integer({ min: 0, max: 255 }).filter((b) => b >> 4 !== 1).map((b) => Buffer.from([b, 0])),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(notConnect, { minLength: 20, maxLength: 20 }), async (firsts) => {
        const outcomes = await Promise.all(firsts.map(async (first) => {
          const socket = await openSocket(server.port);
          let received = Buffer.alloc(0);
          socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
          socket.write(first);
          const by = await closed(socket, 2000);
          socket.destroy();
          return { first: first.toString('hex'), received: received.toString('hex'), closedBy: by };
        }));
        for (const outcome of outcomes) expect(outcome).toEqual({ first: outcome.first, received: '', closedBy: 'broker' });
      }),
      { seed: SEED, numRuns: 15, endOnFailure: true },
    );
  });
});
