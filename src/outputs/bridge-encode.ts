import { varintLength, writeVarint } from '../broker/encode.js';
import type { MessageProperties } from '../broker/types.js';

/**
 * PUBLISH encoding for the bridge's out direction, written for speed on purpose: the sender
 * sizes a pump's packets first, then writes them all into one buffer, instead of MQTT.js's
 * publish(), which deep-copies every packet for its store and makes about a dozen small
 * writes per PUBLISH.
 */

function writeString(buf: Buffer, o: number, s: string): number {
  const len = buf.write(s, o + 2, 'utf8');
  buf[o] = len >> 8;
  buf[o + 1] = len & 0xff;
  return o + 2 + len;
}

/** Identifiers of the MQTT 5 properties a PUBLISH carries between brokers [MQTT-3.3.2.3]. */
const PROP = {
  payloadFormatIndicator: 0x01,
  messageExpiryInterval: 0x02,
  contentType: 0x03,
  responseTopic: 0x08,
  correlationData: 0x09,
  userProperty: 0x26,
} as const;

/**
 * The property block of a PUBLISH (without its length prefix). With `hopsProperty`, that
 * user property is set to one more than the message had (0 when it had none): the bridge
 * hop count. Topic aliases and subscription identifiers belong to one connection and are
 * never forwarded.
 */
export function encodePublishProperties(properties: MessageProperties | undefined, hopsProperty?: string): Buffer {
  const pairs: (readonly [string, string])[] = [];
  let hops = 0;
  const up = properties?.userProperties;
  if (up) {
    for (const key of Object.keys(up)) {
      const value = up[key];
      if (key === hopsProperty) {
        hops = Number(Array.isArray(value) ? value[0] : value) || 0;
        continue;
      }
      if (Array.isArray(value)) for (const v of value) pairs.push([key, String(v)]);
      else if (value !== undefined) pairs.push([key, String(value)]);
    }
  }
  if (hopsProperty !== undefined) pairs.push([hopsProperty, String(hops + 1)]);
  let length = 0;
  if (properties?.payloadFormatIndicator !== undefined) length += 2;
  if (properties?.messageExpiryInterval !== undefined) length += 5;
  if (properties?.contentType !== undefined) length += 3 + Buffer.byteLength(properties.contentType);
  if (properties?.responseTopic !== undefined) length += 3 + Buffer.byteLength(properties.responseTopic);
  if (properties?.correlationData !== undefined) length += 3 + properties.correlationData.length;
  for (const [k, v] of pairs) length += 5 + Buffer.byteLength(k) + Buffer.byteLength(v);
  const buf = Buffer.allocUnsafe(length);
  let o = 0;
  if (properties?.payloadFormatIndicator !== undefined) {
    buf[o++] = PROP.payloadFormatIndicator;
    buf[o++] = properties.payloadFormatIndicator ? 1 : 0;
  }
  if (properties?.messageExpiryInterval !== undefined) {
    buf[o++] = PROP.messageExpiryInterval;
    buf.writeUInt32BE(properties.messageExpiryInterval >>> 0, o);
    o += 4;
  }
  if (properties?.contentType !== undefined) {
    buf[o++] = PROP.contentType;
    o = writeString(buf, o, properties.contentType);
  }
  if (properties?.responseTopic !== undefined) {
    buf[o++] = PROP.responseTopic;
    o = writeString(buf, o, properties.responseTopic);
  }
  if (properties?.correlationData !== undefined) {
    buf[o++] = PROP.correlationData;
    buf[o++] = properties.correlationData.length >> 8;
    buf[o++] = properties.correlationData.length & 0xff;
    o += properties.correlationData.copy(buf, o);
  }
  for (const [k, v] of pairs) {
    buf[o++] = PROP.userProperty;
    o = writeString(buf, o, k);
    o = writeString(buf, o, v);
  }
  return buf;
}

/** Bytes of a whole PUBLISH: `remaining` is its Remaining Length, `size` the packet. */
export function publishSize(topicBytes: number, qos: number, payloadLength: number, properties: Buffer | undefined): { remaining: number; size: number } {
  const propsLength = properties === undefined ? 0 : varintLength(properties.length) + properties.length;
  const remaining = 2 + topicBytes + (qos > 0 ? 2 : 0) + propsLength + payloadLength;
  return { remaining, size: 1 + varintLength(remaining) + remaining };
}

/**
 * Writes a whole PUBLISH into `buf` at `o`; returns the offset after it. `remaining` comes
 * from {@link publishSize}; `properties` is the MQTT 5 property block (see
 * {@link encodePublishProperties}), or undefined for MQTT 3.1.1.
 */
export function writePublish(
  buf: Buffer,
  o: number,
  topic: string,
  topicBytes: number,
  qos: number,
  retain: boolean,
  packetId: number,
  payload: Buffer,
  properties: Buffer | undefined,
  remaining: number,
): number {
  buf[o++] = 0x30 | (qos << 1) | (retain ? 0x01 : 0);
  o = writeVarint(buf, o, remaining);
  buf[o++] = topicBytes >> 8;
  buf[o++] = topicBytes & 0xff;
  o += buf.write(topic, o, 'utf8');
  if (qos > 0) {
    buf[o++] = packetId >> 8;
    buf[o++] = packetId & 0xff;
  }
  if (properties !== undefined) {
    o = writeVarint(buf, o, properties.length);
    o += properties.copy(buf, o);
  }
  return o + payload.copy(buf, o);
}

/** PUBREL for `packetId` (reason Success, which MQTT 5 lets us leave out) [MQTT-3.6.2]. */
export function encodePubrel(packetId: number): Buffer {
  return Buffer.from([0x62, 0x02, packetId >> 8, packetId & 0xff]);
}
