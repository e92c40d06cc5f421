import { Writable, type Readable } from 'node:stream';
import type { MqttClient } from 'mqtt';
import { FrameError, PacketFramer } from '../broker/framing.js';

/** MQTT packet types of the acknowledgements the bridge's sender answers for [MQTT-2.1.2]. */
export const PUBACK = 4;
export const PUBREC = 5;
export const PUBCOMP = 7;
export type AckType = typeof PUBACK | typeof PUBREC | typeof PUBCOMP;

/** Their first bytes: PUBACK, PUBREC and PUBCOMP carry no flags [MQTT-2.2.2-1]. */
const PUBACK_BYTE = PUBACK << 4;
const PUBREC_BYTE = PUBREC << 4;
const PUBCOMP_BYTE = PUBCOMP << 4;

/**
 * No limit of our own on what the remote sends: a packet larger than MQTT.js accepts is
 * MQTT.js's to refuse, as without the filter (the 4-byte Remaining Length bounds any packet
 * at 256 MB [MQTT-1.5.5]).
 */
const NO_SIZE_LIMIT = Infinity;

/** Where the acknowledgements taken out of the remote's byte stream go. */
export interface AckSink {
  /**
   * One PUBACK, PUBREC or PUBCOMP for an identifier from `firstId` up, in the order read.
   * `reasonCode` is 0 when the packet has none (MQTT 3.1.1, and MQTT 5 success
   * [MQTT-3.4.2.1]); properties (a reason string) are skipped.
   */
  onAck(type: AckType, id: number, reasonCode: number): void;
  /** The remote sent bytes that are not MQTT packets; the connection is closed right after [MQTT-4.8.0-1]. */
  onMalformed(reason: string): void;
}

/**
 * Stands between the remote's socket and MQTT.js's packet parser: splits what the remote
 * sends into packets, hands every PUBACK / PUBREC / PUBCOMP whose packet identifier is
 * `firstId` or more to `sink`, and writes every other byte to `dest` (MQTT.js) unchanged and
 * in order, contiguous packets as one view of the received chunk (no copy).
 *
 * Written for speed on purpose: under load the remote sends one acknowledgement per message
 * forwarded, and MQTT.js's path for each (its writable, mqtt-packet's parser, a packet
 * object, its handlers and debug calls, an event) cost more than forwarding the message.
 * Acknowledgements are handled as they are read, before earlier packets of the same chunk
 * reach MQTT.js: the two never share a packet identifier, so neither's state depends on the
 * other's order.
 */
export class AckFilter extends Writable {
  private readonly framer = new PacketFramer(NO_SIZE_LIMIT);
  /** Runs of bytes for MQTT.js read from the current chunk; the last may still grow. */
  private readonly runs: Buffer[] = [];
  /** The run being extended: its first byte's offset in `runBuffer` and its length. */
  private runBuffer: ArrayBufferLike | undefined;
  private runStart = 0;
  private runLength = 0;
  private acksInChunk = 0;
  private malformed = false;

  constructor(
    /** The remote's stream: closed when what it sends cannot be framed. */
    private readonly source: Readable,
    /** MQTT.js's side: gets every byte that is not a diverted acknowledgement. */
    private readonly dest: NodeJS.WritableStream,
    private readonly firstId: number,
    private readonly sink: AckSink,
    /** Called once after a chunk that held at least one diverted acknowledgement. */
    private readonly onAcksRead: () => void = () => undefined,
  ) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    if (this.malformed) {
      done();
      return;
    }
    try {
      this.framer.push(chunk, this.onFrame);
    } catch (err) {
      if (!(err instanceof FrameError)) throw err;
      this.malformed = true;
      this.runs.length = 0;
      this.runBuffer = undefined;
      this.sink.onMalformed(err.message);
      this.source.destroy();
      done();
      return;
    }
    this.closeRun();
    if (this.acksInChunk > 0) {
      this.acksInChunk = 0;
      this.onAcksRead();
    }
    const runs = this.runs;
    if (runs.length === 0) {
      done();
      return;
    }
    // The same backpressure as piping the socket into MQTT.js: take the next chunk only once
    // MQTT.js has room (it holds back while a remote message waits for its local commit).
    let room = true;
    for (let i = 0; i < runs.length; i++) room = this.dest.write(runs[i]!);
    runs.length = 0;
    if (room) done();
    else this.dest.once('drain', () => done());
  }

  override _final(done: (err?: Error | null) => void): void {
    this.dest.end();
    done();
  }

  /** Bound once, not a closure per chunk. */
  private readonly onFrame = (frame: Buffer, headerLength: number): boolean => {
    const first = frame[0]!;
    if ((first === PUBACK_BYTE || first === PUBREC_BYTE || first === PUBCOMP_BYTE) && frame.length - headerLength >= 2) {
      const id = (frame[headerLength]! << 8) | frame[headerLength + 1]!;
      if (id >= this.firstId) {
        // MQTT 5: a Reason Code follows when the length says so, then properties [MQTT-3.4.2.1].
        const reasonCode = frame.length - headerLength >= 3 ? frame[headerLength + 2]! : 0;
        this.acksInChunk++;
        this.sink.onAck((first >> 4) as AckType, id, reasonCode);
        return true;
      }
    }
    // A packet right after the previous one kept (no acknowledgement between) extends its run.
    if (this.runBuffer === frame.buffer && this.runStart + this.runLength === frame.byteOffset) {
      this.runLength += frame.length;
    } else {
      this.closeRun();
      this.runBuffer = frame.buffer;
      this.runStart = frame.byteOffset;
      this.runLength = frame.length;
    }
    return true;
  };

  private closeRun(): void {
    if (this.runBuffer === undefined) return;
    this.runs.push(Buffer.from(this.runBuffer, this.runStart, this.runLength));
    this.runBuffer = undefined;
  }
}

/** What {@link divertAcks} reaches into: MQTT.js's stream factory, private in its types. */
interface ClientInternals {
  streamBuilder: (client: MqttClient) => Readable;
}

/**
 * Share of the keepalive interval the PINGREQ timer may lag behind the last acknowledgement:
 * rescheduling it (a timer cleared and set) on every chunk read cost more than the rest of
 * the filter, so it is done at most once per quarter keepalive.
 */
const RESCHEDULE_EVERY_KEEPALIVE_FRACTION = 0.25;

/**
 * Makes `client` (created with `manualConnect: true`, not connected yet) read the remote
 * through an {@link AckFilter}: acknowledgements for identifiers from `firstId` up go to
 * `sink` and never reach MQTT.js; everything else does, as before. Call `client.connect()`
 * afterwards; it holds for that connection (signalbox makes a new client per connection).
 *
 * MQTT.js reads its connection with `stream.pipe(parserInput)` right after its stream
 * builder made the stream, for every URL scheme; so the builder is wrapped to give that one
 * stream a `pipe` that puts the filter in between. Writes, errors, close and destroy stay on
 * the stream itself.
 *
 * MQTT.js's keepalive counts acknowledgements as traffic: its handlers reschedule the
 * PINGREQ timer (sent after a keepalive without any) on each. The filter reschedules it too,
 * at most once per quarter keepalive (`now` is the injected clock's), so a connection busy
 * with acknowledgements only is not pinged, and one that falls silent is pinged at the
 * latest a keepalive after its last acknowledgement, as before (at the earliest three
 * quarters of one).
 */
export function divertAcks(client: MqttClient, firstId: number, sink: AckSink, now: () => number): void {
  const internals = client as unknown as ClientInternals;
  const build = internals.streamBuilder;
  let nextRescheduleAt = -Infinity;
  const onAcksRead = () => {
    const t = now();
    if (t < nextRescheduleAt) return;
    nextRescheduleAt = t + client.keepalive * 1000 * RESCHEDULE_EVERY_KEEPALIVE_FRACTION;
    client.reschedulePing();
  };
  internals.streamBuilder = (c) => {
    const stream = build(c);
    const pipe = stream.pipe;
    stream.pipe = function <T extends NodeJS.WritableStream>(dest: T, options?: { end?: boolean }): T {
      pipe.call(stream, new AckFilter(stream, dest, firstId, sink, onAcksRead), options);
      return dest;
    };
    return stream;
  };
}
