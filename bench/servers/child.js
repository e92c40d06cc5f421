// Child process that hosts one broker under test, so the load generator never shares its
// event loop. Started by bench/broker-process.js as `node --expose-gc child.js <kind>`.
//
// IPC protocol (process.send / 'message'):
//   child → parent  { type: 'ready', port }            broker listening on 127.0.0.1:port
//   child → parent  { type: 'failed', message }        broker could not start (then exits 1)
//   parent → child  { type: 'stats', id, gc }          → { type: 'stats', id, rss, heapUsed, ... }
//   parent → child  { type: 'close' }                  → { type: 'closed' } and exit 0

const kind = process.argv[2];
const servers = {
  aedes: () => import('./aedes.js'),
  signalbox: () => import('./signalbox.js'),
  null: () => import('./null.js'),
};

function send(message) {
  if (process.connected) process.send(message);
}

/** Memory and CPU of this process; with `gc`, after two full collections (needs --expose-gc). */
async function stats(gc) {
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
    heapUsed: mem.heapUsed,
    heapTotal: mem.heapTotal,
    external: mem.external,
    arrayBuffers: mem.arrayBuffers,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    uptimeMs: process.uptime() * 1000,
  };
}

async function main() {
  const load = servers[kind];
  if (!load) throw new Error(`unknown broker kind ${JSON.stringify(kind)}; expected one of ${Object.keys(servers).join(', ')}`);
  const server = await (await load()).start();
  process.on('message', (message) => {
    if (message.type === 'stats') {
      stats(message.gc).then(
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
  send({ type: 'ready', port: server.port });
}

main().catch((err) => {
  send({ type: 'failed', message: err?.stack ?? String(err) });
  process.exitCode = 1;
  process.disconnect?.();
});
