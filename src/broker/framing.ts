/** A framing failure; `reasonCode` is the MQTT 5 reason to send before closing. */
export class FrameError extends Error {
  constructor(
    message: string,
    readonly reasonCode: number,
  ) {
    super(message);
  }
}

const MALFORMED = 0x81;
const TOO_LARGE = 0x95;

/**
 * [MQTT-2.2.2-1, MQTT-2.2.2-2] the fixed header's flag bits are fixed for every packet type
 * but PUBLISH; reserved type 0 is never valid. Checked on the first byte, so garbage (an HTTP
 * request, say) is refused at once instead of waiting for a body that never comes.
 */
function validFirstByte(byte: number): boolean {
  const type = byte >> 4;
  const flags = byte & 0x0f;
  if (type === 0) return false;
  if (type === 3) return true;
  if (type === 6 || type === 8 || type === 10) return flags === 0x02;
  return flags === 0;
}

/**
 * Splits a byte stream into MQTT packets. The fixed header is read first, so a packet
 * announcing more than `maxPacketSize` is refused before any of its body is buffered
 * [MQTT-3.1.2-24 for the server side]. Complete packets are handed on as views of the
 * received chunk (no copy); only a packet split across chunks is joined.
 */
export class PacketFramer {
  /** Bytes of an incomplete packet, kept until the rest arrives. */
  private parts: Buffer[] = [];
  private partsLength = 0;
  /** Total size of the incomplete packet once its header was read; -1 while unknown. */
  private need = -1;

  constructor(private readonly maxPacketSize: number) {}

  /**
   * Adds received bytes and calls `onFrame(frame, headerLength)` for every complete packet,
   * in order. Stops early when `onFrame` returns false (the connection closed). Throws a
   * FrameError for a malformed length or an oversized packet.
   */
  push(chunk: Buffer, onFrame: (frame: Buffer, headerLength: number) => boolean): void {
    let buf: Buffer;
    if (this.partsLength > 0) {
      this.parts.push(chunk);
      this.partsLength += chunk.length;
      if (this.need !== -1 && this.partsLength < this.need) return; // still waiting for the body
      buf = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.partsLength);
      this.parts = [];
      this.partsLength = 0;
    } else {
      buf = chunk;
    }
    this.need = -1;
    let offset = 0;
    const end = buf.length;
    while (end - offset >= 1) {
      if (!validFirstByte(buf[offset]!)) throw new FrameError(`invalid packet type or flags 0x${buf[offset]!.toString(16)}`, MALFORMED);
      if (end - offset < 2) break;
      // Remaining Length: a variable byte integer of at most 4 bytes [MQTT-1.5.5].
      let remaining = 0;
      let multiplier = 1;
      let i = offset + 1;
      let complete = false;
      for (let n = 0; n < 4 && i < end; n++, i++) {
        const byte = buf[i]!;
        remaining += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (i - offset - 1 >= 4) throw new FrameError('remaining length longer than 4 bytes', MALFORMED);
        break; // the length itself is split across chunks
      }
      const headerLength = i + 1 - offset;
      const total = headerLength + remaining;
      if (total > this.maxPacketSize) {
        throw new FrameError(`packet of ${total} bytes exceeds the maximum packet size ${this.maxPacketSize}`, TOO_LARGE);
      }
      if (end - offset < total) {
        this.need = total;
        break;
      }
      const frame = buf.subarray(offset, offset + total);
      offset += total;
      if (!onFrame(frame, headerLength)) return;
    }
    if (offset < end) {
      this.parts.push(offset === 0 ? buf : buf.subarray(offset));
      this.partsLength = end - offset;
    }
  }
}
