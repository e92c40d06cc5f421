/**
 * A fast encoder for the one packet the broker sends most: PUBLISH without MQTT 5
 * properties. It writes the fixed and variable header into one buffer and leaves the
 * payload as it is (the caller writes both under one cork, so they leave in one writev),
 * instead of mqtt-packet's generate(), which builds and joins a buffer per field. Packets
 * with properties still go through mqtt-packet.
 */

/** Bytes needed for `n` as an MQTT variable byte integer [MQTT-1.5.5]. */
export function varintLength(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/** Writes `n` as an MQTT variable byte integer into `buf` at `o`; returns the offset after it. */
export function writeVarint(buf: Buffer, o: number, n: number): number {
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    buf[o++] = byte;
  } while (n > 0);
  return o;
}

/**
 * The header of a PUBLISH (everything before the payload). `v5` adds an empty property
 * list. Returns the header and the total packet size.
 */
export function encodePublishHeader(
  topic: string,
  qos: number,
  retain: boolean,
  dup: boolean,
  packetId: number,
  payloadLength: number,
  v5: boolean,
): { header: Buffer; size: number } {
  const topicLength = Buffer.byteLength(topic);
  const remaining = 2 + topicLength + (qos > 0 ? 2 : 0) + (v5 ? 1 : 0) + payloadLength;
  const headerLength = 1 + varintLength(remaining) + remaining - payloadLength;
  const header = Buffer.allocUnsafe(headerLength);
  let o = 0;
  header[o++] = 0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0);
  o = writeVarint(header, o, remaining);
  header[o++] = topicLength >> 8;
  header[o++] = topicLength & 0xff;
  o += header.write(topic, o, 'utf8');
  if (qos > 0) {
    header[o++] = packetId >> 8;
    header[o++] = packetId & 0xff;
  }
  if (v5) header[o++] = 0; // property length 0
  return { header, size: headerLength + payloadLength };
}
