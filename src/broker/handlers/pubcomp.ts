import type { IPubcompPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';

/** PUBCOMP: a QoS 2 delivery is complete [MQTT-4.3.3-1]. */
export function handlePubcomp(ctx: BrokerContext, conn: Connection, packet: IPubcompPacket): void {
  if (!conn.session?.complete(packet.messageId!)) {
    ctx.log.debug({ clientId: conn.clientId, packetId: packet.messageId }, 'PUBCOMP for an unknown packet id');
  }
}
