import type { IPubackPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';

/** PUBACK: a QoS 1 delivery is complete; its packet id is free again [MQTT-4.3.2-1]. */
export function handlePuback(ctx: BrokerContext, conn: Connection, packet: IPubackPacket): void {
  if (!conn.session?.complete(packet.messageId!)) {
    ctx.log.debug({ clientId: conn.clientId, packetId: packet.messageId }, 'PUBACK for an unknown packet id');
  }
}
