import { bridgeConnector } from './bridge.js';
import { influxConnector } from './influx.js';
import type { ConnectorRegistry, ConnectorType } from './connector.js';
import { webhookConnector } from './webhook.js';

/**
 * The built-in types of named outputs (`outputs.<name>.type`), plus any the caller adds.
 * A value built by the caller, never module state.
 */
export function createConnectorRegistry(extra: readonly ConnectorType[] = []): ConnectorRegistry {
  const registry = new Map<string, ConnectorType>();
  for (const type of [bridgeConnector, webhookConnector, influxConnector, ...extra] as ConnectorType[]) {
    if (registry.has(type.type)) throw new Error(`output type "${type.type}" registered twice`);
    registry.set(type.type, type);
  }
  return registry;
}
