import type { ListenerConfig } from '../../config/broker.js';
import type { Listener, ListenerContext } from './listener.js';
import { createWebSocketListener } from './websocket-server.js';

/** MQTT over WebSocket on plain HTTP (`type: ws`, default port 8080, path /mqtt). */
export function createWsListener(config: ListenerConfig, context: ListenerContext): Listener {
  if (config.type !== 'ws') throw new Error(`ws listener given a ${config.type} config`);
  return createWebSocketListener(config, context);
}
