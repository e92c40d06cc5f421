import type { QoS, UserProperties } from 'mqtt-packet';

export type { QoS, UserProperties };

/** MQTT 5 PUBLISH properties a message carries from its publisher to its subscribers. */
export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  messageExpiryInterval?: number;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  userProperties?: UserProperties;
}

/**
 * One application message as the broker routes it. Immutable once accepted: subscribers
 * share the same object, so nothing downstream may change it.
 */
export interface Message {
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly properties?: MessageProperties;
  /** Client id of the publisher; '' for messages published by signalbox itself. */
  readonly clientId: string;
  /** When the broker accepted it, ms since the epoch. */
  readonly timestamp: number;
  /** When it expires (ms since the epoch), from MQTT 5 Message Expiry Interval; undefined = never. */
  readonly expiresAt?: number;
  /** How many rule hops produced this message (0 for a client's own publish). */
  readonly hops: number;
}

/** What the broker knows about the publisher of a message. */
export interface PublisherInfo {
  clientId: string;
  username?: string;
  protocolVersion: 3 | 4 | 5;
}

/**
 * Called for every accepted PUBLISH, after validation, once the message has been routed to
 * subscribers. For QoS 1 and 2 the PUBACK / PUBREC is sent only when the returned promise
 * resolves; a rejection is reported to an MQTT 5 publisher as reason 0x80 and closes an
 * MQTT 3.1.1 publisher's connection, so either way the client resends.
 */
export type PublishHook = (message: Message, publisher: PublisherInfo) => void | Promise<void>;
