import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import type { BrokerConfig, ListenerConfig } from '../config/broker.js';
import { validateTopicName } from '../topics/validate.js';
import { Connection } from './connection.js';
import type { BrokerContext, BrokerStats } from './context.js';
import { createMqttListener } from './listeners/mqtt.js';
import type { BoundAddress, Listener, ListenerFactory } from './listeners/listener.js';
import { RC } from './reason-codes.js';
import { RetainedStore } from './retained.js';
import { Session, type Delivery } from './session.js';
import { SubscriptionIndex } from './subscriptions.js';
import type { Message, MessageProperties, PublisherInfo, PublishHook, QoS } from './types.js';

export interface BrokerDeps {
  log: Logger;
  clock?: Clock;
  /** Sees every accepted PUBLISH; gates PUBACK/PUBREC (see {@link PublishHook}). */
  onPublish?: PublishHook;
  /** Listener types by `type`; defaults to the built-in ones. */
  listenerTypes?: Record<string, ListenerFactory>;
}

export type ListenAddress = BoundAddress;

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
  /**
   * Shuts down: stops accepting, sends MQTT 5 clients DISCONNECT 0x8B (others see the socket
   * close), waits for publish hooks still running. Wills are not published on shutdown.
   */
  close(): Promise<void>;
  /**
   * Publishes as if from a client: retained, routed to subscribers, and handed to the publish
   * hook. Resolves when the hook has; rejects on an invalid topic.
   */
  publish(input: PublishInput): Promise<void>;
  /** Live counters. */
  readonly stats: Readonly<BrokerStats>;
  /** Number of open client connections. */
  readonly connectionCount: number;
}

/** The built-in listener types. TLS and WebSocket join this table. */
export function defaultListenerTypes(): Record<string, ListenerFactory> {
  return { mqtt: createMqttListener };
}

/**
 * Creates the MQTT broker. Nothing listens until `listen()`. Everything it needs comes in
 * `deps`, so several brokers can run in one process (tests do).
 */
export function createBroker(config: BrokerConfig, deps: BrokerDeps): Broker {
  const log = deps.log;
  const clock = deps.clock ?? systemClock;
  const hook = deps.onPublish;
  const listenerTypes = deps.listenerTypes ?? defaultListenerTypes();
  const listeners: Listener[] = [];
  const pendingHooks = new Set<Promise<void>>();
  const stats: BrokerStats = {
    connectionsAccepted: 0,
    connectionsRejected: 0,
    protocolErrors: 0,
    messagesReceived: 0,
    messagesRouted: 0,
    droppedQueueFull: 0,
    droppedExpired: 0,
    droppedTooLarge: 0,
    publishHookErrors: 0,
  };

  const sessionEvents = {
    dropped(session: Session, reason: 'queue-full' | 'expired' | 'too-large', delivery: Delivery) {
      if (reason === 'queue-full') {
        stats.droppedQueueFull++;
        log.warn({ clientId: session.clientId, topic: delivery.message.topic, maxQueued: config.limits.maxQueued }, 'queue full: dropped the oldest queued message');
      } else if (reason === 'expired') {
        stats.droppedExpired++;
      } else {
        stats.droppedTooLarge++;
        log.info({ clientId: session.clientId, topic: delivery.message.topic }, 'message larger than the client accepts: not sent to it');
      }
    },
  };

  function track(p: Promise<void>): Promise<void> {
    pendingHooks.add(p);
    const done = () => pendingHooks.delete(p);
    p.then(done, done);
    return p;
  }

  function publishWill(message: Message, publisher: PublisherInfo): void {
    const now = clock.now();
    const interval = message.properties?.messageExpiryInterval;
    const will: Message = { ...message, timestamp: now, expiresAt: interval === undefined ? undefined : now + interval * 1000 };
    log.debug({ clientId: publisher.clientId, topic: will.topic }, 'publishing will');
    const gate = ctx.accept(will, publisher);
    if (gate) gate.catch((err: unknown) => log.warn({ err, clientId: publisher.clientId }, 'will not stored: the publish hook failed'));
  }

  const ctx: BrokerContext & { closing: boolean } = {
    config,
    log,
    clock,
    sessions: new Map(),
    connections: new Set(),
    subscriptions: new SubscriptionIndex(),
    retained: new RetainedStore(),
    stats,
    closing: false,

    accept(message, publisher) {
      if (message.retain) ctx.retained.set(message);
      stats.messagesRouted += ctx.subscriptions.route(message);
      if (!hook) return undefined;
      const result = hook(message, publisher);
      return result ? track(result) : undefined;
    },

    createSession(clientId) {
      const session = new Session(clientId, config.limits.maxQueued, sessionEvents, () => clock.now());
      ctx.sessions.set(clientId, session);
      return session;
    },

    endSession(session) {
      if (session.expiryTimer) clock.clearTimeout(session.expiryTimer);
      session.expiryTimer = undefined;
      const will = session.pendingWill;
      if (will) {
        clock.clearTimeout(will.timer);
        session.pendingWill = undefined;
        publishWill(will.message, will.publisher); // [MQTT-3.1.2-8]
      }
      for (const sub of session.subscriptions.values()) ctx.subscriptions.remove(sub);
      session.subscriptions.clear();
      session.clear();
      if (ctx.sessions.get(session.clientId) === session) ctx.sessions.delete(session.clientId);
    },

    connectionEnded(conn) {
      const session = conn.session;
      if (!session) return;
      if (session.sender === conn) session.detach();
      if (ctx.closing) return;
      const publisher: PublisherInfo = { clientId: conn.clientId, username: conn.username, protocolVersion: conn.protocolVersion };
      if (conn.will && !conn.discardWill) {
        const willDelay = conn.willDelayS;
        if (willDelay > 0 && session.expiryS > 0) {
          const message = conn.will;
          const timer = clock.setTimeout(() => {
            if (session.pendingWill?.timer !== timer) return;
            session.pendingWill = undefined;
            publishWill(message, publisher);
          }, willDelay * 1000);
          session.pendingWill = { message, publisher, timer };
        } else {
          publishWill(conn.will, publisher);
        }
      }
      if (conn.takenOver) return; // the new connection owns the session now
      if (session.expiryS === 0) {
        ctx.endSession(session);
        return;
      }
      session.expiryTimer = clock.setTimeout(() => {
        session.expiryTimer = undefined;
        if (!session.sender) ctx.endSession(session);
      }, Math.min(session.expiryS * 1000, 0x7fff_ffff));
    },
  };

  function onStream(stream: Duplex, remote: string): void {
    if (ctx.closing) {
      stream.destroy();
      return;
    }
    ctx.connections.add(new Connection(ctx, stream, remote));
  }

  return {
    stats,
    get connectionCount() {
      return ctx.connections.size;
    },

    async listen() {
      const bound: BoundAddress[] = [];
      for (const lc of config.listeners as ListenerConfig[]) {
        const factory = listenerTypes[lc.type];
        if (!factory) throw new Error(`unknown listener type "${lc.type}"`);
        const listener = factory(lc);
        const address = await listener.start(onStream);
        listeners.push(listener);
        bound.push(address);
        log.info({ type: address.type, host: address.host, port: address.port }, 'listening');
      }
      return bound;
    },

    async close() {
      if (ctx.closing) return;
      ctx.closing = true;
      // net.Server.close() waits for every accepted socket, so disconnect clients before awaiting it.
      const stopped = Promise.all(listeners.splice(0).map((l) => l.stop()));
      for (const conn of [...ctx.connections]) conn.disconnect(RC.serverShuttingDown);
      await stopped;
      await Promise.allSettled([...pendingHooks]);
      for (const session of ctx.sessions.values()) {
        if (session.expiryTimer) clock.clearTimeout(session.expiryTimer);
        if (session.pendingWill) clock.clearTimeout(session.pendingWill.timer);
      }
      log.info('broker closed');
    },

    publish(input) {
      const invalid = validateTopicName(input.topic);
      if (invalid) return Promise.reject(new Error(`cannot publish to "${input.topic}": ${invalid}`));
      const now = clock.now();
      const interval = input.properties?.messageExpiryInterval;
      const message: Message = {
        topic: input.topic,
        payload: typeof input.payload === 'string' ? Buffer.from(input.payload) : input.payload,
        qos: input.qos ?? 0,
        retain: input.retain ?? false,
        properties: input.properties,
        clientId: '',
        timestamp: now,
        expiresAt: interval === undefined ? undefined : now + interval * 1000,
        hops: input.hops ?? 0,
      };
      try {
        return Promise.resolve(ctx.accept(message, { clientId: '', protocolVersion: 5 }));
      } catch (err) {
        return Promise.reject(err);
      }
    },
  };
}
