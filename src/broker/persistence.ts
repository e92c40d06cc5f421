import type { Delivery } from './session.js';
import type { Message, PublisherInfo, QoS } from './types.js';

/** A subscription as stored. */
export interface StoredSubscription {
  filter: string;
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId: number | undefined;
}

/** A QoS 1/2 message owed to a persistent session: queued, or sent and not yet acknowledged. */
export interface StoredDelivery extends Delivery {
  seq: number;
  /** 'queued': not sent yet; 'publish': sent, waiting for PUBACK/PUBREC; 'pubrel': PUBREL sent. */
  state: 'queued' | 'publish' | 'pubrel';
  packetId: number;
}

/** A persistent session as the previous run left it. */
export interface StoredSession {
  clientId: string;
  expiryS: number;
  /** The user who owns it; undefined for an anonymous client. */
  username: string | undefined;
  /** False for a session stored before owners were recorded (its `username` means nothing). */
  ownerKnown: boolean;
  /** When its connection ended (ms); undefined when it was connected when signalbox stopped. */
  disconnectedAt: number | undefined;
  subscriptions: StoredSubscription[];
  /** In `seq` order. */
  deliveries: StoredDelivery[];
  inboundQos2: number[];
  /** A will waiting for its delay. */
  will: { message: Message; publisher: PublisherInfo; publishAt: number } | undefined;
}

/**
 * Where the broker keeps what must survive a restart: retained messages and persistent
 * sessions (clean sessions stay in memory). Writes are queued into the current group-commit
 * batch and return nothing; `pending()` gives the promise of the commit that will hold
 * everything written so far, which the broker waits for before PUBACK/PUBREC.
 *
 * Without a persistence (the default), the broker keeps all of it in memory only.
 */
export interface BrokerPersistence {
  /** Everything stored, read once when the broker is created. */
  load(): { retained: Message[]; sessions: StoredSession[] };
  /** Stores or replaces a topic's retained message; an empty payload deletes it. */
  setRetained(message: Message): void;
  /** Creates or updates a session row; `disconnectedAt` undefined while connected; `username` is its owner (undefined: anonymous). */
  saveSession(clientId: string, expiryS: number, disconnectedAt: number | undefined, username: string | undefined): void;
  /** Deletes a session and everything it owns. */
  deleteSession(clientId: string): void;
  saveSubscription(clientId: string, sub: StoredSubscription): void;
  deleteSubscription(clientId: string, filter: string): void;
  /** Inserts or updates one owed message. */
  saveDelivery(clientId: string, delivery: StoredDelivery): void;
  deleteDelivery(clientId: string, seq: number): void;
  addInboundQos2(clientId: string, packetId: number): void;
  deleteInboundQos2(clientId: string, packetId: number): void;
  saveWill(clientId: string, will: { message: Message; publisher: PublisherInfo; publishAt: number }): void;
  deleteWill(clientId: string): void;
  /** The commit holding every write made so far, or undefined when nothing waits. */
  pending(): Promise<void> | undefined;
}
