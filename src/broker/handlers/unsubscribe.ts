import type { IUnsubscribePacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';

/** UNSUBSCRIBE: removes each filter; MQTT 5 gets a reason code per filter [MQTT-3.11.3-1]. */
export function handleUnsubscribe(ctx: BrokerContext, conn: Connection, packet: IUnsubscribePacket): void {
  const session = conn.session!;
  const codes: number[] = [];
  for (const filter of packet.unsubscriptions) {
    const sub = session.subscriptions.get(filter);
    if (sub) {
      session.subscriptions.delete(filter);
      ctx.subscriptions.remove(sub);
      if (session.stored) ctx.persistence!.deleteSubscription(session.clientId, filter);
      codes.push(RC.success);
    } else {
      codes.push(RC.noSubscriptionExisted);
    }
  }
  // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
  conn.write({ cmd: 'unsuback', messageId: packet.messageId, granted: codes });
}
