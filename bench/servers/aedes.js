// Aedes 1.2 with its default in-memory persistence, over a plain net server: the reference
// broker signalbox is compared against.
import net from 'node:net';
import { Aedes } from 'aedes';

/** Starts Aedes on 127.0.0.1 with an OS-chosen port. */
export async function start() {
  const aedes = await Aedes.createBroker();
  // Aedes emits client errors (e.g. ECONNRESET when the bench resets idle sockets); they
  // are expected here and must not crash the child.
  aedes.on('clientError', () => {});
  aedes.on('connectionError', () => {});
  const server = net.createServer(aedes.handle);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        server.close();
        aedes.close(() => resolve());
      }),
  };
}
