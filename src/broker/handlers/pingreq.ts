import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';

/** PINGREQ: answer PINGRESP [MQTT-3.12.4-1]. Receiving it already refreshed the keepalive. */
export function handlePingreq(_ctx: BrokerContext, conn: Connection): void {
  conn.write({ cmd: 'pingresp' });
}
