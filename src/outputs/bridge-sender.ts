import type { Writable } from 'node:stream';
import type { OutboxMessage } from './connector.js';
import { OutputError } from './connector.js';
import { PUBACK, PUBCOMP, PUBREC, type AckType } from './bridge-acks.js';
import { encodePublishProperties, encodePubrel, publishSize, writePublish } from './bridge-encode.js';

/**
 * Packet identifiers 1..MQTTJS_IDS are MQTT.js's (its few own publishes and subscribes, see
 * {@link mqttjsIdProvider}); the sender uses the rest, so the two never collide on one
 * connection.
 */
export const MQTTJS_IDS = 1023;
/** The sender's first packet identifier: acknowledgements from here up are the sender's. */
export const FIRST_ID = MQTTJS_IDS + 1;
const LAST_ID = 65_535;

/** MQTT 5 reason codes of a PUBACK/PUBREC that mean "try again later", not "never". */
const RETRYABLE_REASONS = new Set([0x89 /* server busy */, 0x97 /* quota exceeded */, 0x8b /* server shutting down */]);

/** MQTT.js's identifiers, cycling through 1..MQTTJS_IDS. One per client; it calls clear() on every CONNACK. */
export function mqttjsIdProvider(): { allocate(): number; getLastAllocated(): number | null; register(id: number): boolean; deallocate(id: number): void; clear(): void } {
  let next = 1;
  let last: number | null = null;
  return {
    allocate() {
      last = next;
      next = next >= MQTTJS_IDS ? 1 : next + 1;
      return last;
    },
    getLastAllocated: () => last,
    register: () => true,
    deallocate: () => undefined,
    clear: () => undefined,
  };
}

/** One call of `send`: settles when every message of it was acknowledged, or on the first failure. */
interface BatchState {
  remaining: number;
  settled: boolean;
  resolve: () => void;
  reject: (err: OutputError) => void;
}

interface Outgoing {
  readonly message: OutboxMessage;
  readonly batch: BatchState;
  /** QoS 2: PUBREC seen, PUBREL sent, waiting for PUBCOMP. */
  released: boolean;
  /** Set when it goes on the wire: packet id, and what encoding it needs. */
  id: number;
  topicBytes: number;
  properties: Buffer | undefined;
  remaining: number;
}

/** What the remote told us in CONNACK that limits what we send. */
export interface SenderLimits {
  /** Unacknowledged QoS 1/2 messages allowed at once (the remote's Receive Maximum, capped by ours). */
  readonly window: number;
  /** Largest packet the remote accepts (MQTT 5 Maximum Packet Size); Infinity when it set none. */
  readonly maxPacketSize: number;
}

/**
 * The bridge's out direction: writes outbox messages to the remote connection's socket as
 * PUBLISH packets and settles each batch when the remote acknowledged all of it (PUBACK, or
 * PUBCOMP for QoS 2; QoS 0 once handed to the socket). Keeps at most `window` unacknowledged
 * messages on the wire across batches, in order, so several batches stream back to back.
 *
 * QoS 2 identifiers in flight when a connection drops stay reserved: on a resumed session
 * they are released with PUBREL first [MQTT-4.4.0-1], so a new message never reuses an
 * identifier the remote still holds (which would make it discard the new message as a
 * duplicate).
 */
export class BridgeSender {
  private stream: Writable | undefined;
  private limits: SenderLimits = { window: 1, maxPacketSize: Infinity };
  private v5 = true;
  private readonly queue: Outgoing[] = [];
  private queueHead = 0;
  private readonly inflight = new Map<number, Outgoing>();
  /** QoS 2 identifiers from a dropped connection, to release with PUBREL on a resumed session. */
  private readonly reserved = new Set<number>();
  /** Identifiers being released (PUBREL sent on a resumed session, waiting for PUBCOMP). */
  private readonly releasing = new Set<number>();
  private nextId = FIRST_ID;

  /** The property block of a message without properties (MQTT 5): only the first hop. */
  private readonly plainProperties: Buffer;

  constructor(
    private readonly name: string,
    /** MQTT 5: the user property counting bridge hops, incremented on every message sent. */
    private readonly hopsProperty: string,
  ) {
    this.plainProperties = encodePublishProperties(undefined, hopsProperty);
  }

  /** A connection is up: send on `stream`. `sessionPresent` releases reserved QoS 2 identifiers. */
  attach(stream: Writable, limits: SenderLimits, v5: boolean, sessionPresent: boolean): void {
    this.stream = stream;
    this.limits = limits;
    this.v5 = v5;
    if (sessionPresent) {
      for (const id of this.reserved) {
        this.releasing.add(id);
        stream.write(encodePubrel(id));
      }
    }
    this.reserved.clear();
  }

  /** The connection dropped: every unsettled batch fails (retryable); the drain sends it again. */
  detach(reason: string): void {
    this.stream = undefined;
    for (const [id, out] of this.inflight) {
      if (out.message.qos === 2) this.reserved.add(id);
    }
    for (const id of this.releasing) this.reserved.add(id);
    this.releasing.clear();
    const err = new OutputError(`bridge "${this.name}" ${reason}`, { retryable: true });
    for (const out of this.inflight.values()) this.fail(out.batch, err);
    for (let i = this.queueHead; i < this.queue.length; i++) this.fail(this.queue[i]!.batch, err);
    this.inflight.clear();
    this.queue.length = 0;
    this.queueHead = 0;
  }

  /** Unacknowledged messages on the wire plus those waiting for room in the window. */
  get pending(): number {
    return this.inflight.size + this.queue.length - this.queueHead;
  }

  /** Sends `batch` in order after what is already queued; resolves when all of it is acknowledged. */
  send(batch: readonly OutboxMessage[]): Promise<void> {
    if (!this.stream) return Promise.reject(new OutputError(`bridge "${this.name}" is not connected`, { retryable: true }));
    return new Promise<void>((resolve, reject) => {
      const state: BatchState = { remaining: batch.length, settled: false, resolve, reject };
      for (const message of batch) this.queue.push({ message, batch: state, released: false, id: 0, topicBytes: 0, properties: undefined, remaining: 0 });
      if (batch.length === 0) resolve();
      this.schedulePump();
    });
  }

  /**
   * Handles a PUBACK, PUBREC or PUBCOMP from the remote (its reason code 0 when it had none);
   * false when it answers nothing the sender has in flight. Called per acknowledgement, as
   * the remote's bytes are read (see AckFilter): primitives only, no packet object.
   */
  onAck(type: AckType, id: number, reasonCode: number): boolean {
    if (id < FIRST_ID) return false;
    if (type === PUBCOMP && this.releasing.delete(id)) return true;
    const out = this.inflight.get(id);
    if (!out) return false;
    if (type === PUBREC && out.message.qos === 2 && !out.released) {
      if (reasonCode >= 0x80) return this.refused(id, out, reasonCode);
      out.released = true;
      this.stream?.write(encodePubrel(id));
      return true;
    }
    const expected = out.message.qos === 2 ? PUBCOMP : PUBACK;
    if (type !== expected) return false;
    if (reasonCode >= 0x80) return this.refused(id, out, reasonCode);
    this.inflight.delete(id);
    if (--out.batch.remaining === 0 && !out.batch.settled) {
      out.batch.settled = true;
      out.batch.resolve();
    }
    // Refill once half the window is free, not per acknowledgement: acks trickle in one per
    // socket read, and refilling each would cost a system call per message.
    if (this.inflight.size <= this.limits.window >> 1) this.schedulePump();
    return true;
  }

  private refused(id: number, out: Outgoing, code: number): boolean {
    this.inflight.delete(id);
    const retryable = RETRYABLE_REASONS.has(code);
    this.fail(out.batch, new OutputError(`bridge "${this.name}": the remote refused a message on ${out.message.topic} (reason 0x${code.toString(16)})`, { retryable, code: retryable ? undefined : 'SB_ERR_OUTPUT_REJECTED' }));
    this.schedulePump();
    return true;
  }

  private fail(batch: BatchState, err: OutputError): void {
    if (batch.settled) return;
    batch.settled = true;
    batch.reject(err);
  }

  private pumpScheduled = false;
  /** Bound once: runs the scheduled pump. */
  private readonly pumpNow = (): void => {
    this.pumpScheduled = false;
    this.pump();
  };

  /**
   * Pumps once, in the event loop's check phase: every acknowledgement read from the sockets
   * in this turn frees its slot first, and the messages that fill them leave in one write
   * instead of one system call each. Not sooner (a tick): the acknowledgements a commit
   * releases to local publishers go out first, and they are what paces the input.
   */
  private schedulePump(): void {
    if (this.pumpScheduled) return;
    this.pumpScheduled = true;
    setImmediate(this.pumpNow);
  }

  /** Moves queued messages onto the wire while the window has room; one write per message pair. */
  private pump(): void {
    const stream = this.stream;
    if (!stream) return;
    const window = this.limits.window;
    if (this.queueHead >= this.queue.length || this.inflight.size + this.releasing.size >= window) return;
    // One write per pump: every packet is encoded straight into one buffer (sizes first),
    // which costs less than a buffer per header and a writev of two chunks per message.
    const batch: Outgoing[] = [];
    let bytes = 0;
    while (this.queueHead < this.queue.length && this.inflight.size + this.releasing.size < window) {
      const out = this.queue[this.queueHead]!;
      this.queue[this.queueHead++] = undefined as unknown as Outgoing;
      if (out.batch.settled) continue; // its batch failed already: the drain sends it again
      const size = this.admit(out);
      if (size === 0) continue;
      batch.push(out);
      bytes += size;
    }
    if (batch.length > 0) {
      const buf = Buffer.allocUnsafe(bytes);
      let o = 0;
      for (let i = 0; i < batch.length; i++) {
        const out = batch[i]!;
        const m = out.message;
        o = writePublish(buf, o, m.topic, out.topicBytes, m.qos, m.retain, out.id, m.payload, out.properties, out.remaining);
        if (m.qos === 0 && --out.batch.remaining === 0 && !out.batch.settled) {
          // Handed to the socket in this pump: that is all QoS 0 promises.
          out.batch.settled = true;
          out.batch.resolve();
        }
      }
      stream.write(buf);
    }
    if (this.queueHead >= this.queue.length) {
      this.queue.length = 0;
      this.queueHead = 0;
    }
  }

  /**
   * Gives a message its packet id and its encoding; returns its size in bytes, or 0 when it
   * cannot be sent (its batch failed).
   */
  private admit(out: Outgoing): number {
    const m = out.message;
    const id = m.qos > 0 ? this.allocateId() : 0;
    if (id === undefined) {
      this.fail(out.batch, new OutputError(`bridge "${this.name}": no free packet identifier`, { retryable: true }));
      return 0;
    }
    const properties = !this.v5 ? undefined : m.properties === undefined ? this.plainProperties : encodePublishProperties(m.properties, this.hopsProperty);
    const topicBytes = Buffer.byteLength(m.topic);
    const { remaining, size } = publishSize(topicBytes, m.qos, m.payload.length, properties);
    if (size > this.limits.maxPacketSize) {
      // [MQTT-3.1.2-24] never send more than the remote's Maximum Packet Size: permanent for this message.
      this.fail(out.batch, new OutputError(`bridge "${this.name}": message on ${m.topic} is ${size} bytes, more than the remote's maximum packet size ${this.limits.maxPacketSize}`, { retryable: false, code: 'SB_ERR_OUTPUT_REJECTED' }));
      return 0;
    }
    out.id = id;
    out.topicBytes = topicBytes;
    out.properties = properties;
    out.remaining = remaining;
    if (m.qos > 0) this.inflight.set(id, out);
    return size;
  }

  private allocateId(): number | undefined {
    for (let n = FIRST_ID; n <= LAST_ID; n++) {
      const id = this.nextId;
      this.nextId = id >= LAST_ID ? FIRST_ID : id + 1;
      if (!this.inflight.has(id) && !this.reserved.has(id) && !this.releasing.has(id)) return id;
    }
    return undefined;
  }
}
