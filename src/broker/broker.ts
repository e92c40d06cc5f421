import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { BrokerConfig } from '../config/broker.js';
import type { MessageProperties, PublishHook, QoS } from './types.js';

export interface BrokerDeps {
  log: Logger;
  clock?: Clock;
  /** Sees every accepted PUBLISH; gates PUBACK/PUBREC (see {@link PublishHook}). */
  onPublish?: PublishHook;
}

export interface ListenAddress {
  type: string;
  host: string;
  port: number;
}

/** A message the engine publishes into the broker as if it were a client. */
export interface PublishInput {
  topic: string;
  payload: Buffer | string;
  qos?: QoS;
  retain?: boolean;
  properties?: MessageProperties;
  /** Rule hops that produced it; the router stops cycles with this. */
  hops?: number;
}

export interface Broker {
  /** Opens every configured listener; resolves with the bound addresses (port 0 becomes the real port). */
  listen(): Promise<ListenAddress[]>;
  /** Closes listeners, sends MQTT 5 clients DISCONNECT 0x8B, waits for in-flight hooks. */
  close(): Promise<void>;
  /** Publishes as if from a client; resolves when the publish hook has. */
  publish(input: PublishInput): Promise<void>;
}

export function createBroker(_config: BrokerConfig, _deps: BrokerDeps): Broker {
  throw new Error('not yet');
}
