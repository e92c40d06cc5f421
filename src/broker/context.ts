import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { AccessControl } from './acl.js';
import type { Authenticator } from './auth.js';
import type { BrokerConfig } from '../config/broker.js';
import type { Connection } from './connection.js';
import type { ListenerStats } from './listeners/listener.js';
import type { ConnectionGate } from './limits.js';
import type { LimitCounters, LimitLog } from './limits-log.js';
import type { BrokerPersistence } from './persistence.js';
import type { RetainedStore } from './retained.js';
import type { Session } from './session.js';
import type { SubscriptionIndex } from './subscriptions.js';
import type { Message, PublisherInfo } from './types.js';

/**
 * Counters the broker keeps (its listeners' among them); exposed for logs, status output and
 * metrics. The limit counters (see {@link LimitCounters}) count every time a configured limit
 * was hit.
 */
export interface BrokerStats extends ListenerStats, LimitCounters {
  connectionsAccepted: number;
  connectionsRejected: number;
  protocolErrors: number;
  messagesReceived: number;
  messagesRouted: number;
  droppedExpired: number;
  droppedTooLarge: number;
  publishHookErrors: number;
  /** CONNECTs refused for credentials, anonymous access, a will topic or a foreign session. */
  authFailures: number;
  /** PUBLISHes the ACL refused (dropped, or MQTT 5 reason 0x87). */
  publishDenied: number;
  /** SUBSCRIBE filters the ACL refused. */
  subscribeDenied: number;
  /** Deliveries not sent because the receiving client may not read the topic. */
  deliveriesDenied: number;
}

/**
 * What packet handlers see of the broker. Handlers are plain functions of
 * (context, connection, packet); all shared state lives here.
 */
export interface BrokerContext {
  readonly config: BrokerConfig;
  readonly log: Logger;
  readonly clock: Clock;
  readonly sessions: Map<string, Session>;
  readonly connections: Set<Connection>;
  readonly subscriptions: SubscriptionIndex;
  readonly retained: RetainedStore;
  /** Durable storage of retained messages and persistent sessions; undefined = memory only. */
  readonly persistence: BrokerPersistence | undefined;
  readonly stats: BrokerStats;
  /** Checks CONNECT credentials. */
  readonly auth: Authenticator;
  /** The configured ACL; undefined when none is (everything allowed). */
  readonly acl: AccessControl | undefined;
  /** Counts a limit hit in `stats` and logs it, at most one warning per interval. */
  readonly limitHits: LimitLog;
  /** Connection caps checked at accept; a connection leaves it (release) at CONNECT or close. */
  readonly gate: ConnectionGate;
  /** True once close() began: new connections are refused. */
  readonly closing: boolean;
  /**
   * Takes an accepted message: updates retained state, routes it to subscribers, hands it to
   * the publish hook. Returns the hook's promise (undefined when the hook is synchronous).
   */
  accept(message: Message, publisher: PublisherInfo): void | Promise<void>;
  /** Creates a session and registers it under its client id. */
  createSession(clientId: string): Session;
  /**
   * Ends a session for good: its subscriptions go, and a will waiting on its delay is
   * published now [MQTT-3.1.2-8].
   */
  endSession(session: Session): void;
  /**
   * Called once when a connection that got past CONNECT closes, whatever the cause: detaches
   * its session, publishes or schedules its will, and starts the session's expiry.
   */
  connectionEnded(connection: Connection): void;
}
