import type { IPubrecPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';

/**
 * PUBREC for a QoS 2 message we sent: answer PUBREL [MQTT-4.3.3-4]. An MQTT 5 PUBREC with a
 * failure reason code ends that delivery instead [MQTT-4.3.3-4 note].
 */
export function handlePubrec(ctx: BrokerContext, conn: Connection, packet: IPubrecPacket): void {
  const session = conn.session!;
  const id = packet.messageId!;
  if ((packet.reasonCode ?? 0) >= 0x80) {
    session.complete(id);
    return;
  }
  if (session.received(id)) {
    conn.write({ cmd: 'pubrel', messageId: id, reasonCode: 0 });
  } else {
    ctx.log.debug({ clientId: conn.clientId, packetId: id }, 'PUBREC for an unknown packet id');
    conn.write({ cmd: 'pubrel', messageId: id, reasonCode: conn.v5 ? RC.packetIdentifierNotFound : 0 });
  }
}
