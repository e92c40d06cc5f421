import type { IPublishPacket, QoS, UserProperties } from 'mqtt-packet';
import { FrameError } from './framing.js';

const MALFORMED = 0x81;
const PROTOCOL_ERROR = 0x82;
// ignoreBOM: a leading U+FEFF is part of the string, never stripped [MQTT-1.5.4-3].
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

type PublishProperties = NonNullable<IPublishPacket['properties']>;

/**
 * Decodes a UTF-8 string field, refusing ill-formed UTF-8 and U+0000 [MQTT-1.5.4-1,
 * MQTT-1.5.4-2]. ASCII (nearly every topic) is checked byte by byte and decoded as latin1,
 * which is cheaper than a validating decode.
 */
function readString(buf: Buffer, start: number, end: number, what: string): string {
  let ascii = true;
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === 0) throw new FrameError(`${what} contains U+0000`, MALFORMED);
    if (b >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) return buf.toString('latin1', start, end);
  let text: string;
  try {
    text = utf8.decode(buf.subarray(start, end));
  } catch {
    throw new FrameError(`${what} is not valid UTF-8`, MALFORMED);
  }
  if (text.includes('\u0000')) throw new FrameError(`${what} contains U+0000`, MALFORMED);
  return text;
}

function need(o: number, n: number, end: number): void {
  if (o + n > end) throw new FrameError('PUBLISH is shorter than its fields', MALFORMED);
}

/**
 * Decodes a whole PUBLISH packet (fixed header included) straight from the received bytes:
 * the hot path of the broker, done without mqtt-packet's general parser. The payload is
 * copied out so a stored or queued message does not pin the socket's read buffer. Throws a
 * FrameError for anything malformed.
 */
export function decodePublish(frame: Buffer, headerLength: number, v5: boolean): IPublishPacket {
  const flags = frame[0]! & 0x0f;
  const qos = (flags >> 1) & 0x03;
  if (qos === 3) throw new FrameError('PUBLISH with QoS 3', MALFORMED); // [MQTT-3.3.1-4]
  const dup = (flags & 0x08) !== 0;
  if (dup && qos === 0) throw new FrameError('PUBLISH with DUP set at QoS 0', MALFORMED); // [MQTT-3.3.1-2]
  const end = frame.length;
  let o = headerLength;
  need(o, 2, end);
  const topicLength = frame.readUInt16BE(o);
  o += 2;
  need(o, topicLength, end);
  const topic = readString(frame, o, o + topicLength, 'topic');
  o += topicLength;
  let messageId: number | undefined;
  if (qos > 0) {
    need(o, 2, end);
    messageId = frame.readUInt16BE(o);
    o += 2;
    if (messageId === 0) throw new FrameError('PUBLISH with packet identifier 0', MALFORMED); // [MQTT-2.2.1-3]
  }
  let properties: PublishProperties | undefined;
  if (v5) {
    const { value: length, next } = readVarint(frame, o, end);
    o = next;
    need(o, length, end);
    if (length > 0) properties = readProperties(frame, o, o + length);
    o += length;
  }
  const payload = Buffer.allocUnsafe(end - o);
  frame.copy(payload, 0, o, end);
  const packet: IPublishPacket = { cmd: 'publish', topic, payload, qos: qos as QoS, dup, retain: (flags & 0x01) !== 0, messageId, length: end - headerLength };
  if (properties) packet.properties = properties;
  return packet;
}

function readVarint(buf: Buffer, start: number, end: number): { value: number; next: number } {
  let value = 0;
  let multiplier = 1;
  for (let i = start; i < end && i < start + 4; i++) {
    const byte = buf[i]!;
    value += (byte & 0x7f) * multiplier;
    multiplier *= 128;
    if ((byte & 0x80) === 0) return { value, next: i + 1 };
  }
  throw new FrameError('malformed variable byte integer', MALFORMED);
}

/** MQTT 5 PUBLISH properties (MQTT 5.0 section 3.3.2.3); anything else is malformed. */
function readProperties(buf: Buffer, start: number, end: number): PublishProperties {
  const p: PublishProperties = {};
  const seen = new Set<number>();
  let o = start;
  while (o < end) {
    const id = buf[o++]!;
    if (id !== 0x26 && id !== 0x0b) {
      // [MQTT-2.2.2-2] a property other than User Property appears at most once.
      if (seen.has(id)) throw new FrameError(`property 0x${id.toString(16)} given twice`, PROTOCOL_ERROR);
      seen.add(id);
    }
    switch (id) {
      case 0x01:
        need(o, 1, end);
        p.payloadFormatIndicator = buf[o++] === 1;
        break;
      case 0x02:
        need(o, 4, end);
        p.messageExpiryInterval = buf.readUInt32BE(o);
        o += 4;
        break;
      case 0x03:
      case 0x08: {
        need(o, 2, end);
        const n = buf.readUInt16BE(o);
        o += 2;
        need(o, n, end);
        const text = readString(buf, o, o + n, id === 0x03 ? 'content type' : 'response topic');
        if (id === 0x03) p.contentType = text;
        else p.responseTopic = text;
        o += n;
        break;
      }
      case 0x09: {
        need(o, 2, end);
        const n = buf.readUInt16BE(o);
        o += 2;
        need(o, n, end);
        p.correlationData = Buffer.from(buf.subarray(o, o + n));
        o += n;
        break;
      }
      case 0x0b: {
        const { value, next } = readVarint(buf, o, end);
        o = next;
        p.subscriptionIdentifier = value;
        break;
      }
      case 0x23:
        need(o, 2, end);
        p.topicAlias = buf.readUInt16BE(o);
        o += 2;
        break;
      case 0x26: {
        need(o, 2, end);
        const kn = buf.readUInt16BE(o);
        o += 2;
        need(o, kn, end);
        const key = readString(buf, o, o + kn, 'user property name');
        o += kn;
        need(o, 2, end);
        const vn = buf.readUInt16BE(o);
        o += 2;
        need(o, vn, end);
        const value = readString(buf, o, o + vn, 'user property value');
        o += vn;
        const up: UserProperties = (p.userProperties ??= Object.create(null) as UserProperties);
        const prev = up[key];
        up[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
        break;
      }
      default:
        throw new FrameError(`unknown PUBLISH property 0x${id.toString(16)}`, MALFORMED);
    }
  }
  return p;
}
