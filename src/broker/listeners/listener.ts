import type { Duplex } from 'node:stream';
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
   * The identity from a verified client certificate (TLS listeners that ask for one), used as
   * the username when the listener says so.
   */
  readonly certificateUsername?: string;
}

/** Where a connection came from: the peer and the listener (config entry) that accepted it. */
export interface StreamOrigin extends StreamPeer {
  readonly listener: ListenerConfig;
}

/**
 * A transport that accepts client byte streams: TCP today; TLS and WebSocket plug in
 * beside it. The broker hands each stream to a new Connection; the listener knows nothing
 * of MQTT.
 */
export interface Listener {
  /** Binds; resolves with the real address (port 0 becomes the OS-chosen port). */
  start(onStream: (stream: Duplex, peer: StreamPeer) => void): Promise<BoundAddress>;
  /** Stops accepting new streams; existing ones are the broker's to close. */
  stop(): Promise<void>;
}

/** Builds a listener from its config entry. */
export type ListenerFactory = (config: ListenerConfig) => Listener;
