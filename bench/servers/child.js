// Child process that hosts one broker under test, so the load generator never shares its
// event loop. Started by bench/broker-process.js as `node --expose-gc child.js <kind> [options JSON]`;
// the options go to the server's start().
//
// IPC protocol (process.send / 'message'):
//   child → parent  { type: 'ready', port, info }      broker listening on 127.0.0.1:port
//   child → parent  { type: 'failed', message }        broker could not start (then exits 1)
//   parent → child  { type: 'stats', id, gc, counters }  → { type: 'stats', id, rss, maxRss, heapUsed, ..., counters }
//   parent → child  { type: 'close' }                  → { type: 'closed' } and exit 0

const kind = process.argv[2];
const startOptions = process.argv[3] ? JSON.parse(process.argv[3]) : {};
const servers = {
  aedes: () => import('./aedes.js'),
  signalbox: () => import('./signalbox.js'),
  null: () => import('./null.js'),
  'aedes-rules': () => import('./aedes-rules.js'),
  'signalbox-rules': () => import('./signalbox-rules.js'),
  'signalbox-auth': () => import('../auth-server.js'),
};

function send(message) {
  if (process.connected) process.send(message);
}

/**
 * Memory and CPU of this process; with `gc`, after two full collections (needs --expose-gc);
 * with `counters`, the server's own counters (read after the CPU time, so their cost is not
 * charged to a measurement).
 */
async function stats(server, gc, counters) {
  if (gc) {
    if (typeof globalThis.gc !== 'function') throw new Error('child was started without --expose-gc');
    // Two passes and a macrotask between them, so weak refs / finalizers queued by the
    // first pass are collected by the second.
    globalThis.gc();
    await new Promise((resolve) => setTimeout(resolve, 50));
    globalThis.gc();
  }
  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  return {
    rss: mem.rss,
    // Peak RSS since the process started (ru_maxrss, KiB on Linux).
    maxRss: process.resourceUsage().maxRSS * 1024,
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    uptimeMs: process.uptime() * 1000,
    counters: counters && server.counters ? await server.counters() : undefined,
  };
}

async function main() {
  const load = servers[kind];
  if (!load) throw new Error(`unknown broker kind ${JSON.stringify(kind)}; expected one of ${Object.keys(servers).join(', ')}`);
  const server = await (await load()).start(startOptions);
  process.on('message', (message) => {
    if (message.type === 'stats') {
      stats(server, message.gc, message.counters).then(
        (s) => send({ type: 'stats', id: message.id, ...s }),
        (err) => send({ type: 'stats', id: message.id, error: err.message }),
      );
    } else if (message.type === 'close') {
      server.close().then(
        () => { send({ type: 'closed' }); process.exit(0); },
        (err) => { send({ type: 'closed', error: err.message }); process.exit(1); },
      );
    }
  });
  // A broker that leaks an error must not silently skew the numbers: report and die.
  process.on('uncaughtException', (err) => {
    send({ type: 'crashed', message: err.stack ?? String(err) });
    process.exit(1);
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready', port: server.port, info: server.info });
}

main().catch((err) => {
  send({ type: 'failed', message: err?.stack ?? String(err) });
  process.exitCode = 1;
  process.disconnect?.();
});
