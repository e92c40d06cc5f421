import fc from 'fast-check';
import mqtt, { type IPublishPacket, type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { decodePublish } from '../../../src/broker/decode-publish.js';
import { FrameError } from '../../../src/broker/framing.js';

const MALFORMED = 0x81;
const PROTOCOL_ERROR = 0x82;

type Properties = NonNullable<IPublishPacket['properties']>;

/** The fixed header length of a whole packet: one type byte and its Remaining Length. */
function headerLengthOf(packet: Buffer): number {
  let i = 1;
  while (packet[i]! & 0x80) i++;
  return i + 1;
}

/** What mqtt-packet's own parser makes of `bytes`. */
function referenceParse(bytes: Buffer, v5: boolean): IPublishPacket {
  const parser = mqtt.parser({ protocolVersion: v5 ? 5 : 4 });
  const packets: Packet[] = [];
  const errors: Error[] = [];
  parser.on('packet', (p: Packet) => packets.push(p));
  parser.on('error', (e: Error) => errors.push(e));
  parser.parse(bytes);
  expect(errors).toEqual([]);
  expect(packets).toHaveLength(1);
  return packets[0] as IPublishPacket;
}

function decode(bytes: Buffer, v5: boolean): IPublishPacket {
  return decodePublish(bytes, headerLengthOf(bytes), v5);
}

function frameError(fn: () => unknown): FrameError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FrameError);
    return err as FrameError;
  }
  throw new Error('expected a FrameError');
}

/** A whole PUBLISH from a first byte and the bytes after the fixed header. */
function rawPublish(first: number, body: number[] | Buffer): Buffer {
  const b = Buffer.from(body);
  const len: number[] = [];
  let n = b.length;
  do {
    let x = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) x |= 0x80;
    len.push(x);
  } while (n > 0);
  return Buffer.concat([Buffer.from([first, ...len]), b]);
}

function str(s: string | Buffer): number[] {
  const b = typeof s === 'string' ? Buffer.from(s) : s;
  return [b.length >> 8, b.length & 0xff, ...b];
}

/** A v5 QoS 0 PUBLISH on topic "t" with the given raw property bytes and payload "p". */
function withProperties(props: number[]): Buffer {
  return rawPublish(0x30, [...str('t'), props.length, ...props, 0x70]);
}

/** Any Unicode text without U+0000 (forbidden in MQTT strings). */
const mqttText = (maxLength: number) => fc.string({ unit: 'binary', maxLength }).filter((s) => !s.includes('\u0000'));
const nonEmptyText = (maxLength: number) => fc.string({ unit: 'binary', minLength: 1, maxLength }).filter((s) => !s.includes('\u0000'));

/**
 * User properties with repeated keys. Values are non-empty: mqtt-packet's parser tests a value
 * for truthiness when a key repeats, so it drops an empty first value (its quirk, not ours).
 */
const userProperties = fc.dictionary(nonEmptyText(10), fc.oneof(nonEmptyText(10), fc.array(nonEmptyText(10), { minLength: 2, maxLength: 3 })), { minKeys: 1, maxKeys: 4 });

const properties: fc.Arbitrary<Properties> = fc.record(
  {
    payloadFormatIndicator: fc.boolean(),
    messageExpiryInterval: fc.integer({ min: 0, max: 0xffff_ffff }),
    contentType: mqttText(20),
    responseTopic: nonEmptyText(20),
    correlationData: fc.uint8Array({ maxLength: 20 }).map((a) => Buffer.from(a)),
    topicAlias: fc.integer({ min: 1, max: 65_535 }),
    userProperties,
  },
  { requiredKeys: [] },
);

const publish = (v5: boolean): fc.Arbitrary<IPublishPacket> =>
  fc
    .record({
      topic: nonEmptyText(40),
      payload: fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a)),
      qos: fc.constantFrom<0 | 1 | 2>(0, 1, 2),
      retain: fc.boolean(),
      dup: fc.boolean(),
      messageId: fc.integer({ min: 1, max: 65_535 }),
      properties: v5 ? fc.option(properties, { nil: undefined }) : fc.constant(undefined),
    })
    .map(({ topic, payload, qos, retain, dup, messageId, properties: p }): IPublishPacket => ({
      cmd: 'publish',
      topic,
      payload,
      qos,
      retain,
      dup: qos > 0 && dup, // [MQTT-3.3.1-2] DUP is 0 at QoS 0
      ...(qos > 0 ? { messageId } : {}),
      ...(p && Object.keys(p).length > 0 ? { properties: p } : {}),
    }));

/** The fields a user of the packet reads, in a form toEqual compares exactly. */
function fields(p: IPublishPacket) {
  return { topic: p.topic, payload: Buffer.from(p.payload as Buffer), qos: p.qos, retain: p.retain, dup: p.dup, messageId: p.qos > 0 ? p.messageId : undefined, properties: p.properties ? { ...p.properties, ...(p.properties.userProperties ? { userProperties: { ...p.properties.userProperties } } : {}) } : undefined };
}

describe('decodePublish', () => {
  it.each([
    { version: 'MQTT 3.1.1', v5: false },
    { version: 'MQTT 5', v5: true },
  ])('decodes any valid $version PUBLISH exactly as mqtt-packet parses it', ({ v5 }) => {
    fc.assert(
      fc.property(publish(v5), (packet) => {
        const bytes = mqtt.generate(packet, { protocolVersion: v5 ? 5 : 4 });
        const ours = fields(decode(bytes, v5));
        expect(ours).toEqual(fields(referenceParse(bytes, v5)));
        // And both agree with what was sent.
        expect(ours).toEqual(fields(packet));
      }),
      { numRuns: 500 },
    );
  });

  it('keeps a leading U+FEFF in the topic [MQTT-1.5.4-3]', () => {
    const packet: IPublishPacket = { cmd: 'publish', topic: '\uFEFF\u0001', payload: Buffer.alloc(0), qos: 0, dup: false, retain: false };
    for (const v5 of [false, true]) expect(decode(mqtt.generate(packet, { protocolVersion: v5 ? 5 : 4 }), v5).topic).toBe('\uFEFF\u0001');
  });

  it('keeps every value of a user property whose key repeats, in order', () => {
    const packet: IPublishPacket = { cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 0, dup: false, retain: false, properties: { userProperties: { k: ['1', '2', '3'], other: 'v' } } };
    const decoded = decode(mqtt.generate(packet, { protocolVersion: 5 }), true);
    expect({ ...decoded.properties!.userProperties }).toEqual({ k: ['1', '2', '3'], other: 'v' });
  });

  it('reports the packet length as the bytes after the fixed header', () => {
    const bytes = mqtt.generate({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(300), qos: 1, messageId: 9, dup: false, retain: false });
    expect(decode(bytes, false).length).toBe(bytes.length - 3);
  });

  it('decodes a v5 PUBLISH with an empty property list to a packet without properties', () => {
    const decoded = decode(withProperties([]), true);
    expect(decoded.properties).toBeUndefined();
    expect(decoded.payload).toEqual(Buffer.from('p'));
  });

  it('copies the payload and the correlation data out of the frame', () => {
    const bytes = mqtt.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('hello'), qos: 0, dup: false, retain: false, properties: { correlationData: Buffer.from('corr') } }, { protocolVersion: 5 });
    const decoded = decode(bytes, true);
    bytes.fill(0xee);
    expect(decoded.payload).toEqual(Buffer.from('hello'));
    expect(decoded.properties!.correlationData).toEqual(Buffer.from('corr'));
  });

  describe('refuses ill-formed strings as malformed (0x81)', () => {
    const cases = [
      { what: 'C3 28 (a lead byte followed by ASCII)', bytes: [0xc3, 0x28] },
      { what: 'ED A0 80 (an encoded UTF-16 surrogate)', bytes: [0xed, 0xa0, 0x80] },
      { what: 'C0 80 (an overlong U+0000)', bytes: [0xc0, 0x80] },
      { what: 'a lone continuation byte 80', bytes: [0x61, 0x80] },
      { what: 'U+0000', bytes: [0x61, 0x00, 0x62] },
      { what: 'U+0000 after a non-ASCII character', bytes: [0xc3, 0xa9, 0x00] },
    ];

    it.each(cases)('in the topic: $what', ({ bytes }) => {
      for (const v5 of [false, true]) {
        const err = frameError(() => decode(rawPublish(0x30, [...str(Buffer.from(bytes)), ...(v5 ? [0] : []), 0x70]), v5));
        expect(err.reasonCode).toBe(MALFORMED);
      }
    });

    it.each(cases)('in a user property name: $what', ({ bytes }) => {
      const err = frameError(() => decode(withProperties([0x26, ...str(Buffer.from(bytes)), ...str('v')]), true));
      expect(err.reasonCode).toBe(MALFORMED);
    });

    it.each(cases)('in a user property value: $what', ({ bytes }) => {
      const err = frameError(() => decode(withProperties([0x26, ...str('k'), ...str(Buffer.from(bytes))]), true));
      expect(err.reasonCode).toBe(MALFORMED);
    });

    it.each(cases)('in the content type: $what', ({ bytes }) => {
      const err = frameError(() => decode(withProperties([0x03, ...str(Buffer.from(bytes))]), true));
      expect(err.reasonCode).toBe(MALFORMED);
    });

    it.each(cases)('in the response topic: $what', ({ bytes }) => {
      const err = frameError(() => decode(withProperties([0x08, ...str(Buffer.from(bytes))]), true));
      expect(err.reasonCode).toBe(MALFORMED);
    });
  });

  it('decodes a multi-byte UTF-8 topic (é, 漢, 🙂)', () => {
    const topic = 'é/漢/🙂';
    expect(decode(rawPublish(0x30, [...str(topic), 0x70]), false).topic).toBe(topic);
  });

  it('refuses QoS 3 as malformed', () => {
    expect(frameError(() => decode(rawPublish(0x36, [...str('t'), 0, 1]), false)).reasonCode).toBe(MALFORMED);
  });

  it('refuses DUP at QoS 0 as malformed', () => {
    expect(frameError(() => decode(rawPublish(0x38, [...str('t'), 0x70]), false)).reasonCode).toBe(MALFORMED);
  });

  it.each([
    { qos: 1, first: 0x32 },
    { qos: 2, first: 0x34 },
  ])('refuses packet identifier 0 at QoS $qos as malformed', ({ first }) => {
    expect(frameError(() => decode(rawPublish(first, [...str('t'), 0, 0, 0x70]), false)).reasonCode).toBe(MALFORMED);
  });

  it.each([
    { what: 'no topic length', first: 0x30, body: [], v5: false },
    { what: 'half a topic length', first: 0x30, body: [0x00], v5: false },
    { what: 'a topic shorter than its length', first: 0x30, body: [0x00, 0x05, 0x61, 0x62], v5: false },
    { what: 'no packet identifier at QoS 1', first: 0x32, body: str('t'), v5: false },
    { what: 'half a packet identifier at QoS 2', first: 0x34, body: [...str('t'), 0x00], v5: false },
    { what: 'no property length in v5', first: 0x30, body: str('t'), v5: true },
    { what: 'a property length beyond the packet', first: 0x30, body: [...str('t'), 0x05, 0x01, 0x01], v5: true },
    { what: 'a property length of five varint bytes', first: 0x30, body: [...str('t'), 0xff, 0xff, 0xff, 0xff, 0x01], v5: true },
    { what: 'a message expiry interval of two bytes', first: 0x30, body: [...str('t'), 0x03, 0x02, 0x00, 0x00, 0x70, 0x70], v5: true },
    { what: 'a payload format indicator without its byte', first: 0x30, body: [...str('t'), 0x01, 0x01], v5: true },
    { what: 'a topic alias of one byte', first: 0x30, body: [...str('t'), 0x02, 0x23, 0x00, 0x70, 0x70], v5: true },
    { what: 'a content type shorter than its length', first: 0x30, body: [...str('t'), 0x04, 0x03, 0x00, 0x05, 0x61, 0x70], v5: true },
    { what: 'correlation data shorter than its length', first: 0x30, body: [...str('t'), 0x04, 0x09, 0x00, 0x03, 0x61], v5: true },
    { what: 'a user property without its value', first: 0x30, body: [...str('t'), 0x04, 0x26, ...str('k')], v5: true },
    { what: 'a user property value shorter than its length', first: 0x30, body: [...str('t'), 0x07, 0x26, ...str('k'), 0x00, 0x09, 0x61], v5: true },
  ])('refuses $what as malformed', ({ first, body, v5 }) => {
    expect(frameError(() => decode(rawPublish(first, body), v5)).reasonCode).toBe(MALFORMED);
  });

  it.each([
    { id: '0x00', props: [0x00] },
    { id: '0x11 (session expiry, not a PUBLISH property)', props: [0x11, 0, 0, 0, 1] },
    { id: '0x7f', props: [0x7f, 0x00] },
  ])('refuses unknown property $id as malformed', ({ props }) => {
    expect(frameError(() => decode(withProperties(props), true)).reasonCode).toBe(MALFORMED);
  });

  it.each([
    { name: 'payload format indicator', one: [0x01, 0x01] },
    { name: 'message expiry interval', one: [0x02, 0, 0, 0, 5] },
    { name: 'content type', one: [0x03, ...str('a')] },
    { name: 'response topic', one: [0x08, ...str('r')] },
    { name: 'correlation data', one: [0x09, ...str('c')] },
    { name: 'topic alias', one: [0x23, 0, 1] },
  ])('refuses a $name given twice as a protocol error (0x82)', ({ one }) => {
    expect(frameError(() => decode(withProperties([...one, ...one]), true)).reasonCode).toBe(PROTOCOL_ERROR);
  });
});
