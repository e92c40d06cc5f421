import { expect } from 'vitest';
import type { Recorder } from './durable.js';
import { openRaw } from './raw-client.js';

/**
 * Shared parts of the kill -9 tests: a seeded PRNG for reproducible kill points, a raw
 * QoS 1 publisher of numbered messages with a bounded window, and waiting on a recorder.
 */

/** mulberry32: a small seeded PRNG, so a failing kill point can be reproduced. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export function numberOf(payload: Buffer | string): number {
  return (JSON.parse(payload.toString()) as { n: number }).n;
}

/**
 * Publishes `numbers` as QoS 1 `{"n": i}` to load/in over one raw 3.1.1 connection with at most
 * WINDOW unacknowledged, adding each PUBACKed number to `acked` and calling `onAck` after it.
 * Resolves 'done' when all are acked, or 'closed' when the connection drops first (the
 * PUBACKs that arrived before the drop are counted). Bounded: a silent broker fails it.
 */
export async function publishNumbers(
  port: number,
  numbers: readonly number[],
  acked: Set<number>,
  { topic, clientId, window, onAck = () => {} }: { topic: string; clientId: string; window: number; onAck?: () => void },
): Promise<'done' | 'closed'> {
  const r = await openRaw(port, { within: 5000 });
  try {
    const connack = await r.connect({ clientId, clean: true }, { within: 5000 });
    expect(connack.returnCode).toBe(0);
    const inflight = new Map<number, number>();
    let next = 0;
    let packetId = 0;
    const fill = () => {
      while (inflight.size < window && next < numbers.length) {
        const n = numbers[next++]!;
        do packetId = packetId >= 65_535 ? 1 : packetId + 1;
        while (inflight.has(packetId));
        inflight.set(packetId, n);
        r.send({ cmd: 'publish', topic, payload: Buffer.from(JSON.stringify({ n })), qos: 1, messageId: packetId, retain: false, dup: acked.size > 0 });
      }
    };
    fill();
    while (inflight.size > 0) {
      let packet;
      try {
        packet = await r.nextPacket({ within: 10_000 });
      } catch (err) {
        if (r.isClosed) return 'closed';
        throw err;
      }
      if (packet.cmd !== 'puback') throw new Error(`publisher got ${packet.cmd}, expected only PUBACKs`);
      const n = inflight.get(packet.messageId!);
      if (n === undefined) throw new Error(`PUBACK for unknown packet id ${packet.messageId}`);
      inflight.delete(packet.messageId!);
      acked.add(n);
      onAck();
      fill();
    }
    return 'done';
  } finally {
    r.destroy();
  }
}

/**
 * Publishes 0..total-1 (see {@link publishNumbers}) and kills `pid` with SIGKILL once
 * `killAt` of them were acknowledged. Resolves with how the publishing ended ('closed' when
 * the kill cut it short, as it should) and the numbers acknowledged before.
 */
export async function publishThenKill(
  port: number,
  pid: number,
  { total, killAt, topic, clientId, window }: { total: number; killAt: number; topic: string; clientId: string; window: number },
): Promise<{ outcome: 'done' | 'closed'; acked: Set<number> }> {
  const acked = new Set<number>();
  let killed = false;
  const outcome = await publishNumbers(port, Array.from({ length: total }, (_, i) => i), acked, {
    topic,
    clientId,
    window,
    onAck: () => {
      if (killed || acked.size < killAt) return;
      killed = true;
      process.kill(pid, 'SIGKILL');
    },
  });
  return { outcome, acked };
}

/** Resolves once `ready()` holds, checked at each message the recorder gets; rejects after `within` ms. */
export function untilMessages(rec: Recorder, ready: () => boolean, what: () => string, within: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (ready()) return resolve();
    const onMessage = () => {
      if (!ready()) return;
      clearTimeout(timer);
      rec.client.off('message', onMessage);
      resolve();
    };
    const timer = setTimeout(() => {
      rec.client.off('message', onMessage);
      reject(new Error(`${what()} after ${within} ms`));
    }, within);
    rec.client.on('message', onMessage);
  });
}

