import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { WebSocketServer } from 'ws';
import type { ListenerConfig, TlsListenerConfig } from '../../config/broker.js';
import { close, describeListener, listen, PendingSockets, remoteOf, type Listener, type ListenerContext, type StreamPeer } from './listener.js';
import { acceptTlsSocket, tlsServerOptions, watchHandshakeFailures } from './tls-options.js';
import { WebSocketStream } from './websocket-stream.js';

/**
 * WebSocket frame header bytes allowed on top of `maxPacketSize` (2-14 bytes per frame):
 * a frame carrying one packet of the largest accepted size still fits.
 */
export const FRAME_SLACK_BYTES = 16;

/** WebSocket subprotocols accepted, preferred first: `mqtt` [MQTT-6.0.0-3], and `mqttv3.1` of older clients. */
export const MQTT_SUBPROTOCOLS = ['mqtt', 'mqttv3.1'] as const;

/** Headers one upgrade request may carry (Node's default is 2000). */
const MAX_HEADERS = 100;

type WebSocketListenerConfig = Extract<ListenerConfig, { type: 'ws' | 'wss' }>;

/**
 * MQTT over WebSocket (`ws`, and `wss` with TLS) on one HTTP path. The HTTP server refuses
 * everything but a WebSocket upgrade on that path offering the `mqtt` subprotocol, and drops
 * a request whose headers are not complete within the handshake timeout. Frames larger than
 * `maxPacketSize` (plus header slack) are refused from their header, before their body is
 * buffered; permessage-deflate is off, so a small frame cannot inflate into a large one.
 */
export function createWebSocketListener(config: WebSocketListenerConfig, context: ListenerContext): Listener {
  let server: http.Server | undefined;
  const pending = new PendingSockets();
  const name = describeListener(config);
  const timeoutMs = context.handshakeTimeoutMs;

  /** Answers an HTTP request or upgrade with `status` and closes the connection. */
  const refuse = (socket: Duplex, status: number, reason: string, remote: string): void => {
    context.stats.websocketUpgradesRefused++;
    context.log.debug({ listener: name, remote, status, reason }, 'WebSocket upgrade refused');
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    socket.once('finish', () => socket.destroy());
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(reason)}\r\n\r\n${reason}`);
  };

  return {
    async start(onStream) {
      const secure = config.type === 'wss';
      const options: http.ServerOptions = {
        noDelay: true,
        // Timeouts are checked on this interval, so it bounds how late a slow request is dropped.
        connectionsCheckingInterval: Math.min(1000, timeoutMs),
        headersTimeout: timeoutMs,
        requestTimeout: timeoutMs,
        maxHeaderSize: 16 * 1024,
      };
      const srv = secure ? https.createServer({ ...options, ...tlsServerOptions(config as TlsListenerConfig, context) }) : http.createServer(options);
      server = srv;
      pending.watch(srv);
      srv.maxHeadersCount = MAX_HEADERS;
      srv.keepAliveTimeout = 0;
      const wss = new WebSocketServer({
        noServer: true,
        maxPayload: context.maxPacketSize + FRAME_SLACK_BYTES,
        perMessageDeflate: false,
        clientTracking: false,
        handleProtocols: (offered: Set<string>) => MQTT_SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
      });
      // Under requireCertificate the client certificate is checked before any HTTP is read.
      const peers = new WeakMap<object, StreamPeer>();
      if (secure) {
        const tlsConfig = config as TlsListenerConfig;
        watchHandshakeFailures(srv as https.Server, tlsConfig, context);
        srv.on('secureConnection', (socket: TLSSocket) => {
          const peer = acceptTlsSocket(socket, tlsConfig, context);
          if (peer) peers.set(socket, peer);
        });
      }

      srv.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
        const onPath = pathOf(req.url) === config.path;
        context.stats.websocketUpgradesRefused++;
        context.log.debug({ listener: name, remote: remoteOf(req.socket), url: req.url }, 'plain HTTP request refused');
        res.writeHead(onPath ? 426 : 404, { Connection: 'close', 'Content-Type': 'text/plain', ...(onPath ? { Upgrade: 'websocket' } : {}) });
        res.end(onPath ? 'MQTT over WebSocket: upgrade with subprotocol mqtt\n' : 'Not Found\n');
      });
      srv.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
        const remote = remoteOf(socket as Duplex & { remoteAddress?: string; remotePort?: number });
        if (err.code === 'ECONNRESET') {
          socket.destroy();
          return;
        }
        refuse(socket, err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400, err.code ?? err.message, remote);
      });
      srv.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        const remote = remoteOf(req.socket);
        if (pathOf(req.url) !== config.path) return refuse(socket, 404, `path must be ${config.path}`, remote);
        const offered = req.headers['sec-websocket-protocol'];
        if (offered !== undefined) {
          const names = offered.split(',').map((p) => p.trim());
          if (!names.some((n) => (MQTT_SUBPROTOCOLS as readonly string[]).includes(n))) {
            return refuse(socket, 400, `subprotocol must be one of ${MQTT_SUBPROTOCOLS.join(', ')}`, remote);
          }
        }
        const peer = secure ? peers.get(req.socket) : { remote, address: req.socket.remoteAddress ?? '' };
        if (!peer) {
          socket.destroy();
          return;
        }
        wss.handleUpgrade(req, socket, head, (ws) => {
          pending.settled(remote);
          onStream(new WebSocketStream(ws), peer);
        });
      });
      return listen(srv, config);
    },
    stop() {
      const srv = server;
      server = undefined;
      const closed = close(srv);
      // Half-sent HTTP requests and handshakes must not hold the close up.
      pending.destroyAll();
      return closed;
    },
  };
}

/** The path of a request URL, without the query. */
function pathOf(url: string | undefined): string {
  const q = (url ?? '').indexOf('?');
  return q === -1 ? (url ?? '') : (url ?? '').slice(0, q);
}
