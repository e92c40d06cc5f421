import net from 'node:net';
import tls from 'node:tls';
import mqttPacket from 'mqtt-packet';
import type { Logger } from 'pino';
import { createBroker, defaultListenerTypes, type Broker } from '../../src/broker/broker.js';
import type { BoundAddress, ListenerFactory, StreamPeer } from '../../src/broker/listeners/listener.js';
import { parseBrokerConfig, type BrokerConfigInput } from '../../src/config/broker.js';
import { silentLogger } from '../../src/log.js';

/** A broker with several listeners, and every peer its listeners handed it. */
export interface ListenersBroker {
  broker: Broker;
  /** Bound addresses, in the order of `listeners`. */
  addresses: BoundAddress[];
  /** What each accepted stream came with (becomes `conn.origin`), with the listener type. */
  peers: Array<StreamPeer & { type: string }>;
  close(): Promise<void>;
}

/**
 * Starts a broker on the given listeners (all on 127.0.0.1, port 0 unless given) with the
 * built-in listener types, each wrapped only to record the peers it hands the broker.
 */
export async function startListeners(config: BrokerConfigInput, { log = silentLogger() }: { log?: Logger } = {}): Promise<ListenersBroker> {
  const peers: ListenersBroker['peers'] = [];
  const recording: Record<string, ListenerFactory> = {};
  for (const [type, factory] of Object.entries(defaultListenerTypes())) {
    recording[type] = (lc, context) => {
      const listener = factory(lc, context);
      return {
        start: (onStream) => listener.start((stream, peer) => {
          peers.push({ ...peer, type });
          onStream(stream, peer);
        }),
        stop: () => listener.stop(),
      };
    };
  }
  const broker = createBroker(parseBrokerConfig(config), { log, listenerTypes: recording });
  try {
    const addresses = await broker.listen();
    return { broker, addresses, peers, close: () => broker.close() };
  } catch (err) {
    await broker.close();
    throw err;
  }
}

/** How a raw CONNECT attempt ended. */
export interface Attempt {
  /** The broker answered CONNACK with return code 0. */
  accepted: boolean;
  /** The first bytes received, if any (hex), for messages. */
  received: string;
  /** The socket error, if one was raised. */
  error?: string;
}

const CONNECT = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'raw-attempt', clean: true, keepalive: 30 });

/**
 * Opens `socket` (plain or TLS), sends an MQTT 3.1.1 CONNECT once it is ready, and resolves
 * when a CONNACK arrives or the socket closes, or after `within` ms (then not accepted).
 */
export function attemptConnect(socket: net.Socket, { within = 3000, ready = socket instanceof tls.TLSSocket ? 'secureConnect' : 'connect' } = {}): Promise<Attempt> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    let error: string | undefined;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      const accepted = received.length >= 4 && received[0] === 0x20 && received[3] === 0;
      resolve({ accepted, received: received.subarray(0, 16).toString('hex'), ...(error ? { error } : {}) });
    };
    const timer = setTimeout(finish, within);
    socket.once(ready, () => socket.write(CONNECT));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 4 && received[0] === 0x20) finish();
    });
    socket.on('error', (err: Error & { code?: string }) => {
      error = err.code ?? err.message;
    });
    socket.on('close', finish);
  });
}
