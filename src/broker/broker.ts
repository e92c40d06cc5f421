import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import type { AclRule, BrokerConfig, ListenerConfig } from '../config/broker.js';
import { parseSharedFilter, validateTopicName } from '../topics/validate.js';
import { AccessControl } from './acl.js';
import { anonymousAllowed, Authenticator, insecureListeners, InsecureListenerError, isLoopback } from './auth.js';
import type { ThrottleOptions } from './auth-throttle.js';
import type { UserTable } from './auth-users.js';
import { Connection } from './connection.js';
import type { BrokerContext, BrokerStats } from './context.js';
import type { BoundAddress, Listener, ListenerContext, ListenerFactory, StreamOrigin } from './listeners/listener.js';
import { ConnectionGate } from './limits.js';
import { LimitLog, limitCounters } from './limits-log.js';
import { createMqttListener } from './listeners/mqtt.js';
import { createMqttsListener } from './listeners/mqtts.js';
import { createWsListener } from './listeners/ws.js';
import { createWssListener } from './listeners/wss.js';
import { RC } from './reason-codes.js';
import type { BrokerPersistence, StoredSession } from './persistence.js';
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
  /** Durable retained messages and persistent sessions; without it they live in memory only. */
  persistence?: BrokerPersistence;
  /** The users of `auth.users`, loaded by the config loader; undefined = no users file. */
  users?: UserTable;
  /** Failed-login throttling; defaults to DEFAULT_THROTTLE. */
  loginThrottle?: ThrottleOptions;
}

export type ListenAddress = BoundAddress;

const noop = (): void => undefined;

/** A message the engine publishes into the broker as if it were a client. */
export interface PublishInput {
  topic: string;
  payload: Buffer | string;
  qos?: QoS;
  retain?: boolean;
  properties?: MessageProperties;
  /** Rule hops that produced it; the router stops cycles with this. */
  hops?: number;
  /** The client id it is published as; default '' (signalbox itself). Bridges use `$bridge/<name>`. */
  clientId?: string;
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
  /**
   * Applies a reloaded users file and ACL: new logins use the users at once, and every
   * session's next delivery is checked against the new ACL. Connected clients stay connected.
   */
  setAccess(users: UserTable | undefined, acl: readonly AclRule[] | undefined): void;
}

/** The built-in listener types, by their `type` in the config. */
export function defaultListenerTypes(): Record<string, ListenerFactory> {
  return { mqtt: createMqttListener, mqtts: createMqttsListener, ws: createWsListener, wss: createWssListener };
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
  /** Hook promises not yet settled; close() waits for them. */
  let pendingHooks = 0;
  let hooksSettled: (() => void) | undefined;
  const untrack = (): void => {
    if (--pendingHooks === 0 && hooksSettled) {
      hooksSettled();
      hooksSettled = undefined;
    }
  };
  const stats: BrokerStats = {
    connectionsAccepted: 0,
    connectionsRejected: 0,
    protocolErrors: 0,
    messagesReceived: 0,
    messagesRouted: 0,
    droppedExpired: 0,
    droppedTooLarge: 0,
    publishHookErrors: 0,
    tlsHandshakeFailures: 0,
    websocketUpgradesRefused: 0,
    authFailures: 0,
    publishDenied: 0,
    subscribeDenied: 0,
    deliveriesDenied: 0,
    ...limitCounters(),
  };
  const limitHits = new LimitLog(stats, log, clock);

  const sessionEvents = {
    dropped(session: Session, reason: 'queue-full' | 'send-buffer' | 'expired' | 'too-large' | 'denied', delivery: Delivery) {
      if (reason === 'denied') {
        stats.deliveriesDenied++;
      } else if (reason === 'queue-full') {
        limitHits.hit('droppedQueueFull', session.clientId);
      } else if (reason === 'send-buffer') {
        limitHits.hit('droppedSendBuffer', session.clientId);
      } else if (reason === 'expired') {
        stats.droppedExpired++;
      } else {
        stats.droppedTooLarge++;
        log.info({ clientId: session.clientId, topic: delivery.message.topic }, 'message larger than the client accepts: not sent to it');
      }
    },
  };

  function track(p: Promise<void>): Promise<void> {
    // Hot path (every gated PUBLISH): a count and one bound callback, not a Set entry and a closure each.
    pendingHooks++;
    p.then(untrack, untrack);
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

  const persistence = deps.persistence;

  /** Publishes a will now, or schedules it for `publishAt` (and stores it when the session is stored). */
  function scheduleWill(session: Session, message: Message, publisher: PublisherInfo, publishAt: number): void {
    const timer = clock.setTimeout(() => {
      if (session.pendingWill?.timer !== timer) return;
      session.pendingWill = undefined;
      if (session.stored) persistence!.deleteWill(session.clientId);
      publishWill(message, publisher);
    }, Math.max(0, publishAt - clock.now()));
    session.pendingWill = { message, publisher, timer, publishAt };
    if (session.stored) persistence!.saveWill(session.clientId, { message, publisher, publishAt });
  }

  /** Starts the expiry of an offline session: it ends `expiryS` after `since`. */
  function scheduleExpiry(session: Session, since: number): void {
    const remaining = since + session.expiryS * 1000 - clock.now();
    session.expiryTimer = clock.setTimeout(() => {
      session.expiryTimer = undefined;
      if (!session.sender) ctx.endSession(session);
    }, Math.min(Math.max(remaining, 0), 0x7fff_ffff));
  }

  const ctx: BrokerContext & { closing: boolean; acl: AccessControl | undefined } = {
    config,
    log,
    clock,
    sessions: new Map(),
    connections: new Set(),
    subscriptions: new SubscriptionIndex(),
    retained: new RetainedStore(config.limits.maxRetained, config.limits.maxRetainedBytes),
    persistence,
    stats,
    auth: new Authenticator(config.auth, deps.users, { clock, log, throttle: deps.loginThrottle }),
    acl: config.acl ? new AccessControl(config.acl) : undefined,
    limitHits,
    gate: new ConnectionGate(config.limits, () => clock.now()),
    closing: false,

    accept(message, publisher) {
      if (message.retain && !ctx.retained.admits(message)) {
        // Over maxRetained / maxRetainedBytes a new topic is not retained; the message is
        // still routed and acknowledged (as EMQX does), and the refusal counted and logged.
        limitHits.hit('retainedRefused', publisher.clientId);
      } else if (message.retain) {
        if (persistence) {
          // The live retained message changes only once the new one is on disk, so a refused
          // publish (storage full) never serves a value a restart would take back.
          persistence.setRetained(message);
          ctx.retained.hold(message);
          persistence.pending()!.then(
            () => ctx.retained.settle(message, true),
            () => ctx.retained.settle(message, false),
          );
        } else {
          ctx.retained.set(message);
        }
      }
      stats.messagesRouted += ctx.subscriptions.route(message);
      // Everything routing wrote (retained, deliveries to persistent sessions) commits in
      // the current batch; the hook's own writes (history, outbox) join the same batch.
      const stored = persistence?.pending();
      const result = hook?.(message, publisher);
      if (result) return track(stored ? Promise.all([stored, result]).then(noop) : result);
      return stored;
    },

    createSession(clientId) {
      const session = new Session(clientId, config.limits.maxQueued, sessionEvents, () => clock.now(), persistence);
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
      if (session.stored) {
        persistence!.deleteSession(session.clientId);
        session.stored = false;
      }
      if (ctx.sessions.get(session.clientId) === session) ctx.sessions.delete(session.clientId);
    },

    connectionEnded(conn) {
      const session = conn.session;
      if (!session) return;
      if (session.sender === conn) session.detach();
      if (ctx.closing) return;
      const publisher: PublisherInfo = { clientId: conn.clientId, username: conn.username, protocolVersion: conn.protocolVersion };
      const now = clock.now();
      if (!conn.takenOver && session.stored) {
        // The expiry interval may have changed at DISCONNECT; 0 ends the session below.
        if (session.expiryS > 0) persistence!.saveSession(session.clientId, session.expiryS, now, session.username);
      }
      if (conn.will && !conn.discardWill) {
        if (conn.willDelayS > 0 && session.expiryS > 0) scheduleWill(session, conn.will, publisher, now + conn.willDelayS * 1000);
        else publishWill(conn.will, publisher);
      }
      if (conn.takenOver) return; // the new connection owns the session now
      if (session.expiryS === 0) {
        ctx.endSession(session);
        return;
      }
      scheduleExpiry(session, now);
    },
  };

  /** Restores retained messages and persistent sessions the previous run stored. */
  function restore(): void {
    if (!persistence) return;
    const { retained, sessions } = persistence.load();
    const now = clock.now();
    for (const message of retained) ctx.retained.set(message);
    // Every session first, then the expired ones end: a will they publish must reach the
    // subscribers of sessions restored after them too.
    const ended = sessions.map((stored) => restoreSession(stored, now)).filter((r) => r.since + r.session.expiryS * 1000 <= now);
    for (const { session } of ended) ctx.endSession(session); // publishes a will still waiting [MQTT-3.1.2-8]
    const expired = ended.length;
    if (retained.length > 0 || sessions.length > 0) {
      log.info({ retained: retained.length, sessions: sessions.length - expired, expiredSessions: expired }, 'restored broker state');
    }
  }

  /** Brings one stored session back (the caller ends it when it had expired). */
  function restoreSession(stored: StoredSession, now: number): { session: Session; since: number } {
    const session = ctx.createSession(stored.clientId);
    session.username = stored.username;
    session.ownerKnown = stored.ownerKnown;
    session.acl = ctx.acl?.forClient(stored.username, stored.clientId);
    session.expiryS = stored.expiryS;
    session.stored = true;
    // A session that was connected when signalbox stopped starts its expiry now.
    const since = stored.disconnectedAt ?? now;
    for (const s of stored.subscriptions) {
      const shared = parseSharedFilter(s.filter);
      const group = shared && !('error' in shared) ? shared : undefined;
      const sub = { session, filter: s.filter, topicFilter: group ? group.filter : s.filter, group: group?.group, qos: s.qos, noLocal: s.noLocal, retainAsPublished: s.retainAsPublished, retainHandling: s.retainHandling, subscriptionId: s.subscriptionId };
      session.subscriptions.set(s.filter, sub);
      ctx.subscriptions.add(sub);
    }
    session.restore(stored.deliveries, stored.inboundQos2);
    if (stored.will) scheduleWill(session, stored.will.message, stored.will.publisher, stored.will.publishAt);
    if (since + stored.expiryS * 1000 > now) {
      if (stored.disconnectedAt === undefined) persistence!.saveSession(stored.clientId, stored.expiryS, now, stored.username);
      scheduleExpiry(session, since);
    }
    return { session, since };
  }

  restore();

  function onStream(stream: Duplex, origin: StreamOrigin): void {
    if (ctx.closing) {
      stream.destroy();
      return;
    }
    // Refused before any byte is read: no CONNACK, since the protocol level is not known yet.
    const refusal = ctx.gate.admit(origin.address, ctx.connections.size);
    if (refusal !== undefined) {
      limitHits.hit(refusal, origin.remote);
      stream.destroy();
      return;
    }
    ctx.connections.add(new Connection(ctx, stream, origin));
  }

  return {
    stats,
    get connectionCount() {
      return ctx.connections.size;
    },

    setAccess(users, acl) {
      ctx.auth.setUsers(users);
      ctx.acl = acl ? new AccessControl(acl) : undefined;
      for (const session of ctx.sessions.values()) session.acl = ctx.acl?.forClient(session.username, session.clientId);
    },

    async listen() {
      // Secure by default: a listener reachable from the network needs authentication.
      const insecure = insecureListeners(config);
      if (insecure.length > 0) {
        throw new InsecureListenerError(`${insecure.map((i) => `broker.listeners[${i.index}]: ${i.message}`).join('; ')}; configure broker.auth.users, or set anonymous: true on it`);
      }
      for (const lc of config.listeners as ListenerConfig[]) {
        if (!isLoopback(lc.host) && anonymousAllowed(lc, config.auth)) {
          log.warn({ type: lc.type, host: lc.host }, 'anonymous clients may connect to this listener from the network');
        }
      }
      const bound: BoundAddress[] = [];
      const listenerContext: ListenerContext = { log, stats, maxPacketSize: config.limits.maxPacketSize, handshakeTimeoutMs: config.connectTimeoutMs };
      for (const lc of config.listeners as ListenerConfig[]) {
        const factory = listenerTypes[lc.type];
        if (!factory) throw new Error(`unknown listener type "${lc.type}"`);
        const listener = factory(lc, listenerContext);
        const address = await listener.start((stream, peer) => onStream(stream, { ...peer, listener: lc }));
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
      if (pendingHooks > 0) await new Promise<void>((resolve) => (hooksSettled = resolve));
      limitHits.close();
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
        clientId: input.clientId ?? '',
        timestamp: now,
        expiresAt: interval === undefined ? undefined : now + interval * 1000,
        hops: input.hops ?? 0,
      };
      try {
        return Promise.resolve(ctx.accept(message, { clientId: message.clientId, protocolVersion: 5 }));
      } catch (err) {
        return Promise.reject(err);
      }
    },
  };
}
