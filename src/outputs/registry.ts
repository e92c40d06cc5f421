import { bridgeAction } from './bridge.js';
import { historyOutput } from './history.js';
import { influxAction } from './influx-action.js';
import { republishOutput } from './republish.js';
import type { OutputType } from './types.js';
import { webhookAction } from './webhook-action.js';

/** Output types by their `to:` key. A value built by the caller, never module state. */
export type OutputRegistry = ReadonlyMap<string, OutputType>;

/** The built-in output types. Later types (bridge, influx, webhook, plugins) are added here or by the caller. */
export function createOutputRegistry(extra: readonly OutputType[] = []): OutputRegistry {
  const registry = new Map<string, OutputType>();
  for (const type of [republishOutput, historyOutput, bridgeAction, webhookAction, influxAction, ...extra] as OutputType[]) {
    if (registry.has(type.name)) throw new Error(`output type "${type.name}" registered twice`);
    registry.set(type.name, type);
  }
  return registry;
}
