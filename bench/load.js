// Load-generating MQTT clients on raw `net` sockets + the `mqtt-packet` codec. MQTT.js adds
// per-message promises, stores and timers that cost more than the brokers under test (see
// README), so the hot paths here are hand-rolled on purpose: PUBLISH packets are stamped
// into a pre-generated template, and acks are batched per received chunk.
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import mqtt from 'mqtt-packet';
import { withTimeout } from './stats.js';

/** Bytes at the start of every bench payload: float64 send time (performance.now(), ms),
 *  uint16 publisher index, uint32 sequence number. The rest is padding. */
export const PAYLOAD_HEADER_BYTES = 14;
const PROTOCOL_VERSION = 4; // MQTT 3.1.1: the version both brokers support fully
const CLOSE_TIMEOUT_MS = 5_000;

/**
 * Connects one client over TCP (or TLS, given `tls`: node:tls connect options such as `ca`)
 * and resolves after a successful CONNACK.
 * @param {number} port broker port on 127.0.0.1
 * @param {{ clientId: string, keepalive?: number, timeoutMs?: number, tls?: import('node:tls').ConnectionOptions }} options
 * @returns {Promise<RawClient>}
 */
export async function connectClient(port, { clientId, keepalive = 0, timeoutMs = 10_000, tls: tlsOptions }) {
  // A TLS socket queues the CONNECT written below until its handshake is done.
  const socket = tlsOptions ? tls.connect({ port, host: '127.0.0.1', noDelay: true, ...tlsOptions }) : net.connect({ port, host: '127.0.0.1', noDelay: true });
  const client = new RawClient(socket);
  const connack = client.next('connack');
  client.socket.write(mqtt.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: PROTOCOL_VERSION, clientId, clean: true, keepalive }));
  try {
    const packet = await withTimeout(connack, timeoutMs, `CONNECT of ${clientId}`);
    if (packet.returnCode !== 0) throw new Error(`broker refused ${clientId}: CONNACK return code ${packet.returnCode}`);
  } catch (err) {
    client.socket.destroy();
    throw err;
  }
  return client;
}

/** One MQTT connection: a socket, a parser and a tiny dispatcher. */
export class RawClient {
  /** @param {net.Socket} socket */
  constructor(socket) {
    this.socket = socket;
    this.parser = mqtt.parser({ protocolVersion: PROTOCOL_VERSION });
    /** Called for every PUBLISH from the broker (hot path). */
    this.onPublish = undefined;
    /** Called with the packet id of every PUBACK (hot path). */
    this.onPuback = undefined;
    /** Called after each received chunk has been parsed, to flush batched replies. */
    this.afterChunk = undefined;
    this.closed = false;
    this.error = undefined;
    this.waiters = [];
    this.parser.on('packet', (packet) => this.dispatch(packet));
    this.parser.on('error', (err) => this.fail(new Error(`malformed packet from broker: ${err.message}`)));
    socket.on('data', (chunk) => {
      this.parser.parse(chunk);
      if (this.afterChunk) this.afterChunk();
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => {
      this.closed = true;
      this.fail(new Error('connection closed by broker'));
    });
  }

  dispatch(packet) {
    switch (packet.cmd) {
      case 'publish':
        this.onPublish?.(packet);
        return;
      case 'puback':
        this.onPuback?.(packet.messageId);
        return;
      default: {
        const i = this.waiters.findIndex((w) => w.cmd === packet.cmd);
        if (i >= 0) this.waiters.splice(i, 1)[0].resolve(packet);
      }
    }
  }

  fail(err) {
    this.error ??= err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  /** Resolves with the next packet of type `cmd` (for control packets, not PUBLISH/PUBACK). */
  next(cmd) {
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => this.waiters.push({ cmd, resolve, reject }));
  }

  /** SUBSCRIBE to one filter; resolves with the granted QoS. */
  async subscribe(filter, qos, timeoutMs = 10_000) {
    const suback = this.next('suback');
    this.socket.write(mqtt.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] }));
    const packet = await withTimeout(suback, timeoutMs, `SUBSCRIBE ${filter}`);
    const granted = packet.granted[0];
    if (granted !== qos) throw new Error(`broker granted QoS ${granted} for ${filter}, asked ${qos}`);
    return granted;
  }

  /** DISCONNECT, then wait for the broker to close; resets the socket if it does not. */
  async close() {
    await closeSocket(this.socket);
  }
}

/**
 * Sends DISCONNECT and waits for the broker to close the TCP connection (so the TIME_WAIT
 * lands on the broker side and does not eat the bench's ephemeral ports); resets it after
 * a bounded wait.
 * @param {net.Socket} socket
 */
export async function closeSocket(socket) {
  if (socket.destroyed) return;
  const closed = new Promise((resolve) => socket.once('close', resolve));
  socket.write(DISCONNECT);
  try {
    await withTimeout(closed, CLOSE_TIMEOUT_MS, 'DISCONNECT');
  } catch {
    socket.resetAndDestroy();
  }
}

const DISCONNECT = Buffer.from([0xe0, 0x00]);

/**
 * Publishes bench messages on one client. Every PUBLISH is stamped into a copy of a
 * pre-generated packet (hot path: no mqtt-packet generate per message).
 */
export class Publisher {
  /**
   * @param {RawClient} client
   * `format` replaces the binary payload: `template` (the payload bytes) and
   * `stamp(buf, payloadOffset, now, index, seq)`, which writes one message's fields.
   * @param {{ index: number, topic: string, qos: 0 | 1, payloadBytes: number, window?: number,
   *   format?: { template: Buffer, stamp: (buf: Buffer, p: number, now: number, index: number, seq: number) => void } }} options
   */
  constructor(client, { index, topic, qos, payloadBytes, window = 100, format }) {
    if (!format && payloadBytes < PAYLOAD_HEADER_BYTES) throw new Error(`payloadBytes must be at least ${PAYLOAD_HEADER_BYTES}, got ${payloadBytes}`);
    this.client = client;
    this.index = index;
    this.qos = qos;
    this.window = window;
    this.stamp = format?.stamp;
    const payload = format ? format.template : Buffer.alloc(payloadBytes);
    this.template = mqtt.generate({ cmd: 'publish', topic, payload, qos, messageId: qos ? 1 : undefined, retain: false, dup: false });
    this.payloadOffset = this.template.length - payload.length;
    this.idOffset = this.payloadOffset - 2; // MQTT 3.1.1: packet id sits right before the payload
    this.seq = 0;
    this.nextId = 0;
    this.inflight = 0;
    this.inflightIds = new Uint8Array(65536);
    // QoS 1: when each packet id was sent, for publish → PUBACK latency (recordAcks()).
    this.sentAt = qos ? new Float64Array(65536) : undefined;
    this.ackLatencies = undefined;
    this.ackCount = 0;
    this.acked = 0;
    this.strayAcks = 0;
    this.onAckFreed = undefined;
    client.onPuback = (id) => {
      if (this.inflightIds[id] === 0) {
        this.strayAcks++;
        return;
      }
      this.inflightIds[id] = 0;
      this.inflight--;
      this.acked++;
      if (this.ackLatencies !== undefined && this.ackCount < this.ackLatencies.length) {
        this.ackLatencies[this.ackCount++] = performance.now() - this.sentAt[id];
      }
    };
    client.afterChunk = () => this.onAckFreed?.();
  }

  /**
   * Writes `count` PUBLISH packets in one buffer, all stamped with the current time.
   * For QoS 1 the caller keeps count ≤ window - inflight.
   * @returns {boolean} the socket's write() result (false = wait for 'drain')
   */
  send(count) {
    const len = this.template.length;
    const buf = Buffer.allocUnsafe(len * count);
    const now = performance.now();
    for (let i = 0, off = 0; i < count; i++, off += len) {
      this.template.copy(buf, off);
      const p = off + this.payloadOffset;
      if (this.stamp !== undefined) this.stamp(buf, p, now, this.index, this.seq++);
      else {
        buf.writeDoubleLE(now, p);
        buf.writeUInt16LE(this.index, p + 8);
        buf.writeUInt32LE(this.seq++, p + 10);
      }
      if (this.qos) {
        this.nextId = (this.nextId % 65535) + 1;
        if (this.inflightIds[this.nextId] !== 0) throw new Error(`packet id ${this.nextId} still in flight: more than 65535 unacked`);
        this.inflightIds[this.nextId] = 1;
        this.sentAt[this.nextId] = now;
        this.inflight++;
        buf.writeUInt16BE(this.nextId, off + this.idOffset);
      }
    }
    return this.client.socket.write(buf);
  }

  /** Starts a new sequence (after warm-up), so the subscriber's order check restarts at 0. */
  resetSequence() {
    this.seq = 0;
  }

  /** QoS 1: from now on, records publish → PUBACK latency of up to `capacity` messages (ackSamples()). */
  recordAcks(capacity) {
    if (!this.sentAt) throw new Error('PUBACK latency needs a QoS 1 publisher');
    this.ackLatencies = new Float64Array(capacity);
    this.ackCount = 0;
  }

  /** Publish → PUBACK latencies recorded since recordAcks(), in ms. */
  ackSamples() {
    return { values: this.ackLatencies ?? new Float64Array(0), count: this.ackCount };
  }

  /**
   * Sends `count` messages as fast as the broker takes them: QoS 0 paced by TCP
   * back-pressure, QoS 1 by a window of at most `window` unacked messages.
   * @param {number} count
   * @param {{ batch?: number, stopped: () => boolean }} control
   * @returns {Promise<void>} resolves when all are written (QoS 0) or all acked (QoS 1)
   */
  flood(count, { batch = 64, stopped }) {
    if (this.qos === 0) return this.floodQos0(count, batch, stopped);
    return this.floodQos1(count, stopped);
  }

  async floodQos0(count, batch, stopped) {
    const socket = this.client.socket;
    let left = count;
    while (left > 0 && !stopped()) {
      if (this.client.error) throw this.client.error;
      const n = Math.min(batch, left);
      left -= n;
      if (!this.send(n)) await new Promise((resolve) => socket.once('drain', resolve));
      // Yield every batch so the subscriber in this same process keeps reading.
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  floodQos1(count, stopped) {
    return new Promise((resolve, reject) => {
      let left = count;
      const target = this.acked + count;
      const pump = () => {
        if (this.client.error) return reject(this.client.error);
        if (this.acked >= target || stopped()) {
          this.onAckFreed = undefined;
          return resolve();
        }
        const n = Math.min(this.window - this.inflight, left);
        if (n > 0) {
          left -= n;
          this.send(n);
        }
      };
      this.onAckFreed = pump;
      this.client.socket.once('close', () => pump());
      pump();
    });
  }
}

/**
 * Receives bench messages: counts them, checks per-publisher order, records latency, and
 * acks QoS 1 deliveries in one write per received chunk.
 */
export class Subscriber {
  /**
   * @param {RawClient} client
   * `decode(packet, out)` replaces the binary payload reader: it fills `out` with [sent at
   * (performance.now() time), publisher, sequence] and returns false for a message that is
   * not what was expected (counted as `invalid`).
   * @param {{ publishers: number, capacity: number, decode?: (packet: object, out: Float64Array) => boolean }} options
   *   capacity = most samples kept
   */
  constructor(client, { publishers, capacity, decode }) {
    this.client = client;
    this.decode = decode;
    this.decoded = new Float64Array(3);
    this.latencies = new Float64Array(capacity);
    this.lastSeq = new Int32Array(publishers);
    this.pendingAcks = [];
    this.reset(Infinity);
    client.onPublish = (packet) => this.receive(packet);
    client.afterChunk = () => this.flushAcks();
  }

  /** Forgets everything received so far; `done` resolves once `expected` more arrive. */
  reset(expected) {
    this.expected = expected;
    this.received = 0;
    this.outOfOrder = 0;
    this.gaps = 0;
    this.invalid = 0;
    this.maxGapMs = 0;
    this.firstAt = 0;
    this.lastAt = 0;
    this.lastSeq.fill(-1);
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  receive(packet) {
    const now = performance.now();
    let latency;
    let pub;
    let seq;
    if (this.decode === undefined) {
      const p = packet.payload;
      latency = now - p.readDoubleLE(0);
      pub = p.readUInt16LE(8);
      seq = p.readUInt32LE(10);
    } else {
      const d = this.decoded;
      if (!this.decode(packet, d) || !(d[1] >= 0 && d[1] < this.lastSeq.length)) {
        // Counted and acked, never taken for a delivered bench message.
        this.invalid++;
        if (packet.qos === 1) this.pendingAcks.push(packet.messageId);
        return;
      }
      latency = now - d[0];
      pub = d[1];
      seq = d[2];
    }
    const last = this.lastSeq[pub];
    if (seq <= last) this.outOfOrder++;
    else {
      if (seq !== last + 1) this.gaps++;
      this.lastSeq[pub] = seq;
    }
    if (this.received < this.latencies.length) this.latencies[this.received] = latency;
    if (this.received === 0) this.firstAt = now;
    else if (now - this.lastAt > this.maxGapMs) this.maxGapMs = now - this.lastAt;
    this.lastAt = now;
    this.received++;
    if (packet.qos === 1) this.pendingAcks.push(packet.messageId);
    if (this.received === this.expected) this.resolveDone();
  }

  flushAcks() {
    const ids = this.pendingAcks;
    if (ids.length === 0) return;
    const buf = Buffer.allocUnsafe(4 * ids.length);
    for (let i = 0; i < ids.length; i++) {
      buf[4 * i] = 0x40;
      buf[4 * i + 1] = 0x02;
      buf.writeUInt16BE(ids[i], 4 * i + 2);
    }
    ids.length = 0;
    this.client.socket.write(buf);
  }

  /** Samples recorded since the last reset (a view, valid until the next reset). */
  samples() {
    return { values: this.latencies, count: Math.min(this.received, this.latencies.length) };
  }
}

/**
 * Opens one bare connection (CONNECT/CONNACK, nothing else) with no parser attached, for the
 * phases where the bench itself holds 10,000 sockets; `credentials` ({ username, password })
 * go into the CONNECT when given.
 * @returns {Promise<net.Socket>}
 */
export function openIdleConnection(port, clientId, keepalive, timeoutMs, credentials = {}) {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  const connect = mqtt.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: PROTOCOL_VERSION, clientId, clean: true, keepalive, ...credentials });
  const connack = new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    const onData = (chunk) => {
      got = Buffer.concat([got, chunk]);
      if (got.length < 4) return;
      socket.off('data', onData);
      // MQTT 3.1.1 CONNACK: 0x20 0x02 <session present> <return code>
      if (got[0] !== 0x20 || got[3] !== 0) reject(new Error(`unexpected CONNACK for ${clientId}: ${got.subarray(0, 4).toString('hex')}`));
      else resolve(socket);
      socket.resume(); // keep draining anything else the broker sends
    };
    socket.on('data', onData);
    socket.on('error', reject); // also keeps a later reset from becoming an uncaught error
    socket.once('close', () => reject(new Error(`connection of ${clientId} closed before CONNACK`)));
    socket.write(connect);
  });
  return withTimeout(connack, timeoutMs, `CONNECT of ${clientId}`).catch((err) => {
    socket.destroy();
    throw err;
  });
}
