import type { Duplex } from 'node:stream';
import type { ListenerConfig } from '../../config/broker.js';

/** Where a listener is bound, after `start()`. */
export interface BoundAddress {
  type: string;
  host: string;
  port: number;
}

/**
 * A transport that accepts client byte streams: TCP today; TLS and WebSocket plug in
 * beside it. The broker hands each stream to a new Connection; the listener knows nothing
 * of MQTT.
 */
export interface Listener {
  /** Binds; resolves with the real address (port 0 becomes the OS-chosen port). */
  start(onStream: (stream: Duplex, remote: string) => void): Promise<BoundAddress>;
  /** Stops accepting new streams; existing ones are the broker's to close. */
  stop(): Promise<void>;
}

/** Builds a listener from its config entry. */
export type ListenerFactory = (config: ListenerConfig) => Listener;
