import type { ISubscribePacket, ISubscription, QoS } from 'mqtt-packet';
import { parseSharedFilter, validateTopicFilter } from '../../topics/validate.js';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';
import type { Session, Subscription } from '../session.js';

/**
 * SUBSCRIBE: each filter is validated on its own, so one bad filter gets a failure code in
 * SUBACK and the others still succeed [MQTT-3.8.4-6]. Retained messages follow the SUBACK.
 */
export function handleSubscribe(ctx: BrokerContext, conn: Connection, packet: ISubscribePacket): void {
  const session = conn.session!;
  const subscriptionId = packet.properties?.subscriptionIdentifier;
  if (subscriptionId === 0) {
    // [MQTT-3.8.2-1 note] a Subscription Identifier of 0 is a protocol error.
    return conn.protocolError(RC.protocolError, 'subscription identifier 0');
  }
  const granted: number[] = [];
  const retainedFor: Subscription[] = [];
  for (const request of packet.subscriptions) {
    const result = subscribeOne(ctx, conn, session, request, subscriptionId);
    granted.push(result.code);
    if (result.sendRetained) retainedFor.push(result.sendRetained);
  }
  // A stored session's subscriptions are committed before SUBACK says they exist.
  const stored = session.stored ? ctx.persistence!.pending() : undefined;
  if (!stored) return acknowledge(ctx, conn, session, packet, granted, retainedFor);
  stored.then(
    () => acknowledge(ctx, conn, session, packet, granted, retainedFor),
    () => conn.disconnect(RC.unspecifiedError, 'subscriptions could not be stored'),
  );
}

/** SUBACK, then the retained messages of the new subscriptions. */
function acknowledge(ctx: BrokerContext, conn: Connection, session: Session, packet: ISubscribePacket, granted: number[], retainedFor: Subscription[]): void {
  if (conn.state === 'closed') return;
  // [MQTT-3.8.4-1] SUBACK with the same packet id; one code per filter [MQTT-3.9.3-1].
  conn.write({ cmd: 'suback', messageId: packet.messageId, granted });
  const now = ctx.clock.now();
  for (const sub of retainedFor) {
    for (const message of ctx.retained.match(sub.topicFilter, now)) {
      // [MQTT-3.3.1-8] retained messages sent on subscribe carry RETAIN 1.
      session.deliver({
        message,
        qos: (message.qos < sub.qos ? message.qos : sub.qos) as QoS,
        retain: true,
        subscriptionIds: sub.subscriptionId === undefined ? undefined : [sub.subscriptionId],
      });
    }
  }
}

function subscribeOne(
  ctx: BrokerContext,
  conn: Connection,
  session: Session,
  request: ISubscription,
  subscriptionId: number | undefined,
): { code: number; sendRetained?: Subscription } {
  const failure = conn.v5 ? RC.topicFilterInvalid : 0x80;
  let topicFilter = request.topic;
  let group: string | undefined;
  const shared = parseSharedFilter(request.topic);
  if (shared) {
    if ('error' in shared) return { code: failure };
    if (request.nl) {
      // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error; refuse the filter.
      return { code: conn.v5 ? RC.protocolError : 0x80 };
    }
    topicFilter = shared.filter;
    group = shared.group;
  } else if (validateTopicFilter(request.topic) !== undefined) {
    return { code: failure };
  }

  if (session.acl !== undefined && !session.acl.canSubscribe(topicFilter)) {
    ctx.stats.subscribeDenied++;
    return { code: conn.v5 ? RC.notAuthorized : 0x80 };
  }

  const existing = session.subscriptions.get(request.topic);
  if (!existing && session.subscriptions.size >= ctx.config.limits.maxSubscriptions) {
    ctx.limitHits.hit('subscriptionsRefused', conn.clientId);
    return { code: conn.v5 ? RC.quotaExceeded : 0x80 };
  }
  const sub: Subscription = {
    session,
    filter: request.topic,
    topicFilter,
    group,
    qos: request.qos,
    noLocal: request.nl === true,
    retainAsPublished: request.rap === true,
    retainHandling: (request.rh ?? 0) as 0 | 1 | 2,
    subscriptionId,
  };
  // [MQTT-3.8.4-3] a subscription to an existing filter replaces it.
  if (existing) ctx.subscriptions.remove(existing);
  session.subscriptions.set(request.topic, sub);
  ctx.subscriptions.add(sub);
  if (session.stored) ctx.persistence!.saveSubscription(session.clientId, sub);

  // [MQTT-3.3.1-9] Retain Handling: 0 always, 1 only for a new subscription, 2 never;
  // never for shared subscriptions [MQTT-4.8.2-4 note].
  const sendRetained = group === undefined && (sub.retainHandling === 0 || (sub.retainHandling === 1 && !existing));
  return { code: request.qos, sendRetained: sendRetained ? sub : undefined };
}
