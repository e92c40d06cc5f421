import net from 'node:net';
import type { ListenerConfig } from '../../config/broker.js';
import { close, listen, remoteOf, type Listener } from './listener.js';

/** MQTT over plain TCP (`type: mqtt`). */
export function createMqttListener(config: ListenerConfig): Listener {
  let server: net.Server | undefined;
  return {
    start(onStream) {
      server = net.createServer({ noDelay: true }, (socket) => {
        onStream(socket, { remote: remoteOf(socket), address: socket.remoteAddress ?? '' });
      });
      return listen(server, config);
    },
    stop() {
      const srv = server;
      server = undefined;
      return close(srv);
    },
  };
}
