import type { Packet } from 'mqtt-packet';
import type { Connection } from '../connection.js';
import type { BrokerContext } from '../context.js';
import { RC } from '../reason-codes.js';
import { handleAuth } from './auth.js';
import { handleConnect } from './connect.js';
import { handleDisconnect } from './disconnect.js';
import { handlePingreq } from './pingreq.js';
import { handlePuback } from './puback.js';
import { handlePubcomp } from './pubcomp.js';
import { handlePublish } from './publish.js';
import { handlePubrec } from './pubrec.js';
import { handlePubrel } from './pubrel.js';
import { handleSubscribe } from './subscribe.js';
import { handleUnsubscribe } from './unsubscribe.js';

/** Routes one parsed packet to its handler, enforcing CONNECT-first ordering. */
export function dispatch(ctx: BrokerContext, conn: Connection, packet: Packet): void {
  if (conn.state === 'new') {
    // [MQTT-3.1.0-1] the first packet must be CONNECT; anything else closes the connection.
    if (packet.cmd === 'connect') handleConnect(ctx, conn, packet);
    else conn.destroy();
    return;
  }
  switch (packet.cmd) {
    case 'publish':
      return handlePublish(ctx, conn, packet);
    case 'puback':
      return handlePuback(ctx, conn, packet);
    case 'pubrec':
      return handlePubrec(ctx, conn, packet);
    case 'pubrel':
      return handlePubrel(ctx, conn, packet);
    case 'pubcomp':
      return handlePubcomp(ctx, conn, packet);
    case 'subscribe':
      return handleSubscribe(ctx, conn, packet);
    case 'unsubscribe':
      return handleUnsubscribe(ctx, conn, packet);
    case 'pingreq':
      return handlePingreq(ctx, conn);
    case 'disconnect':
      return handleDisconnect(ctx, conn, packet);
    case 'auth':
      return handleAuth(ctx, conn);
    case 'connect':
      // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
      return conn.protocolError(RC.protocolError, 'second CONNECT on one connection');
    default:
      // CONNACK, SUBACK, UNSUBACK, PINGRESP are server-to-client only.
      return conn.protocolError(RC.protocolError, `unexpected ${packet.cmd} from a client`);
  }
}
