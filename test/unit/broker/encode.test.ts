import fc from 'fast-check';
import mqtt, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { encodePublishHeader } from '../../../src/broker/encode.js';

interface Input {
  topic: string;
  qos: 0 | 1 | 2;
  retain: boolean;
  dup: boolean;
  packetId: number;
  payload: Buffer;
  v5: boolean;
}

function encode(i: Input): { bytes: Buffer; size: number; headerLength: number } {
  const { header, size } = encodePublishHeader(i.topic, i.qos, i.retain, i.dup, i.packetId, i.payload.length, i.v5);
  return { bytes: Buffer.concat([header, i.payload]), size, headerLength: header.length };
}

/** What mqtt-packet's parser makes of `bytes`; fails unless it is exactly one packet. */
function referenceParse(bytes: Buffer, v5: boolean): IPublishPacket {
  const parser = mqtt.parser({ protocolVersion: v5 ? 5 : 4 });
  const packets: Packet[] = [];
  const errors: Error[] = [];
  parser.on('packet', (p: Packet) => packets.push(p));
  parser.on('error', (e: Error) => errors.push(e));
  const left = parser.parse(bytes);
  expect(errors).toEqual([]);
  expect(packets).toHaveLength(1);
  expect(left).toBe(0);
  return packets[0] as IPublishPacket;
}

/**
 * Checks that header + payload is the PUBLISH `i` describes: mqtt-packet parses it back to the
 * same fields, and `size` is the exact byte count.
 */
function expectRoundTrip(i: Input): void {
  const { bytes, size } = encode(i);
  expect(size).toBe(bytes.length);
  const p = referenceParse(bytes, i.v5);
  expect(p.topic).toBe(i.topic);
  expect(p.qos).toBe(i.qos);
  expect(p.retain).toBe(i.retain);
  expect(p.dup).toBe(i.dup);
  expect(p.messageId).toBe(i.qos > 0 ? i.packetId : undefined);
  expect(p.properties).toBeUndefined();
  // equals(): a deep comparison of large buffers is slow.
  expect((p.payload as Buffer).length).toBe(i.payload.length);
  expect((p.payload as Buffer).equals(i.payload)).toBe(true);
}

/** The bytes mqtt-packet's generate() writes for the same packet. */
function reference(i: Input): Buffer {
  return mqtt.generate(
    { cmd: 'publish', topic: i.topic, payload: i.payload, qos: i.qos, retain: i.retain, dup: i.dup, ...(i.qos > 0 ? { messageId: i.packetId } : {}), ...(i.v5 ? { properties: {} } : {}) },
    { protocolVersion: i.v5 ? 5 : 4 },
  );
}

const input: fc.Arbitrary<Input> = fc
  .record({
    topic: fc.string({ unit: 'binary', minLength: 1, maxLength: 60 }).filter((s) => !s.includes('\u0000')),
    qos: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
    retain: fc.boolean(),
    dup: fc.boolean(),
    packetId: fc.integer({ min: 1, max: 65_535 }),
    payload: fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a)),
    v5: fc.boolean(),
  })
  .map((i) => ({ ...i, dup: i.qos > 0 && i.dup }));

describe('encodePublishHeader', () => {
  it('writes a PUBLISH that mqtt-packet parses back to the same packet, with size the exact total', () => {
    fc.assert(fc.property(input, expectRoundTrip), { numRuns: 500 });
  });

  it('writes the same bytes as mqtt-packet generate()', () => {
    fc.assert(
      fc.property(input, (i) => {
        expect(encode(i).bytes.toString('hex')).toBe(reference(i).toString('hex'));
      }),
      { numRuns: 500 },
    );
  });

  const flagCases = [0, 1, 2].flatMap((qos) =>
    [false, true].flatMap((retain) =>
      (qos > 0 ? [false, true] : [false]).flatMap((dup) => [false, true].map((v5) => ({ qos: qos as 0 | 1 | 2, retain, dup, v5 }))),
    ),
  );

  it.each(flagCases)('encodes QoS $qos, retain $retain, dup $dup, v5 $v5', ({ qos, retain, dup, v5 }) => {
    expectRoundTrip({ topic: 'plant/boiler/temperature', qos, retain, dup, packetId: 0x1234, payload: Buffer.from('21.5'), v5 });
  });

  it.each([
    { what: 'é', topic: 'café/état' },
    { what: 'CJK', topic: '工厂/温度' },
    { what: 'astral plane emoji', topic: 'home/🙂/🔥' },
  ])('counts a multi-byte UTF-8 topic ($what) in bytes, not characters', ({ topic }) => {
    for (const v5 of [false, true]) expectRoundTrip({ topic, qos: 1, retain: false, dup: false, packetId: 1, payload: Buffer.from('x'), v5 });
  });

  it.each([
    { what: 'a long topic', topic: 'a/'.repeat(5_000) + 'end' },
    { what: 'the longest topic (65535 bytes)', topic: 'x'.repeat(65_535) },
    { what: 'the longest topic in 3-byte characters', topic: '漢'.repeat(21_845) },
  ])('encodes $what', ({ topic }) => {
    for (const v5 of [false, true]) expectRoundTrip({ topic, qos: 2, retain: true, dup: true, packetId: 65_535, payload: Buffer.from('p'), v5 });
  });

  it.each([127, 128, 16_383, 16_384, 2_097_151, 2_097_152].flatMap((length) => [length - 1, length, length + 1]).map((length) => ({ length })))(
    'encodes a payload of $length bytes',
    ({ length }) => {
      const payload = Buffer.alloc(length, 0x5a);
      for (const v5 of [false, true]) {
        for (const qos of [0, 1] as const) expectRoundTrip({ topic: 't/x', qos, retain: false, dup: false, packetId: 7, payload, v5 });
      }
    },
  );

  it.each([
    { remaining: 127, headerBytes: 2 },
    { remaining: 128, headerBytes: 3 },
    { remaining: 16_383, headerBytes: 3 },
    { remaining: 16_384, headerBytes: 4 },
    { remaining: 2_097_151, headerBytes: 4 },
    { remaining: 2_097_152, headerBytes: 5 },
  ])('uses a $headerBytes-byte fixed header for a Remaining Length of exactly $remaining', ({ remaining, headerBytes }) => {
    for (const v5 of [false, true]) {
      for (const qos of [0, 2] as const) {
        const topic = 'sensors/a';
        const overhead = 2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0);
        const payload = Buffer.alloc(remaining - overhead, 0x31);
        const { bytes, size, headerLength } = encode({ topic, qos, retain: true, dup: false, packetId: 300, payload, v5 });
        expect(size).toBe(headerBytes + remaining);
        expect(headerLength).toBe(headerBytes + overhead);
        expect(bytes.subarray(0, headerBytes).equals(reference({ topic, qos, retain: true, dup: false, packetId: 300, payload, v5 }).subarray(0, headerBytes))).toBe(true);
        expectRoundTrip({ topic, qos, retain: true, dup: false, packetId: 300, payload, v5 });
      }
    }
  });
});
