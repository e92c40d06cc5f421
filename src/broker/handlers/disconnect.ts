import type { IDisconnectPacket } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';

/**
 * DISCONNECT from the client: a normal one discards the will [MQTT-3.14.4-3]; MQTT 5 reason
 * 0x04 asks for it to be published. MQTT 5 may also change the Session Expiry Interval here.
 */
export function handleDisconnect(ctx: BrokerContext, conn: Connection, packet: IDisconnectPacket): void {
  const expiry = packet.properties?.sessionExpiryInterval;
  if (conn.v5 && expiry !== undefined) {
    const session = conn.session!;
    if (session.expiryS === 0 && expiry !== 0) {
      // [MQTT-3.14.2-2] 0 at CONNECT cannot become non-zero at DISCONNECT.
      return conn.protocolError(RC.protocolError, 'session expiry interval was 0 at CONNECT');
    }
    // The new interval is stored when the connection ends (see connectionEnded).
    session.expiryS = Math.min(expiry, ctx.config.limits.maxSessionExpiryS);
  }
  conn.discardWill = !(conn.v5 && packet.reasonCode === RC.disconnectWithWill);
  conn.end();
}
