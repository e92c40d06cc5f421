import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import { startBrokerProcess, type BrokerProcess } from '../helpers/broker-process.js';
import { collect, connect } from '../helpers/mqtt.js';
import { openRaw, varint, type RawClient } from '../helpers/raw-client.js';

// Hostile clients against the broker running alone in a child process (the built dist/), so
// its memory (VmRSS) and file descriptors are read from /proc without the test's own sockets
// in them. Bad topics and oversized packets checked against storage are in
// broker-bad-input.test.ts; limits one by one in broker-limits.test.ts.

const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const MiB = 1024 * 1024;

async function brokerProcess(config: Parameters<typeof startBrokerProcess>[0]): Promise<BrokerProcess> {
  const b = await startBrokerProcess(config);
  cleanups.push(() => b.close());
  return b;
}

/** A well-behaved MQTT.js client subscribed to `ok/#`; `roundTrip(n)` publishes n QoS 1 messages and checks they all come back. */
async function bystander(b: BrokerProcess): Promise<{ client: MqttClient; roundTrip(n: number): Promise<void> }> {
  const client = await connect(`mqtt://127.0.0.1:${b.port}`, { protocolVersion: 5, clientId: `bystander-${Math.random()}` });
  cleanups.push(() => client.endAsync(true));
  await client.subscribeAsync('ok/#', { qos: 1 });
  return {
    client,
    async roundTrip(n) {
      const got = collect(client, n, { within: 5000 });
      await Promise.all(Array.from({ length: n }, (_, i) => client.publishAsync(`ok/${i}`, String(i), { qos: 1 })));
      expect((await got).map((m) => m.payload.toString()).sort()).toEqual(Array.from({ length: n }, (_, i) => String(i)).sort());
    },
  };
}

/**
 * Writes `header` then 64 KiB chunks of filler as fast as the socket takes them, until the
 * broker closes the connection or `maxBytes` are written. Resolves with the bytes written.
 */
async function flood(r: RawClient, header: Buffer, maxBytes: number): Promise<number> {
  const socket = r.socket;
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  socket.write(header);
  let written = header.length;
  while (!r.isClosed && written < maxBytes) {
    written += chunk.length;
    if (!socket.write(chunk)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          socket.off('drain', done);
          socket.off('close', done);
          resolve();
        };
        const timer = setTimeout(done, 2000);
        socket.once('drain', done);
        socket.once('close', done);
      });
    }
  }
  return written;
}

describe('oversized packets', () => {
  test('14 sockets announcing ~250 MB packets and streaming data are each closed at the header, the broker grows by less than 20 MB, and a normal client is unaffected', async () => {
    const b = await brokerProcess({});
    const normal = await bystander(b);
    await normal.roundTrip(50); // warms up the paths the flood and the bystander use
    const before = await b.sample();

    const publishHeader = Buffer.concat([Buffer.from([0x30]), varint(250_000_000)]); // PUBLISH of 250,000,000 bytes
    const connectHeader = Buffer.concat([Buffer.from([0x10]), varint(250_000_000)]); // CONNECT of 250,000,000 bytes
    // Three kinds: a PUBLISH header as the first packet (not CONNECT), a CONNECT header
    // announcing 250 MB, and a PUBLISH header after a successful CONNECT.
    const kinds = Array.from({ length: 14 }, (_, i) => (['first', 'connect', 'connected'] as const)[i % 3]!);
    const sockets: RawClient[] = [];
    for (const [i, kind] of kinds.entries()) {
      const r = await openRaw(b.port);
      cleanups.push(() => r.destroy());
      if (kind === 'connected') expect((await r.connect({ clientId: `flood-${i}` })).returnCode).toBe(0);
      sockets.push(r);
    }
    const floods = sockets.map((r, i) => flood(r, kinds[i] === 'connect' ? connectHeader : publishHeader, 64 * MiB));
    await normal.roundTrip(50);
    await Promise.all(sockets.map((r) => r.closed({ within: 5000 })));
    const written = await Promise.all(floods);
    // Each flood stopped because the broker closed it, long before its 250 MB.
    for (const bytes of written) expect(bytes).toBeLessThan(64 * MiB);
    await normal.roundTrip(50);

    const after = await b.sample();
    const grewMiB = (after.rss - before.rss) / MiB;
    console.info(`14 x 250 MB headers: broker RSS ${(before.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB, heap after GC ${(after.heapUsed / MiB).toFixed(1)} MiB, ${(written.reduce((a, n) => a + n, 0) / MiB).toFixed(1)} MiB written by the flood`);
    expect(grewMiB).toBeLessThan(20);
    // Those that announced a CONNECT or connected first are refused by size; those whose first
    // packet was not CONNECT at its first byte. Each is a protocol error.
    expect(after.stats.packetsTooLarge).toBe(kinds.filter((k) => k !== 'first').length);
    expect(after.stats.protocolErrors).toBe(14);
    expect(after.connections).toBe(1);
  });
});

/** The soft limit on open files of this process, from /proc/self/limits. */
function openFilesLimit(): number {
  const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  return !m || m[1] === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(m[1]);
}

/** Opens `count` TCP connections that never send a byte, `parallel` at a time; resolves with them open. */
async function silentSockets(port: number, count: number, parallel: number): Promise<{ sockets: net.Socket[]; closed: Promise<void> }> {
  const sockets: net.Socket[] = [];
  let closedCount = 0;
  let allClosed: () => void = () => undefined;
  const closed = new Promise<void>((resolve) => (allClosed = resolve));
  const openOne = () =>
    new Promise<void>((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port });
      sockets.push(s);
      s.on('error', () => undefined);
      s.once('close', () => {
        if (++closedCount === count) allClosed();
      });
      s.once('connect', () => resolve());
      s.once('close', () => resolve()); // closed before 'connect' still counts as done
      setTimeout(() => reject(new Error('a connection did not open within 5 s')), 5000).unref();
    });
  for (let i = 0; i < count; i += parallel) {
    await Promise.all(Array.from({ length: Math.min(parallel, count - i) }, openOne));
  }
  return { sockets, closed };
}

describe('connections that never send CONNECT', () => {
  test('5,000 sockets that never send CONNECT are all closed by a 500 ms connect timeout, the broker is back to its file descriptors, and a connected client is unaffected', async () => {
    const total = 5000;
    // The broker child and this process each hold every socket; open them in batches that fit.
    const batch = Math.max(100, Math.min(total, openFilesLimit() - 500));
    const b = await brokerProcess({ connectTimeoutMs: 500, limits: { maxPendingConnectionsPerIp: total, maxConnectRatePerIp: 1_000_000 } });
    const normal = await bystander(b);
    await normal.roundTrip(20);
    const before = await b.sample();
    const started = Date.now();

    for (let opened = 0; opened < total; opened += batch) {
      const n = Math.min(batch, total - opened);
      const { sockets, closed } = await silentSockets(b.port, n, 250);
      cleanups.push(() => sockets.forEach((s) => s.destroy()));
      await normal.roundTrip(20);
      await Promise.race([
        closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error(`not every silent socket was closed within 10 s`)), 10_000).unref()),
      ]);
    }
    await normal.roundTrip(20);

    // The broker releases each descriptor when it destroys the socket; give it a moment to settle.
    let after = await b.sample();
    for (let i = 0; i < 40 && after.fds > before.fds; i++) after = await b.sample();
    console.info(`5,000 silent sockets: closed in ${Date.now() - started} ms; broker fds ${before.fds} -> ${after.fds}, RSS ${(before.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB`);
    expect(after.fds).toBe(before.fds);
    expect(after.stats.connectTimeouts).toBe(total);
    expect(after.connections).toBe(1);
    expect(normal.client.connected).toBe(true);
  }, 40_000);
});
