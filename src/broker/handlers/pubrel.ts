import type { IPubrelPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';

/**
 * PUBREL for a QoS 2 message the client sent: the packet id is released and the client
 * gets PUBCOMP [MQTT-4.3.3-11]. The message was routed on its first PUBLISH, so releasing it
 * delivers nothing again (exactly once).
 */
export function handlePubrel(_ctx: BrokerContext, conn: Connection, packet: IPubrelPacket): void {
  const id = packet.messageId!;
  const known = conn.session!.releaseInboundQos2(id);
  conn.write({ cmd: 'pubcomp', messageId: id, reasonCode: conn.v5 && !known ? RC.packetIdentifierNotFound : 0 });
}
