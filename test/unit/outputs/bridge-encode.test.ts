import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { encodePublishProperties, encodePubrel, publishSize, writePublish } from '../../../src/outputs/bridge-encode.js';

/** One whole PUBLISH, as the sender writes it. */
function encodePublish(topic: string, qos: number, retain: boolean, id: number, payload: Buffer, properties: Buffer | undefined): Buffer {
  const topicBytes = Buffer.byteLength(topic);
  const { remaining, size } = publishSize(topicBytes, qos, payload.length, properties);
  const buf = Buffer.alloc(size);
  expect(writePublish(buf, 0, topic, topicBytes, qos, retain, id, payload, properties, remaining)).toBe(size);
  return buf;
}

/** Parses one packet with mqtt-packet, the codec MQTT.js and Mosquitto-compatible clients trust. */
function parse(buf: Buffer, protocolVersion: 4 | 5): mqttPacket.Packet {
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: mqttPacket.Packet[] = [];
  parser.on('packet', (p) => packets.push(p));
  parser.on('error', (err) => {
    throw err;
  });
  parser.parse(buf);
  expect(packets).toHaveLength(1);
  return packets[0]!;
}

const text = fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\u0000') && !/[\uD800-\uDFFF]/.test(s));

describe('the bridge PUBLISH encoder', () => {
  it('encodes what mqtt-packet decodes back to the same topic, QoS, retain, id, payload and properties', () => {
    fc.assert(
      fc.property(
        text,
        fc.constantFrom(0, 1, 2),
        fc.boolean(),
        fc.integer({ min: 1, max: 65_535 }),
        fc.uint8Array({ maxLength: 300 }),
        fc.record(
          {
            payloadFormatIndicator: fc.boolean(),
            messageExpiryInterval: fc.integer({ min: 0, max: 0xffff_ffff }),
            contentType: text,
            responseTopic: text,
            correlationData: fc.uint8Array({ minLength: 1, maxLength: 16 }).map((a) => Buffer.from(a)),
            userProperties: fc.dictionary(text, fc.oneof(text, fc.array(text, { minLength: 1, maxLength: 3 }))),
          },
          { requiredKeys: [] },
        ),
        (topic, qos, retain, id, bytes, properties) => {
          const payload = Buffer.from(bytes);
          const props = encodePublishProperties(properties, 'hops');
          const packet = encodePublish(topic, qos, retain, id, payload, props);
          const p = parse(packet, 5) as mqttPacket.IPublishPacket;
          expect(p).toMatchObject({ cmd: 'publish', topic, qos, retain });
          if (qos > 0) expect(p.messageId).toBe(id);
          expect(Buffer.from(p.payload as Buffer).equals(payload)).toBe(true);
          const got = p.properties ?? {};
          for (const key of ['payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic'] as const) {
            expect(got[key]).toEqual(properties[key]);
          }
          if (properties.correlationData) expect(Buffer.from(got.correlationData!).equals(properties.correlationData)).toBe(true);
          const expected: Record<string, string | string[]> = {};
          for (const [k, v] of Object.entries(properties.userProperties ?? {})) if (k !== 'hops') expected[k] = Array.isArray(v) && v.length === 1 ? v[0]! : v;
          expected.hops = '1';
          expect(got.userProperties).toEqual(expected);
        },
      ),
      { numRuns: 300, seed: 7 },
    );
  });

  it('counts one more hop than the message carried', () => {
    const props = encodePublishProperties({ userProperties: { hops: '2', a: 'b' } }, 'hops');
    const p = parse(encodePublish('t', 1, false, 5, Buffer.alloc(0), props), 5) as mqttPacket.IPublishPacket;
    expect(p.properties?.userProperties).toEqual({ a: 'b', hops: '3' });
  });

  it('encodes an MQTT 3.1.1 PUBLISH without a property block', () => {
    const p = parse(encodePublish('a/b', 1, true, 4242, Buffer.from('xyz'), undefined), 4) as mqttPacket.IPublishPacket;
    expect(p).toMatchObject({ topic: 'a/b', qos: 1, retain: true, messageId: 4242 });
    expect(p.payload.toString()).toBe('xyz');
  });

  it('encodes PUBREL', () => {
    expect(parse(encodePubrel(300), 5)).toMatchObject({ cmd: 'pubrel', messageId: 300 });
  });
});
