import fc from 'fast-check';
import mqtt, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { FrameError, PacketFramer } from '../../../src/broker/framing.js';

const MALFORMED = 0x81;
const TOO_LARGE = 0x95;
const NO_LIMIT = 268_435_460; // above the largest packet MQTT can express

interface Frame {
  bytes: Buffer;
  headerLength: number;
}

/** Feeds `chunks` in order and returns every frame, copied (the framer hands out views). */
function frames(framer: PacketFramer, chunks: Buffer[]): Frame[] {
  const out: Frame[] = [];
  for (const chunk of chunks) {
    framer.push(chunk, (frame, headerLength) => {
      out.push({ bytes: Buffer.from(frame), headerLength });
      return true;
    });
  }
  return out;
}

/** The fixed header length of a whole packet: one type byte and its Remaining Length. */
function headerLengthOf(packet: Buffer): number {
  let i = 1;
  while (packet[i]! & 0x80) i++;
  return i + 1;
}

function expected(packets: Buffer[]): Frame[] {
  return packets.map((p) => ({ bytes: p, headerLength: headerLengthOf(p) }));
}

function frameError(fn: () => void): FrameError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FrameError);
    return err as FrameError;
  }
  throw new Error('expected a FrameError');
}

/** A PUBLISH whose Remaining Length is exactly `remaining` (topic "t", QoS 0). */
function publishWithRemaining(remaining: number): Buffer {
  return mqtt.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(remaining - 3, 0x61), qos: 0, dup: false, retain: false });
}

/** Fixed header bytes: a first byte and `remaining` as a variable byte integer. */
function header(first: number, remaining: number): Buffer {
  const bytes = [first];
  do {
    let b = remaining % 128;
    remaining = Math.floor(remaining / 128);
    if (remaining > 0) b |= 0x80;
    bytes.push(b);
  } while (remaining > 0);
  return Buffer.from(bytes);
}

const text = fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme-ascii' }).filter((s) => !s.includes('\u0000'));
const topicName = text.map((s) => s.replace(/[+#]/g, 'x'));
const messageId = fc.integer({ min: 1, max: 65_535 });

/** Valid MQTT 3.1.1 packets of the kinds a client sends, with payloads crossing the 1-byte length boundary. */
const clientPacket: fc.Arbitrary<Packet> = fc.oneof(
  fc.record({
    topic: topicName,
    payload: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
    qos: fc.constantFrom(0, 1, 2),
    retain: fc.boolean(),
    messageId,
  }).map(({ topic, payload, qos, retain, messageId: id }): Packet => ({ cmd: 'publish', topic, payload, qos: qos as 0 | 1 | 2, retain, dup: false, ...(qos > 0 ? { messageId: id } : {}) })),
  fc.record({ clientId: text, keepalive: fc.integer({ min: 0, max: 65_535 }) }).map(({ clientId, keepalive }): Packet => ({ cmd: 'connect', clientId, keepalive, protocolId: 'MQTT', protocolVersion: 4, clean: true })),
  fc.record({ messageId, filters: fc.array(topicName, { minLength: 1, maxLength: 4 }) }).map(({ messageId: id, filters }): Packet => ({ cmd: 'subscribe', messageId: id, subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })) })),
  fc.record({ messageId, filters: fc.array(topicName, { minLength: 1, maxLength: 4 }) }).map(({ messageId: id, filters }): Packet => ({ cmd: 'unsubscribe', messageId: id, unsubscriptions: filters })),
  messageId.map((id): Packet => ({ cmd: 'puback', messageId: id })),
  messageId.map((id): Packet => ({ cmd: 'pubrec', messageId: id })),
  messageId.map((id): Packet => ({ cmd: 'pubrel', messageId: id })),
  messageId.map((id): Packet => ({ cmd: 'pubcomp', messageId: id })),
  fc.constant<Packet>({ cmd: 'pingreq' }),
  fc.constant<Packet>({ cmd: 'disconnect' }),
);

/** Cuts `stream` at the given offsets (sorted, deduplicated, inside the stream). */
function cut(stream: Buffer, offsets: number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => o % (stream.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let start = 0;
  for (const p of [...points, stream.length]) {
    if (p === start) continue;
    chunks.push(stream.subarray(start, p));
    start = p;
  }
  return chunks;
}

describe('PacketFramer', () => {
  it('yields exactly the packets sent, however the stream is cut into chunks', () => {
    fc.assert(
      fc.property(fc.array(clientPacket, { minLength: 1, maxLength: 8 }), fc.array(fc.nat(), { maxLength: 30 }), (packets, offsets) => {
        const encoded = packets.map((p) => mqtt.generate(p));
        const stream = Buffer.concat(encoded);
        expect(frames(new PacketFramer(NO_LIMIT), cut(stream, offsets))).toEqual(expected(encoded));
      }),
      { numRuns: 300 },
    );
  });

  it('yields the same packets when the stream is cut at any single byte boundary', () => {
    const encoded = [
      mqtt.generate({ cmd: 'connect', clientId: 'sensor-1', protocolId: 'MQTT', protocolVersion: 4, clean: true, keepalive: 30 }),
      publishWithRemaining(200), // two-byte Remaining Length
      mqtt.generate({ cmd: 'pingreq' }),
      mqtt.generate({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'a/#', qos: 1 }] }),
    ];
    const stream = Buffer.concat(encoded);
    for (let at = 0; at <= stream.length; at++) {
      const got = frames(new PacketFramer(NO_LIMIT), [stream.subarray(0, at), stream.subarray(at)]);
      expect(got, `cut at byte ${at}`).toEqual(expected(encoded));
    }
  });

  it('yields the same packets when the stream arrives one byte at a time', () => {
    const encoded = [publishWithRemaining(130), mqtt.generate({ cmd: 'puback', messageId: 1 }), mqtt.generate({ cmd: 'disconnect' })];
    const stream = Buffer.concat(encoded);
    const bytes = [...stream].map((b) => Buffer.from([b]));
    expect(frames(new PacketFramer(NO_LIMIT), bytes)).toEqual(expected(encoded));
  });

  it.each([
    { remaining: 0, headerLength: 2, what: 'the smallest' },
    { remaining: 127, headerLength: 2, what: 'the largest one-byte' },
    { remaining: 128, headerLength: 3, what: 'the smallest two-byte' },
    { remaining: 16_383, headerLength: 3, what: 'the largest two-byte' },
    { remaining: 16_384, headerLength: 4, what: 'the smallest three-byte' },
    { remaining: 2_097_151, headerLength: 4, what: 'the largest three-byte' },
    { remaining: 2_097_152, headerLength: 5, what: 'the smallest four-byte' },
  ])('reads a Remaining Length of $remaining ($what value) with a $headerLength-byte fixed header', ({ remaining, headerLength }) => {
    const packet = remaining === 0 ? mqtt.generate({ cmd: 'pingreq' }) : publishWithRemaining(remaining);
    expect(packet.length).toBe(headerLength + remaining);
    // Whole, and with the length field itself split after its first byte. Compared with
    // equals(): a deep comparison of megabyte buffers is slow.
    for (const chunks of [[packet], [packet.subarray(0, 2), packet.subarray(2)]]) {
      const got = frames(new PacketFramer(NO_LIMIT), chunks);
      expect(got).toHaveLength(1);
      expect(got[0]!.headerLength).toBe(headerLength);
      expect(got[0]!.bytes.equals(packet)).toBe(true);
    }
  });

  it('refuses a Remaining Length of five bytes as malformed', () => {
    const err = frameError(() => frames(new PacketFramer(NO_LIMIT), [Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])]));
    expect(err.reasonCode).toBe(MALFORMED);
  });

  it('refuses a five-byte Remaining Length as soon as its fifth byte arrives, even split across chunks', () => {
    const framer = new PacketFramer(NO_LIMIT);
    expect(frames(framer, [Buffer.from([0x30, 0x80]), Buffer.from([0x80, 0x80])])).toEqual([]);
    expect(frameError(() => frames(framer, [Buffer.from([0x80])])).reasonCode).toBe(MALFORMED);
  });

  it('refuses a packet announcing more than maxPacketSize from its header alone, before the body arrives', () => {
    const framer = new PacketFramer(1024);
    // 0x30 + two-byte length 1022 = a 1025-byte packet; no body is sent.
    const err = frameError(() => frames(framer, [header(0x30, 1022)]));
    expect(err.reasonCode).toBe(TOO_LARGE);
  });

  it('refuses an oversized packet once its length field is complete, when the header comes in pieces', () => {
    const framer = new PacketFramer(100_000);
    const h = header(0x30, 200_000);
    expect(frames(framer, [h.subarray(0, 2)])).toEqual([]);
    expect(frameError(() => frames(framer, [h.subarray(2)])).reasonCode).toBe(TOO_LARGE);
  });

  it('accepts a packet of exactly maxPacketSize bytes and refuses one byte more', () => {
    const packet = publishWithRemaining(200);
    expect(frames(new PacketFramer(packet.length), [packet])).toHaveLength(1);
    expect(frameError(() => frames(new PacketFramer(packet.length - 1), [packet.subarray(0, 3)])).reasonCode).toBe(TOO_LARGE);
  });

  it.each([
    { first: '00', what: 'reserved type 0' },
    { first: '0f', what: 'reserved type 0 with flags' },
    { first: '80', what: 'SUBSCRIBE without its 0010 flags' },
    { first: '83', what: 'SUBSCRIBE with flags 0011' },
    { first: '60', what: 'PUBREL without its 0010 flags' },
    { first: '6a', what: 'PUBREL with flags 1010' },
    { first: 'a0', what: 'UNSUBSCRIBE without its 0010 flags' },
    { first: 'a4', what: 'UNSUBSCRIBE with flags 0100' },
    { first: '11', what: 'CONNECT with a flag set' },
    { first: '18', what: 'CONNECT with flags 1000' },
    { first: 'c1', what: 'PINGREQ with a flag set' },
    { first: '42', what: 'PUBACK with flags 0010' },
  ])('refuses first byte 0x$first ($what) as malformed as soon as it arrives', ({ first }) => {
    const err = frameError(() => frames(new PacketFramer(NO_LIMIT), [Buffer.from(first, 'hex')]));
    expect(err.reasonCode).toBe(MALFORMED);
  });

  it('refuses an HTTP request at its first byte', () => {
    const err = frameError(() => frames(new PacketFramer(NO_LIMIT), [Buffer.from('GET / HTTP/1.1\r\n')]));
    expect(err.reasonCode).toBe(MALFORMED);
  });

  it('delivers the valid packets before an invalid first byte, then refuses it', () => {
    const framer = new PacketFramer(NO_LIMIT);
    const ping = mqtt.generate({ cmd: 'pingreq' });
    const got: Buffer[] = [];
    const err = frameError(() =>
      framer.push(Buffer.concat([ping, Buffer.from([0x80, 0x00])]), (f) => {
        got.push(Buffer.from(f));
        return true;
      }),
    );
    expect(err.reasonCode).toBe(MALFORMED);
    expect(got).toEqual([ping]);
  });

  it('accepts every flag combination on PUBLISH and the fixed flags of SUBSCRIBE, PUBREL and UNSUBSCRIBE', () => {
    for (let flags = 0; flags < 16; flags++) {
      expect(frames(new PacketFramer(NO_LIMIT), [Buffer.from([0x30 | flags])]), `PUBLISH flags ${flags}`).toEqual([]);
    }
    for (const first of [0x82, 0x62, 0xa2, 0x10, 0xc0, 0xe0, 0xf0]) {
      expect(frames(new PacketFramer(NO_LIMIT), [Buffer.from([first])])).toEqual([]);
    }
  });

  it('stops handing out frames once onFrame returns false', () => {
    const framer = new PacketFramer(NO_LIMIT);
    const ping = mqtt.generate({ cmd: 'pingreq' });
    let calls = 0;
    framer.push(Buffer.concat([ping, ping, ping]), () => {
      calls++;
      return false;
    });
    expect(calls).toBe(1);
  });

  it('stops after the frame completed from earlier chunks when onFrame returns false', () => {
    const framer = new PacketFramer(NO_LIMIT);
    const packet = publishWithRemaining(50);
    const ping = mqtt.generate({ cmd: 'pingreq' });
    const seen: Buffer[] = [];
    const collect = (f: Buffer): boolean => {
      seen.push(Buffer.from(f));
      return false;
    };
    framer.push(packet.subarray(0, 10), collect);
    framer.push(Buffer.concat([packet.subarray(10), ping, ping]), collect);
    expect(seen).toEqual([packet]);
  });
});
