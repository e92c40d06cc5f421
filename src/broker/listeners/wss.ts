import type { ListenerConfig } from '../../config/broker.js';
import type { Listener, ListenerContext } from './listener.js';
import { createWebSocketListener } from './websocket-server.js';

/**
 * MQTT over WebSocket over TLS (`type: wss`, default port 8081, path /mqtt): the TLS
 * settings of `mqtts`, the HTTP handling of `ws`.
 */
export function createWssListener(config: ListenerConfig, context: ListenerContext): Listener {
  if (config.type !== 'wss') throw new Error(`wss listener given a ${config.type} config`);
  return createWebSocketListener(config, context);
}
