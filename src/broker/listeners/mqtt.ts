import net from 'node:net';
import type { ListenerConfig } from '../../config/broker.js';
import type { BoundAddress, Listener } from './listener.js';

/** MQTT over plain TCP (`type: mqtt`). */
export function createMqttListener(config: ListenerConfig): Listener {
  let server: net.Server | undefined;
  return {
    start(onStream) {
      server = net.createServer({ noDelay: true }, (socket) => {
        onStream(socket, { remote: `${socket.remoteAddress}:${socket.remotePort}`, address: socket.remoteAddress ?? '' });
      });
      const srv = server;
      return new Promise<BoundAddress>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen({ host: config.host, port: config.port }, () => {
          srv.off('error', reject);
          const addr = srv.address() as net.AddressInfo;
          resolve({ type: config.type, host: addr.address, port: addr.port });
        });
      });
    },
    stop() {
      const srv = server;
      server = undefined;
      if (!srv) return Promise.resolve();
      return new Promise((resolve) => srv.close(() => resolve()));
    },
  };
}
