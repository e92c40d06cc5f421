import tls from 'node:tls';
import type { ListenerConfig } from '../../config/broker.js';
import { close, listen, PendingSockets, remoteOf, type Listener, type ListenerContext } from './listener.js';
import { acceptTlsSocket, tlsServerOptions, watchHandshakeFailures } from './tls-options.js';

/**
 * MQTT over TLS (`type: mqtts`, default port 8883). The certificate files are read at
 * start; a socket reaches the broker only once its handshake succeeded and, under
 * `requireCertificate`, its client certificate was accepted.
 */
export function createMqttsListener(config: ListenerConfig, context: ListenerContext): Listener {
  if (config.type !== 'mqtts') throw new Error(`mqtts listener given a ${config.type} config`);
  let server: tls.Server | undefined;
  const pending = new PendingSockets();
  return {
    async start(onStream) {
      server = tls.createServer({ ...tlsServerOptions(config, context), noDelay: true }, (socket) => {
        pending.settled(remoteOf(socket));
        const peer = acceptTlsSocket(socket, config, context);
        if (peer) onStream(socket, peer);
      });
      pending.watch(server);
      watchHandshakeFailures(server, config, context);
      return listen(server, config);
    },
    stop() {
      const srv = server;
      server = undefined;
      const closed = close(srv);
      pending.destroyAll();
      return closed;
    },
  };
}
