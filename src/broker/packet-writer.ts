import type { Duplex } from 'node:stream';

/** Bytes of the buffer one connection's successful acknowledgements are written into (256 of them). */
const ACK_BUFFER_BYTES = 1024;

/**
 * Writes one connection's packets to its stream, batched per tick: everything written in one
 * tick leaves in one writev (cork now, uncork on the next tick) instead of a system call per
 * packet, and the tick's successful acknowledgements (four fixed bytes each, one per QoS 1/2
 * PUBLISH in) are packed into one buffer rather than a stream write each. Anything else
 * written meanwhile flushes the acknowledgements first, so the order on the wire is the
 * order of the calls.
 */
export class PacketWriter {
  private corked = false;
  /** Acknowledgements written this tick, back to back: `acks[ackStart..ackEnd)`. */
  private acks: Buffer | undefined;
  private ackStart = 0;
  private ackEnd = 0;
  /** Bound once: releases the writes of this tick as one writev. */
  private readonly uncork = (): void => {
    this.corked = false;
    this.flush();
    this.stream.uncork();
  };

  constructor(private readonly stream: Duplex) {}

  /** Writes `buf`, then `payload` (not copied into it) when given. */
  write(buf: Buffer, payload?: Buffer): void {
    this.cork();
    this.flush();
    this.stream.write(buf);
    if (payload !== undefined) this.stream.write(payload);
  }

  /**
   * Writes a successful PUBACK, PUBREC, PUBREL or PUBCOMP: its first byte and packet id.
   * MQTT 5 lets the reason code be left out when it is Success [MQTT-3.4.2.1].
   */
  writeAck(first: number, id: number): void {
    this.cork();
    let acks = this.acks;
    if (acks === undefined || this.ackEnd + 4 > acks.length) {
      this.flush();
      // Written parts stay with the stream until sent; later acknowledgements go to a new buffer.
      acks = this.acks = Buffer.allocUnsafe(ACK_BUFFER_BYTES);
      this.ackStart = this.ackEnd = 0;
    }
    const o = this.ackEnd;
    acks[o] = first;
    acks[o + 1] = 2;
    acks[o + 2] = id >> 8;
    acks[o + 3] = id & 0xff;
    this.ackEnd = o + 4;
  }

  /** Hands the packed acknowledgements to the stream (before it is ended). */
  flush(): void {
    if (this.ackEnd === this.ackStart) return;
    this.stream.write(this.acks!.subarray(this.ackStart, this.ackEnd));
    this.ackStart = this.ackEnd;
  }

  private cork(): void {
    if (this.corked) return;
    this.corked = true;
    this.stream.cork();
    process.nextTick(this.uncork);
  }
}
