import net from 'node:net';
import { generate } from 'mqtt-packet';
import { afterEach, describe, expect, test } from 'vitest';
import { startBrokerProcess, type BrokerProcess, type BrokerSample } from '../helpers/broker-process.js';

// Slow consumers: a subscriber that stops reading must not hold up the others nor grow the
// broker's memory without bound. The broker runs alone in a child process (the built dist/)
// so its RSS is its own; the clients here are bare sockets that frame packets by hand, fast
// enough to take a million deliveries.

const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const MiB = 1024 * 1024;
const TOPIC = 'load/t';

async function brokerProcess(config: Parameters<typeof startBrokerProcess>[0]): Promise<BrokerProcess> {
  const b = await startBrokerProcess(config);
  cleanups.push(() => b.close());
  return b;
}

/**
 * Splits a byte stream into MQTT packets and calls `onPacket(buf, start, bodyStart, end)` for
 * each; whole packets are views of the chunk, only a packet split across chunks is joined.
 */
function framer(onPacket: (buf: Buffer, start: number, bodyStart: number, end: number) => void): (chunk: Buffer) => void {
  let rest: Buffer | undefined;
  return (chunk) => {
    const buf = rest ? Buffer.concat([rest, chunk]) : chunk;
    rest = undefined;
    let at = 0;
    while (at + 2 <= buf.length) {
      let length = 0;
      let multiplier = 1;
      let i = at + 1;
      let complete = false;
      for (; i < buf.length && i < at + 5; i++) {
        length += (buf[i]! & 0x7f) * multiplier;
        multiplier *= 128;
        if ((buf[i]! & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || i + 1 + length > buf.length) break;
      onPacket(buf, at, i + 1, i + 1 + length);
      at = i + 1 + length;
    }
    if (at < buf.length) rest = buf.subarray(at);
  };
}

interface Subscriber {
  readonly socket: net.Socket;
  /** PUBLISH packets received. */
  readonly received: number;
  /** The sequence numbers received, when recorded. */
  readonly seqs: number[];
  /** True while every message came in order, each one after the previous (no loss, no duplicate). */
  readonly inOrder: boolean;
  /** Resolves once `n` messages arrived; rejects after `within` ms. */
  until(n: number, within: number): Promise<void>;
}

/**
 * An MQTT 3.1.1 subscriber to `load/t` at `qos` on a bare socket: acknowledges QoS 1 at once,
 * counts messages and checks their sequence numbers (the first 4 payload bytes). With
 * `paused` it stops reading right after SUBACK, like a client that hangs.
 */
async function subscriber(port: number, clientId: string, qos: 0 | 1, { paused = false, record = false } = {}): Promise<Subscriber> {
  const socket = net.connect({ host: '127.0.0.1', port });
  cleanups.push(() => void socket.destroy());
  socket.on('error', () => undefined);
  let received = 0;
  let next = 0;
  let inOrder = true;
  const seqs: number[] = [];
  let subscribed: () => void = () => undefined;
  let waiter: (() => void) | undefined;
  const ready = new Promise<void>((resolve) => (subscribed = resolve));
  socket.on(
    'data',
    framer((buf, start, body, end) => {
      const type = buf[start]! >> 4;
      if (type === 9) subscribed();
      if (type !== 3) return;
      received++;
      const packetQos = (buf[start]! >> 1) & 3;
      const topicLength = buf.readUInt16BE(body);
      const payload = body + 2 + topicLength + (packetQos > 0 ? 2 : 0);
      const seq = end - payload >= 4 ? buf.readUInt32BE(payload) : -1;
      if (record) seqs.push(seq);
      if (seq !== next) inOrder = false;
      next = seq + 1;
      if (packetQos === 1) {
        const id = buf.readUInt16BE(body + 2 + topicLength);
        socket.write(Buffer.from([0x40, 2, id >> 8, id & 0xff]));
      }
      waiter?.();
    }),
  );
  socket.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean: true, keepalive: 0 }));
  socket.write(generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: TOPIC, qos }] }));
  await withDeadline(ready, 5000, `${clientId} got no SUBACK`);
  if (paused) socket.pause();
  return {
    socket,
    get received() {
      return received;
    },
    seqs,
    get inOrder() {
      return inOrder;
    },
    until(n, within) {
      return withDeadline(
        new Promise<void>((resolve) => {
          const check = () => {
            if (received < n) return;
            waiter = undefined;
            resolve();
          };
          waiter = check;
          check();
        }),
        within,
        `${clientId} received ${received} of ${n}`,
        () => (waiter = undefined),
      );
    },
  };
}

function withDeadline<T>(p: Promise<T>, within: number, what: string, onTimeout?: () => void): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      onTimeout?.();
      reject(new Error(`${what} (after ${within} ms)`));
    }, within);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err as Error);
      },
    );
  });
}

/** An MQTT 3.1.1 publisher on a bare socket, sending messages numbered from 0 with `size`-byte payloads. */
async function publisher(port: number, size: number) {
  const socket = net.connect({ host: '127.0.0.1', port });
  cleanups.push(() => void socket.destroy());
  socket.on('error', () => undefined);
  let acked = 0;
  let onAck: (() => void) | undefined;
  let connected: () => void = () => undefined;
  const ready = new Promise<void>((resolve) => (connected = resolve));
  socket.on(
    'data',
    framer((buf, start) => {
      const type = buf[start]! >> 4;
      if (type === 2) connected();
      if (type === 4) {
        acked++;
        onAck?.();
      }
    }),
  );
  socket.write(generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'publisher', clean: true, keepalive: 0 }));
  await withDeadline(ready, 5000, 'publisher got no CONNACK');
  const template = (qos: 0 | 1) => generate({ cmd: 'publish', topic: TOPIC, payload: Buffer.alloc(size), qos, messageId: qos ? 1 : undefined, retain: false, dup: false });
  const t0 = template(0);
  const t1 = template(1);
  /** One PUBLISH with sequence number `seq` (and packet id seq % 65535 + 1 at QoS 1). */
  const packet = (seq: number, qos: 0 | 1) => {
    const p = Buffer.from(qos ? t1 : t0);
    p.writeUInt32BE(seq, p.length - size);
    if (qos) p.writeUInt16BE((seq % 65_535) + 1, p.length - size - 2);
    return p;
  };
  return {
    /** Sends `from`..`to`-1 at QoS 1 with at most `window` unacknowledged; resolves when all are acknowledged. */
    qos1(from: number, to: number, window: number, within: number): Promise<void> {
      const target = acked + (to - from);
      let next = from;
      const fill = () => {
        const batch: Buffer[] = [];
        while (next < to && next - from - (acked - (target - (to - from))) < window) batch.push(packet(next++, 1));
        if (batch.length > 0) socket.write(Buffer.concat(batch));
      };
      return withDeadline(
        new Promise<void>((resolve) => {
          onAck = () => {
            if (acked >= target) {
              onAck = undefined;
              resolve();
            } else fill();
          };
          fill();
        }),
        within,
        `publisher: ${acked - (target - (to - from))} of ${to - from} acknowledged`,
        () => (onAck = undefined),
      );
    },
    /** Writes `from`..`to`-1 at QoS 0 in one write. */
    qos0(from: number, to: number): void {
      const batch: Buffer[] = [];
      for (let seq = from; seq < to; seq++) batch.push(packet(seq, 0));
      socket.write(Buffer.concat(batch));
    },
  };
}

/**
 * Memory the broker holds after two GCs: JS heap plus Buffers (payloads, socket write queues).
 * This is what a slow consumer would make grow (without maxSendBufferBytes the QoS 0 flood
 * below grows it by 80 MiB). RSS also keeps what the allocator has not returned to the OS
 * after tens of MB of churn, 20-65 MiB here, so it is checked against a loose bound only.
 */
function retained(s: BrokerSample): number {
  return s.heapUsed + s.arrayBuffers;
}

function memory(before: BrokerSample, after: BrokerSample): string {
  const f = (n: number) => (n / MiB).toFixed(1);
  return `heap+buffers ${f(retained(before))} -> ${f(retained(after))} MiB, RSS ${f(before.rss)} -> ${f(after.rss)} MiB`;
}

describe('slow consumers', () => {
  test('a QoS 1 subscriber that stops reading while 100,000 messages flow to ten others: the ten get every message in order, the slow one keeps its window and the newest maxQueued, the drops are counted, and memory stays bounded', async () => {
    const total = 100_000;
    const b = await brokerProcess({});
    const pub = await publisher(b.port, 512);
    const fast = await Promise.all(Array.from({ length: 10 }, (_, i) => subscriber(b.port, `fast-${i}`, 1)));

    // Warm up with everything but the slow one, then take the baseline.
    await pub.qos1(0, 2000, 100, 10_000);
    await Promise.all(fast.map((s) => s.until(2000, 5000)));
    const before = await b.sample();
    const fastBefore = fast.map((s) => s.received);

    const slow = await subscriber(b.port, 'slow', 1, { paused: true, record: true });
    const started = Date.now();
    // Paced by the ten, 500 at a time, so only the slow one falls behind: the broker acks the
    // publisher whatever its subscribers do, and a fast subscriber starved of CPU in this
    // shared test process would otherwise overflow its own maxQueued and rightly lose messages.
    for (let sent = 2000; sent < 2000 + total; sent += 500) {
      await pub.qos1(sent, sent + 500, 100, 30_000);
      await Promise.all(fast.map((s) => s.until(sent + 500, 30_000)));
    }
    const elapsed = Date.now() - started;
    const after = await b.sample();

    for (const [i, s] of fast.entries()) {
      expect(s.received - fastBefore[i]!).toBe(total);
      expect(s.inOrder).toBe(true);
    }
    // 100 in flight (maxInflight) and 1,000 queued (maxQueued) are kept; every older one was dropped.
    expect(after.stats.droppedQueueFull - before.stats.droppedQueueFull).toBe(total - 100 - 1000);
    console.info(`slow QoS 1 consumer: 10 x ${total} delivered in ${elapsed} ms; broker ${memory(before, after)}`);
    // Keeping all 98,900 dropped messages (512 B payloads) would hold over 50 MB.
    expect((retained(after) - retained(before)) / MiB).toBeLessThan(10);
    expect((after.rss - before.rss) / MiB).toBeLessThan(100);

    // Once it reads again it gets its window, then the newest 1,000: the oldest were dropped.
    slow.socket.resume();
    await slow.until(1100, 10_000);
    const firstSeq = 2000;
    const expected = [
      ...Array.from({ length: 100 }, (_, i) => firstSeq + i),
      ...Array.from({ length: 1000 }, (_, i) => firstSeq + total - 1000 + i),
    ];
    expect(slow.seqs).toEqual(expected);
  }, 200_000);

  test('a QoS 0 flood to a subscriber that stops reading: messages to it are dropped beyond maxSendBufferBytes and counted, memory stays bounded, and another subscriber gets everything', async () => {
    const total = 60_000;
    const size = 1024;
    const b = await brokerProcess({ limits: { maxSendBufferBytes: '4MiB' } });
    const pub = await publisher(b.port, size);
    const fast = await subscriber(b.port, 'fast', 0);
    pub.qos0(0, 1000);
    await fast.until(1000, 5000);
    const before = await b.sample();

    const slow = await subscriber(b.port, 'slow', 0, { paused: true });
    // Paced by the fast subscriber, so only the slow one falls behind.
    for (let sent = 1000; sent < 1000 + total; sent += 500) {
      pub.qos0(sent, sent + 500);
      await fast.until(sent + 500, 10_000);
    }
    const after = await b.sample();

    expect(fast.received).toBe(1000 + total);
    expect(fast.inOrder).toBe(true);
    const dropped = after.stats.droppedSendBuffer;
    console.info(`slow QoS 0 consumer: ${dropped} of ${total} dropped for it; broker ${memory(before, after)}`);
    // The kernel's socket buffers take a few MB and the broker 4 MiB; the other ~50 MB are dropped.
    expect(dropped).toBeGreaterThan(total / 2);
    expect((retained(after) - retained(before)) / MiB).toBeLessThan(4 + 6);
    expect((after.rss - before.rss) / MiB).toBeLessThan(100);
    expect(after.stats.slowConsumersDisconnected).toBe(0); // 30 s have not passed
    expect(slow.received).toBe(0);
  }, 60_000);

  test('QoS 1 messages to a subscriber whose send buffer is over the cap wait in its queue and all arrive, in order, once it reads again', async () => {
    const count = 400;
    const b = await brokerProcess({ limits: { maxSendBufferBytes: '256KiB' } });
    const pub = await publisher(b.port, 32 * 1024);
    const slow = await subscriber(b.port, 'slow', 1, { paused: true });
    // 12.5 MB, far more than the socket buffers and the 256 KiB cap hold.
    await pub.qos1(0, count, 100, 20_000);
    const meanwhile = await b.sample();
    expect(slow.received).toBe(0);
    slow.socket.resume();
    await slow.until(count, 20_000);
    expect(slow.inOrder).toBe(true);
    const after = await b.sample();
    expect(after.stats.droppedQueueFull).toBe(0);
    expect(after.stats.droppedSendBuffer).toBe(0);
    expect(after.stats.slowConsumersDisconnected).toBe(0);
    console.info(`congested QoS 1 subscriber: ${count} x 32 KiB queued and delivered; broker ${memory(meanwhile, after)}`);
  }, 60_000);

  test('a subscriber whose send buffer does not drain within slowConsumerTimeoutMs is disconnected and counted; the others carry on', async () => {
    const size = 1024;
    const b = await brokerProcess({ limits: { maxSendBufferBytes: '1MiB', slowConsumerTimeoutMs: 500 } });
    const pub = await publisher(b.port, size);
    const fast = await subscriber(b.port, 'fast', 0);
    const slow = await subscriber(b.port, 'slow', 0, { paused: true });
    let sent = 0;
    // Until the slow one is cut off (bounded: at most 50 MB).
    for (let round = 0; round < 100; round++) {
      pub.qos0(sent, sent + 500);
      sent += 500;
      await fast.until(sent, 10_000);
      if ((await b.sample()).stats.slowConsumersDisconnected > 0) break;
    }
    const after = await b.sample();
    expect(after.stats.slowConsumersDisconnected).toBe(1);
    expect(after.stats.droppedSendBuffer).toBeGreaterThan(0);
    expect(fast.inOrder).toBe(true);

    // The broker closed it: once it reads again it sees the end of the stream.
    slow.socket.resume();
    await withDeadline(new Promise((resolve) => slow.socket.once('close', resolve)), 5000, 'the slow subscriber was not closed');
    pub.qos0(sent, sent + 10);
    await fast.until(sent + 10, 5000);
    expect(fast.inOrder).toBe(true);
    expect((await b.sample()).connections).toBe(2);
  }, 60_000);
});
