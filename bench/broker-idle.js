// Phase 3: idle connections. The bench process opens N MQTT connections (CONNECT/CONNACK,
// long keepalive, then silence) to a broker in its own child process, and compares the
// child's RSS after a forced GC before and after. Each process has its own fd limit, so the
// bench holding N sockets and the broker holding N sockets do not compete.
import { performance } from 'node:perf_hooks';
import { closeSocket, openIdleConnection } from './load.js';
import { delay, withTimeout } from './stats.js';

const CONNECT_TIMEOUT_MS = 10_000;
const SETTLE_MS = 500;
const WARMUP_CONNECTIONS = 200;

/**
 * Runs the idle-connection measurement against a freshly started broker.
 * @param {import('./broker-process.js').BrokerProcess} broker
 * @param {{ idleConnections: number, idleConcurrency: number, idleKeepaliveS: number, timeoutMs: number }} options
 */
export async function runIdle(broker, { idleConnections: total, idleConcurrency, idleKeepaliveS, timeoutMs }) {
  const sockets = [];
  let stopped = false;
  const state = { stage: 'baseline' };
  const progress = () => `${state.stage}: ${sockets.length} of ${total} connections open`;
  const work = (async () => {
    const tag = Math.random().toString(36).slice(2, 8);
    // Warm-up: a few connections opened and closed first, so code compiled and caches
    // filled on first use are in the baseline, not in the per-connection figure.
    state.stage = 'warm-up';
    const warm = [];
    for (let i = 0; i < WARMUP_CONNECTIONS; i++) warm.push(openIdleConnection(broker.port, `bench-warm-${i}-${tag}`, idleKeepaliveS, CONNECT_TIMEOUT_MS));
    await Promise.all((await Promise.all(warm)).map((s) => closeSocket(s)));
    await delay(SETTLE_MS);
    const before = await broker.stats({ gc: true });
    state.stage = 'connecting';
    const t0 = performance.now();
    let next = 0;
    await pool(idleConcurrency, async () => {
      while (next < total && !stopped) {
        const i = next++;
        sockets.push(await openIdleConnection(broker.port, `bench-idle-${i}-${tag}`, idleKeepaliveS, CONNECT_TIMEOUT_MS));
      }
    });
    const connectMs = performance.now() - t0;
    state.stage = 'measuring';
    await delay(SETTLE_MS);
    const open = await broker.stats({ gc: true });
    const dropped = sockets.filter((s) => s.destroyed).length;
    state.stage = 'disconnecting';
    const t1 = performance.now();
    let k = 0;
    await pool(idleConcurrency, async () => {
      while (k < sockets.length) await closeSocket(sockets[k++]);
    });
    const closeMs = performance.now() - t1;
    await delay(SETTLE_MS);
    const closed = await broker.stats({ gc: true });
    return {
      connections: total,
      keepaliveS: idleKeepaliveS,
      droppedWhileIdle: dropped,
      connectMs,
      connectsPerSec: (total / connectMs) * 1000,
      closeMs,
      rssBefore: before.rss,
      rssOpen: open.rss,
      rssAfterClose: closed.rss,
      bytesPerConnection: (open.rss - before.rss) / total,
      heapBytesPerConnection: (open.heapUsed - before.heapUsed) / total,
      retainedAfterCloseBytes: closed.rss - before.rss,
      heapRetainedAfterCloseBytes: closed.heapUsed - before.heapUsed,
    };
  })();
  try {
    return await withTimeout(work, timeoutMs, `${broker.kind} idle connections`, progress);
  } catch (err) {
    stopped = true;
    throw err;
  } finally {
    for (const s of sockets) if (!s.destroyed) s.resetAndDestroy();
  }
}

/** Runs `worker` `concurrency` times in parallel and waits for all; the workers share a cursor. */
async function pool(concurrency, worker) {
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}
