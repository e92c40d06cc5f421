import { randomUUID } from 'node:crypto';
import type { IConnackPacket, IConnectPacket } from 'mqtt-packet';
import { validateTopicName } from '../../topics/validate.js';
import type { AuthVerdict } from '../auth.js';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { CONNACK_V3, RC } from '../reason-codes.js';
import type { Message, MessageProperties } from '../types.js';

/**
 * CONNECT: checks the protocol, client id, keepalive and will, takes over or resumes the
 * session, answers CONNACK, then resends what the session still owes the client.
 */
export function handleConnect(ctx: BrokerContext, conn: Connection, packet: IConnectPacket): void {
  const version = packet.protocolVersion ?? 4;
  const limits = ctx.config.limits;
  // [MQTT-3.1.2-1] "MQIsdp" goes with level 3, "MQTT" with 4 and 5.
  if ((packet.protocolId === 'MQIsdp') !== (version === 3)) {
    return reject(ctx, conn, CONNACK_V3.unacceptableProtocolVersion, RC.unsupportedProtocolVersion, `protocol name ${packet.protocolId} with level ${version}`);
  }
  conn.setProtocol(version);
  const v5 = version === 5;

  if (ctx.closing) return reject(ctx, conn, CONNACK_V3.serverUnavailable, RC.serverShuttingDown, 'shutting down');
  if (packet.properties?.authenticationMethod !== undefined) {
    return reject(ctx, conn, CONNACK_V3.notAuthorized, RC.badAuthenticationMethod, 'enhanced authentication is not supported');
  }

  let clientId = packet.clientId;
  let assignedClientIdentifier: string | undefined;
  if (clientId === '') {
    if (v5) {
      // [MQTT-3.1.3-6] an empty id gets one assigned and returned in CONNACK.
      clientId = assignedClientIdentifier = `sb-${randomUUID()}`;
    } else if (version === 4 && packet.clean) {
      // [MQTT-3.1.3-6, MQTT-3.1.3-7] 3.1.1 allows an empty id only with a clean session.
      clientId = `sb-${randomUUID()}`;
    } else {
      return reject(ctx, conn, CONNACK_V3.identifierRejected, RC.clientIdentifierNotValid, 'empty client id requires a clean session');
    }
  }
  if (clientId.length > limits.maxClientIdLength) {
    return reject(ctx, conn, CONNACK_V3.identifierRejected, RC.clientIdentifierNotValid, `client id longer than ${limits.maxClientIdLength} characters`);
  }

  let will: Message | undefined;
  if (packet.will) {
    const invalid = validateTopicName(packet.will.topic);
    if (invalid || packet.will.topic.startsWith('$')) {
      // [MQTT-3.1.2-9] the will topic must be a valid topic name.
      return reject(ctx, conn, CONNACK_V3.notAuthorized, RC.topicNameInvalid, `invalid will topic: ${invalid ?? '$-topics are reserved'}`);
    }
    const { willDelayInterval: _delay, ...willProps } = packet.will.properties ?? {};
    will = {
      topic: packet.will.topic,
      payload: Buffer.isBuffer(packet.will.payload) ? packet.will.payload : Buffer.from(packet.will.payload ?? ''),
      qos: packet.will.qos ?? 0,
      retain: packet.will.retain ?? false,
      properties: Object.keys(willProps).length > 0 ? (willProps as MessageProperties) : undefined,
      clientId,
      timestamp: 0,
      hops: 0,
    };
  }

  // Credentials: synchronous unless a password needs scrypt; packets the client sends
  // meanwhile are held and replayed once the connection is accepted [MQTT-3.1.4-5].
  const verdict = ctx.auth.authenticate(conn.origin, packet.username, packet.password, () => conn.state !== 'closed');
  const checked = { clientId, assignedClientIdentifier, will };
  if (!(verdict instanceof Promise)) return admit(ctx, conn, packet, checked, verdict);
  conn.hold();
  verdict.then(
    (v) => {
      if (conn.state === 'closed') return;
      if (ctx.closing) return reject(ctx, conn, CONNACK_V3.serverUnavailable, RC.serverShuttingDown, 'shutting down');
      admit(ctx, conn, packet, checked, v);
      conn.release();
    },
    (err: unknown) => {
      ctx.log.error({ err, remote: conn.remote }, 'credential check failed');
      reject(ctx, conn, CONNACK_V3.serverUnavailable, RC.unspecifiedError, 'credential check failed');
    },
  );
}

/**
 * The rest of CONNECT once the credentials are checked: refusals for bad credentials, an
 * unauthorised will or a foreign session; then keepalive, session takeover or resumption,
 * CONNACK, and what the session still owes the client.
 */
function admit(
  ctx: BrokerContext,
  conn: Connection,
  packet: IConnectPacket,
  checked: { clientId: string; assignedClientIdentifier: string | undefined; will: Message | undefined },
  verdict: AuthVerdict,
): void {
  const { clientId, assignedClientIdentifier, will } = checked;
  const version = conn.protocolVersion;
  const v5 = conn.v5;
  const limits = ctx.config.limits;
  if (!verdict.ok) {
    ctx.stats.authFailures++;
    // [MQTT-3.1.4-2] the server may refuse a client it cannot authenticate or authorise.
    if (verdict.refusal === 'bad-credentials') return reject(ctx, conn, CONNACK_V3.badUserNameOrPassword, RC.badUserNameOrPassword, verdict.reason);
    return reject(ctx, conn, CONNACK_V3.notAuthorized, RC.notAuthorized, verdict.reason);
  }
  const username = verdict.username;
  const acl = ctx.acl?.forClient(username, clientId);
  if (will && acl && !acl.canPublish(will.topic)) {
    ctx.stats.authFailures++;
    return reject(ctx, conn, CONNACK_V3.notAuthorized, RC.notAuthorized, `the will topic ${will.topic} is not allowed for this client`);
  }
  const existing = ctx.sessions.get(clientId);
  if (existing && !existing.ownerKnown && !existing.sender) {
    // Stored before owners were recorded: never handed to anyone but an anonymous client.
    if (username !== undefined) ctx.endSession(existing);
  } else if (existing && existing.username !== username) {
    // Only the user who owns a session may take it over or discard it.
    ctx.stats.authFailures++;
    return reject(ctx, conn, CONNACK_V3.notAuthorized, RC.notAuthorized, 'the client id is in use by another user');
  }

  // Keepalive: capped at broker.maxKeepalive; MQTT 5 is told the value in use [MQTT-3.2.2-21].
  let keepalive = packet.keepalive ?? 0;
  let serverKeepAlive: number | undefined;
  if (keepalive > ctx.config.maxKeepalive || (v5 && keepalive === 0 && ctx.config.maxKeepalive < 65_535)) {
    keepalive = ctx.config.maxKeepalive;
    if (v5) serverKeepAlive = keepalive;
  }

  const requestedExpiry = v5 ? (packet.properties?.sessionExpiryInterval ?? 0) : packet.clean ? 0 : limits.maxSessionExpiryS;
  const expiryS = Math.min(requestedExpiry, limits.maxSessionExpiryS);

  // Session takeover [MQTT-3.1.4-3]: the old connection is closed (MQTT 5: reason 0x8E).
  let session = ctx.sessions.get(clientId);
  const old = session?.sender as Connection | undefined;
  if (old) {
    old.takenOver = true;
    ctx.log.info({ clientId, remote: conn.remote, previous: old.remote }, 'session taken over by a new connection');
    old.disconnect(RC.sessionTakenOver);
  }
  // [MQTT-3.1.2-4] clean start discards the old session; otherwise it resumes [MQTT-3.1.2-5].
  if (session && packet.clean) {
    ctx.endSession(session);
    session = undefined;
  }
  const sessionPresent = session !== undefined;
  if (session) {
    if (session.pendingWill) {
      // [MQTT-3.1.3-9] reconnecting before the Will Delay Interval passed cancels the will.
      ctx.clock.clearTimeout(session.pendingWill.timer);
      session.pendingWill = undefined;
      if (session.stored) ctx.persistence!.deleteWill(clientId);
    }
    if (session.expiryTimer) ctx.clock.clearTimeout(session.expiryTimer);
    session.expiryTimer = undefined;
  } else {
    session = ctx.createSession(clientId);
  }
  if (session.stored && expiryS === 0) {
    ctx.persistence!.deleteSession(clientId);
    session.stored = false;
  }
  session.expiryS = expiryS;
  if (session.persistent) {
    ctx.persistence!.saveSession(clientId, expiryS, undefined, username);
    session.stored = true;
  }

  session.username = username;
  session.ownerKnown = true;
  session.acl = acl;
  conn.clientId = clientId;
  conn.username = username;
  conn.session = session;
  conn.will = will;
  conn.willDelayS = packet.will?.properties?.willDelayInterval ?? 0;
  conn.keepaliveMs = keepalive * 1000;
  const props = packet.properties;
  if (v5 && props) {
    if (props.receiveMaximum !== undefined) conn.receiveMaximum = Math.min(props.receiveMaximum, limits.maxInflight);
    if (props.maximumPacketSize !== undefined) conn.maxPacketSizeOut = props.maximumPacketSize;
    if (props.topicAliasMaximum !== undefined) conn.topicAliasMaxOut = props.topicAliasMaximum;
    if (props.requestProblemInformation === false) conn.requestProblemInformation = false;
  }
  if (v5) conn.topicAliasMaxIn = limits.maxTopicAlias;

  const connack: IConnackPacket = { cmd: 'connack', sessionPresent };
  if (v5) {
    connack.reasonCode = RC.success;
    connack.properties = {
      receiveMaximum: limits.maxInflight,
      topicAliasMaximum: limits.maxTopicAlias,
      maximumPacketSize: limits.maxPacketSize,
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: true,
    };
    if (assignedClientIdentifier) connack.properties.assignedClientIdentifier = assignedClientIdentifier;
    if (serverKeepAlive !== undefined) connack.properties.serverKeepAlive = serverKeepAlive;
    if (expiryS !== requestedExpiry) connack.properties.sessionExpiryInterval = expiryS;
  } else {
    connack.returnCode = CONNACK_V3.accepted;
  }
  conn.write(connack);
  conn.connected();
  ctx.stats.connectionsAccepted++;
  ctx.log.debug({ clientId, remote: conn.remote, protocolVersion: version, sessionPresent, keepalive }, 'client connected');
  session.attach(conn);
}

/** Refuses the connection with a CONNACK carrying the failure code, then closes it [MQTT-3.2.2-6]. */
function reject(ctx: BrokerContext, conn: Connection, v3Code: number, v5Code: number, reason: string): void {
  ctx.stats.connectionsRejected++;
  ctx.log.info({ remote: conn.remote, reason }, 'connection refused');
  const connack: IConnackPacket = conn.v5
    ? { cmd: 'connack', sessionPresent: false, reasonCode: v5Code, properties: { reasonString: reason } }
    : { cmd: 'connack', sessionPresent: false, returnCode: v3Code };
  conn.write(connack);
  conn.end();
}
