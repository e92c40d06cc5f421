// The IPC loop of a bench child that hosts a whole signalbox engine (the bridge job's and the
// influx job's children): started with its options as JSON in argv[2], it reports when ready
// and answers counter requests until told to close.
//
//   child → parent  { type: 'ready', port, info }           listening on 127.0.0.1:port
//   child → parent  { type: 'failed', message }             could not start (then exits 1)
//   child → parent  { type: 'crashed', message }            uncaught error (then exits 1)
//   parent → child  { type: 'counters', id }                → { type: 'counters', id, counters }
//   parent → child  { type: 'close' }                       → exits 0 after server.close()

import { rmSync } from 'node:fs';

/**
 * Closes a bench child's engine (when it got that far) and then removes its temp project
 * folder, whatever the close did.
 */
export async function closeEngine(engine, dir) {
  try {
    await engine?.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function send(message) {
  if (process.connected) process.send(message);
}

/**
 * Starts `start(options)` (resolving to { port, info, counters(), close() }) and serves the
 * protocol above. Does nothing when the process was not forked with an IPC channel.
 */
export function serveEngineChild(start) {
  if (!process.send) return;
  run(start).catch((err) => {
    send({ type: 'failed', message: err?.stack ?? String(err) });
    process.exitCode = 1;
    process.disconnect?.();
  });
}

async function run(start) {
  const server = await start(JSON.parse(process.argv[2] ?? '{}'));
  process.on('message', (message) => {
    if (message.type === 'counters') {
      try {
        send({ type: 'counters', id: message.id, counters: server.counters() });
      } catch (err) {
        send({ type: 'counters', id: message.id, error: err.message });
      }
    } else if (message.type === 'close') {
      server.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    }
  });
  process.on('uncaughtException', (err) => {
    send({ type: 'crashed', message: err.stack ?? String(err) });
    process.exit(1);
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready', port: server.port, info: server.info });
}
