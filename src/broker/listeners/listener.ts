import type { AddressInfo, Server, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ListenerConfig } from '../../config/broker.js';

/** Where a listener is bound, after `start()`. */
export interface BoundAddress {
  type: string;
  host: string;
  port: number;
}

/** What a listener knows about a stream it accepted. */
export interface StreamPeer {
  /** `address:port` of the peer, for logs. */
  readonly remote: string;
  /** The peer's IP address (per-IP limits and login throttling key on it). */
  readonly address: string;
  /**
   * The identity from a verified client certificate (TLS listeners with `requireCertificate`
   * and `certificateUsername` other than `none`), used as the username when the listener says so.
   */
  readonly certificateUsername?: string;
}

/** Where a connection came from: the peer and the listener (config entry) that accepted it. */
export interface StreamOrigin extends StreamPeer {
  readonly listener: ListenerConfig;
}

/**
 * Streams refused before they reached MQTT; the broker shows them among its stats. None of
 * them counts as a connection.
 */
export interface ListenerStats {
  /** TLS handshakes that failed (plaintext, old TLS version, timeout) or whose client certificate was refused. */
  tlsHandshakeFailures: number;
  /** HTTP requests a WebSocket listener refused: wrong path, not an upgrade, bad subprotocol, header timeout. */
  websocketUpgradesRefused: number;
}

/** What a listener gets from the broker besides its own config entry. */
export interface ListenerContext {
  readonly log: Logger;
  /** Counters the listener increments. */
  readonly stats: ListenerStats;
  /** The broker's `limits.maxPacketSize`, bytes: WebSocket listeners refuse larger frames. */
  readonly maxPacketSize: number;
  /**
   * The broker's `connectTimeoutMs`: a TLS handshake or an HTTP upgrade request must be
   * complete within it, so a peer cannot hold a half-open handshake for long.
   */
  readonly handshakeTimeoutMs: number;
}

/**
 * A transport that accepts client byte streams (TCP, TLS, WebSocket). The broker hands each
 * stream to a new Connection; the listener knows nothing of MQTT.
 */
export interface Listener {
  /**
   * Binds; resolves with the real address (port 0 becomes the OS-chosen port). Rejects with
   * a {@link ListenerError} when its files cannot be used, or with the bind error.
   */
  start(onStream: (stream: Duplex, peer: StreamPeer) => void): Promise<BoundAddress>;
  /** Stops accepting new streams; existing ones are the broker's to close. */
  stop(): Promise<void>;
}

/** Builds a listener from its config entry. */
export type ListenerFactory = (config: ListenerConfig, context: ListenerContext) => Listener;

/** Every code a {@link ListenerError} can carry; the README lists each. */
export const LISTENER_ERROR_CODES = {
  SB_ERR_LISTENER_TLS: "A TLS listener's certificate, key or CA file cannot be read or used (missing, unreadable, not PEM, wrong passphrase, key not matching the certificate).",
} as const;

export type ListenerErrorCode = keyof typeof LISTENER_ERROR_CODES;

/** A listener that cannot start; the message names the listener and the file. Never retryable. */
export class ListenerError extends Error {
  readonly retryable = false;
  constructor(
    readonly code: ListenerErrorCode,
    /** `type host:port` of the listener, for messages. */
    readonly listener: string,
    message: string,
  ) {
    super(`${listener}: ${message}`);
    this.name = 'ListenerError';
  }
}

/** `mqtts 0.0.0.0:8883`: how messages name a listener. */
export function describeListener(config: ListenerConfig): string {
  return `${config.type} listener ${config.host}:${config.port}`;
}

/** `address:port` of a socket's peer, for logs. */
export function remoteOf(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string {
  return `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
}

/** Listens on `server` at the listener's host and port; resolves with the bound address. */
export function listen(server: Server, config: ListenerConfig): Promise<BoundAddress> {
  return new Promise<BoundAddress>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: config.host, port: config.port }, () => {
      server.off('error', reject);
      const addr = server.address() as AddressInfo;
      resolve({ type: config.type, host: addr.address, port: addr.port });
    });
  });
}

/** Closes `server` (resolves at once when it is undefined). */
export function close(server: Server | undefined): Promise<void> {
  if (!server) return Promise.resolve();
  return new Promise((resolve) => server.close(() => resolve()));
}

/**
 * The TCP connections of a server that have not reached the broker yet (TLS handshake or
 * HTTP upgrade in progress), keyed by remote `address:port` (unique per listening port).
 * On stop they are destroyed, so a stalled handshake cannot hold the close up; connections
 * already handed over are the broker's to close gracefully.
 */
export class PendingSockets {
  private readonly sockets = new Map<string, Socket>();

  /** Tracks every new TCP connection of `server`. */
  watch(server: Server): void {
    server.on('connection', (socket: Socket) => {
      const remote = remoteOf(socket);
      this.sockets.set(remote, socket);
      socket.once('close', () => {
        if (this.sockets.get(remote) === socket) this.sockets.delete(remote);
      });
    });
  }

  /** The connection from `remote` reached the broker (or was refused and destroyed). */
  settled(remote: string): void {
    this.sockets.delete(remote);
  }

  /** Destroys every connection still pending. */
  destroyAll(): void {
    for (const socket of this.sockets.values()) socket.destroy();
    this.sockets.clear();
  }
}
