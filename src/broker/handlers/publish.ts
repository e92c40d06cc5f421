import type { IPublishPacket } from 'mqtt-packet';
import { validateTopicName } from '../../topics/validate.js';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';
import type { Message, MessageProperties } from '../types.js';

/**
 * PUBLISH from a client: resolve its topic alias, validate, drop a QoS 2 duplicate, check
 * flow control, then hand the message to the broker and acknowledge once the publish hook
 * (storage, rules) has it.
 */
export function handlePublish(ctx: BrokerContext, conn: Connection, packet: IPublishPacket): void {
  const topic = resolveTopic(conn, packet);
  if (topic === undefined) return;

  const invalid = validateTopicName(topic);
  if (invalid) {
    // [MQTT-3.3.2-2] no wildcards; [MQTT-4.7.3-1] not empty.
    return conn.protocolError(RC.topicNameInvalid, `invalid topic name: ${invalid}`);
  }
  if (topic.startsWith('$')) {
    // [MQTT-4.7.2-1] $-topics are the server's; clients do not publish to them.
    return refuse(conn, packet, RC.notAuthorized, 'publishing to $-topics is not allowed');
  }

  const acl = conn.session!.acl;
  if (acl !== undefined && !acl.canPublish(topic)) return deny(ctx, conn, packet, topic);

  const id = packet.messageId!;
  if (packet.qos === 2 && conn.session!.inboundQos2.has(id)) {
    // [MQTT-4.3.3-10] a resent QoS 2 PUBLISH before PUBREL is acknowledged, not routed again;
    // while the first copy still waits for the hook, its own PUBREC will answer both.
    if (!conn.pendingQos2.has(id)) conn.write({ cmd: 'pubrec', messageId: id, reasonCode: 0 });
    return;
  }
  // Unacknowledged: QoS 1 waiting for the hook, plus QoS 2 until PUBREL (pending or not).
  const unacked = conn.pendingAcks - conn.pendingQos2.size + conn.session!.inboundQos2.size;
  if (packet.qos > 0 && conn.v5 && unacked >= ctx.config.limits.maxInflight) {
    // [MQTT-3.3.4-9] more unacknowledged QoS>0 messages than our Receive Maximum.
    return conn.protocolError(RC.receiveMaximumExceeded, `more than ${ctx.config.limits.maxInflight} unacknowledged publishes`);
  }

  const now = ctx.clock.now();
  const props = packet.properties;
  let properties: MessageProperties | undefined;
  let expiresAt: number | undefined;
  if (props) {
    const { topicAlias: _alias, subscriptionIdentifier: _sid, ...rest } = props;
    properties = rest;
    if (props.messageExpiryInterval !== undefined) expiresAt = now + props.messageExpiryInterval * 1000;
  }
  const message: Message = {
    topic,
    payload: packet.payload as Buffer,
    qos: packet.qos,
    retain: packet.retain,
    properties,
    clientId: conn.clientId,
    timestamp: now,
    expiresAt,
    hops: 0,
  };
  ctx.stats.messagesReceived++;

  if (packet.qos === 2) conn.session!.addInboundQos2(id);
  let gate: void | Promise<void>;
  try {
    gate = ctx.accept(message, { clientId: conn.clientId, username: conn.username, protocolVersion: conn.protocolVersion });
  } catch (err) {
    gate = Promise.reject(err);
  }
  if (packet.qos === 0) {
    if (gate) gate.catch(() => undefined);
    return;
  }
  if (!gate) return acknowledge(conn, packet);
  conn.pendingAcks++;
  if (packet.qos === 2) conn.pendingQos2.add(id);
  gate.then(
    () => {
      conn.pendingAcks--;
      conn.pendingQos2.delete(id);
      acknowledge(conn, packet);
    },
    (err: unknown) => {
      conn.pendingAcks--;
      conn.pendingQos2.delete(id);
      ctx.stats.publishHookErrors++;
      ctx.log.warn({ err, clientId: conn.clientId, topic }, 'publish not acknowledged: the publish hook failed');
      if (packet.qos === 2) conn.session?.releaseInboundQos2(id);
      // MQTT 5 learns of the failure from the reason code; 3.1.1 has none, so the connection
      // closes and the client resends on reconnect.
      const code = (err as { reasonCode?: unknown }).reasonCode;
      const reason = typeof code === 'number' && code >= 0x80 ? code : RC.unspecifiedError;
      if (conn.v5) refuse(conn, packet, reason, err instanceof Error ? err.message : 'the message could not be stored');
      else conn.end();
    },
  );
}

/**
 * A publish the ACL refuses: counted and dropped. MQTT 5 QoS 1/2 gets reason 0x87; QoS 0 and
 * MQTT 3.1.1 (which has no negative acknowledgement) are acknowledged as usual and dropped, as
 * Mosquitto does, so the client does not resend it forever.
 */
function deny(ctx: BrokerContext, conn: Connection, packet: IPublishPacket, topic: string): void {
  ctx.stats.publishDenied++;
  ctx.log.debug({ clientId: conn.clientId, username: conn.username, topic }, 'publish denied by the ACL');
  if (packet.qos === 0) return;
  if (conn.v5) return refuse(conn, packet, RC.notAuthorized, 'not authorized to publish to this topic');
  acknowledge(conn, packet);
}

function acknowledge(conn: Connection, packet: IPublishPacket): void {
  // reasonCode 0 lets MQTT 5 use the short form [MQTT-3.4.2-1], which older clients (paho 1.6) require.
  conn.write({ cmd: packet.qos === 1 ? 'puback' : 'pubrec', messageId: packet.messageId, reasonCode: 0 });
}

/** Negative acknowledgement (MQTT 5) or, for MQTT 3.1.1, the connection ends [MQTT-3.3.5-2]. */
function refuse(conn: Connection, packet: IPublishPacket, reasonCode: number, reasonString: string): void {
  if (!conn.v5) return conn.end();
  if (packet.qos === 0) return;
  const properties = conn.requestProblemInformation ? { reasonString } : undefined;
  conn.write({ cmd: packet.qos === 1 ? 'puback' : 'pubrec', messageId: packet.messageId, reasonCode, properties });
}

/** The topic of a PUBLISH after MQTT 5 topic alias handling [MQTT-3.3.2-12]; undefined if the connection was closed. */
function resolveTopic(conn: Connection, packet: IPublishPacket): string | undefined {
  const alias = packet.properties?.topicAlias;
  if (alias === undefined) return packet.topic;
  if (!conn.v5) return packet.topic;
  if (alias === 0 || alias > conn.topicAliasMaxIn) {
    // [MQTT-3.3.2-8] [MQTT-3.3.2-9]
    conn.protocolError(RC.topicAliasInvalid, `topic alias ${alias} is outside 1..${conn.topicAliasMaxIn}`);
    return undefined;
  }
  if (packet.topic.length > 0) {
    conn.aliasesIn.set(alias, packet.topic);
    return packet.topic;
  }
  const topic = conn.aliasesIn.get(alias);
  if (topic === undefined) {
    conn.protocolError(RC.protocolError, `topic alias ${alias} was never set`);
    return undefined;
  }
  return topic;
}
