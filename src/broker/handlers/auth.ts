import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';

/**
 * AUTH: signalbox offers no enhanced authentication method, so an AUTH packet after CONNECT
 * is a protocol error [MQTT-4.12.0-1].
 */
export function handleAuth(_ctx: BrokerContext, conn: Connection): void {
  if (!conn.v5) return conn.protocolError(RC.malformedPacket, 'AUTH is MQTT 5 only');
  conn.protocolError(RC.protocolError, 'no authentication method was negotiated');
}
