// Phase `auth`: authenticated connections. The bench process opens N MQTT connections with
// a username and password (a few users, real scrypt hashes, an ACL with %u) to signalbox in
// its own child process and measures the connect rate and the child's RSS per connection
// after a forced GC, twice: with the credential cache (the default: one scrypt per user,
// then an HMAC per CONNECT) and without it (one scrypt per CONNECT, so fewer connections).
import { performance } from 'node:perf_hooks';
import { benchPassword } from './auth-server.js';
import { startBroker } from './broker-process.js';
import { closeSocket, openIdleConnection } from './load.js';
import { delay, formatBytes, formatInt, withTimeout } from './stats.js';

const CONNECT_TIMEOUT_MS = 30_000;
const SETTLE_MS = 500;
const WARMUP_CONNECTIONS = 200;
const USERS = 4;
const UNCACHED_CONCURRENCY = 16;

/** Connects with user `i % USERS`'s credentials; resolves with the socket after CONNACK 0. */
function openAuthenticated(port, i, tag) {
  const user = i % USERS;
  return openIdleConnection(port, `bench-auth-${i}-${tag}`, 600, CONNECT_TIMEOUT_MS, { username: `bench-user-${user}`, password: Buffer.from(benchPassword(user)) });
}

async function pool(concurrency, worker) {
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker));
}

/** One measurement against a fresh broker child. */
async function measure({ connections, concurrency, credentialCache, timeoutMs }) {
  const broker = await startBroker('signalbox-auth', { options: { users: USERS, credentialCache }, startTimeoutMs: 30_000 });
  const sockets = [];
  const state = { stage: 'warm-up' };
  try {
    const work = (async () => {
      const tag = Math.random().toString(36).slice(2, 8);
      const warm = [];
      for (let i = 0; i < Math.min(WARMUP_CONNECTIONS, Math.ceil(connections / 10)); i++) warm.push(openAuthenticated(broker.port, i, `warm-${tag}`));
      await Promise.all((await Promise.all(warm)).map((s) => closeSocket(s)));
      await delay(SETTLE_MS);
      const before = await broker.stats({ gc: true });
      state.stage = 'connecting';
      const t0 = performance.now();
      let next = 0;
      await pool(concurrency, async () => {
        while (next < connections) sockets.push(await openAuthenticated(broker.port, next++, tag));
      });
      const connectMs = performance.now() - t0;
      await delay(SETTLE_MS);
      const open = await broker.stats({ gc: true, counters: true });
      return {
        connections,
        credentialCache,
        connectMs,
        connectsPerSec: (connections / connectMs) * 1000,
        rssBefore: before.rss,
        rssOpen: open.rss,
        bytesPerConnection: (open.rss - before.rss) / connections,
        heapBytesPerConnection: (open.heapUsed - before.heapUsed) / connections,
        accepted: open.counters?.broker?.connectionsAccepted,
        authFailures: open.counters?.broker?.authFailures,
      };
    })();
    return await withTimeout(work, timeoutMs, `signalbox auth connections (cache ${credentialCache})`, () => `${state.stage}: ${sockets.length} of ${connections} open`);
  } finally {
    for (const s of sockets) if (!s.destroyed) s.resetAndDestroy();
    await broker.stop();
  }
}

/**
 * Runs the `auth` phase: `idleConnections` authenticated connections with the credential
 * cache, and `authUncachedConnections` without it. Never throws: a failure becomes `{ error }`.
 */
export async function runAuth(options) {
  const timeoutMs = Math.max(options.phaseTimeoutMs, 120_000);
  const run = async (settings) => {
    try {
      return await measure({ concurrency: options.idleConcurrency, ...settings, timeoutMs });
    } catch (err) {
      return { error: err.message };
    }
  };
  const cached = await run({ connections: options.idleConnections, credentialCache: 1000 });
  // One IP's checks run one at a time, so every CONNECT in flight waits for the scrypt of
  // those ahead of it: keep the queue short enough for the 10 s connect timeout.
  const uncached = await run({ connections: options.authUncachedConnections, credentialCache: 0, concurrency: UNCACHED_CONCURRENCY });
  return { users: USERS, cached, uncached };
}

/** Prints the phase's results. */
export function printAuth(results) {
  console.log(`\nauthenticated connections: signalbox, ${results.users} users (scrypt N=16384 r=8 p=1), ACL with %u, MQTT 3.1.1\n`);
  for (const [name, r] of [['credential cache on', results.cached], ['credential cache off', results.uncached]]) {
    if (r.error) console.log(`  ${name.padEnd(22)} FAILED: ${r.error}`);
    else console.log(`  ${name.padEnd(22)} ${formatInt(r.connections)} connections: ${formatInt(r.connectsPerSec)} connects/s, ${formatBytes(r.bytesPerConnection)} RSS / ${formatBytes(r.heapBytesPerConnection)} heap per connection`);
  }
}

/** True when a measurement failed. */
export function authFailed(results) {
  return Boolean(results.cached.error || results.uncached.error);
}
