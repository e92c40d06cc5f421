import { z } from 'zod';
import { messageProperties, payloadBytes, type RuleInput } from '../engine/message.js';
import type { QoS } from '../broker/types.js';
import { compileSetting, qosSchema } from './common.js';
import { ActionConfigError, type CompiledAction, type Effect, type OutputType } from './types.js';

/** Settings every remote action shares: which named output, and how the message looks there. */
export const remoteActionFields = {
  output: z.string().min(1).describe('The name of an output defined under `outputs:`.'),
  topic: z.string().min(1).optional().describe('Topic at the output; a `${…}` template. Default: the message\'s topic.'),
  qos: qosSchema.optional().describe('QoS at the output. Default: the message\'s QoS.'),
  retain: z.boolean().optional().describe('Retain flag at the output. Default: the message\'s.'),
};

/**
 * The effect a remote action plans for one message: its payload bytes and MQTT 5 properties
 * as they are, on `topic`, with the type's own `data`. Hot path: positional, no options object.
 */
export function remoteEffect(type: string, output: string, ruleId: string, input: RuleInput, topic: string, qos: QoS, retain: boolean, data: unknown): Effect {
  return {
    type,
    output,
    ruleId,
    topic,
    payload: payloadBytes(input),
    qos,
    retain,
    properties: messageProperties(input),
    data,
    source: { clientId: input.clientId, timestamp: input.timestamp, hops: input.hops },
  };
}

/**
 * Builds the rule action of a remote output type (`- bridge: { output: cloud, ... }`): it
 * checks at load that `output` names a defined output of the right type, plans an effect
 * per message (topic template, payload after the transform, and whatever `data` the type
 * adds), and its sink queues the effect in that output's durable outbox.
 */
export function remoteActionType<S extends z.ZodObject>(options: {
  name: string;
  /** The `type:` of the named outputs this action may send to. */
  connectorType: string;
  description: string;
  schema: S;
  /** Extra planning per message, e.g. time-series points; returns `data` for the outbox. */
  data?: (settings: z.output<S>, input: RuleInput) => Promise<unknown> | unknown;
}): OutputType<S> {
  return {
    name: options.name,
    description: options.description,
    schema: options.schema,
    compile(settings, ctx): CompiledAction {
      const s = settings as z.output<S> & { output: string; topic?: string; qos?: 0 | 1 | 2; retain?: boolean };
      const type = ctx.namedOutputs.get(s.output);
      if (type === undefined) {
        const known = [...ctx.namedOutputs].filter(([, t]) => t === options.connectorType).map(([n]) => n);
        throw new ActionConfigError(
          `output "${s.output}" is not defined under outputs:${known.length ? ` (${options.connectorType} outputs: ${known.join(', ')})` : ''}`,
          ['output'],
          'SB_RULE_OUTPUT',
        );
      }
      if (type !== options.connectorType) {
        throw new ActionConfigError(`output "${s.output}" is a ${type} output, not ${/^[aeiou]/i.test(options.connectorType) ? 'an' : 'a'} ${options.connectorType}`, ['output'], 'SB_RULE_OUTPUT');
      }
      const topic = s.topic === undefined ? undefined : compileSetting(s.topic, ['topic'], ctx.limits);
      return {
        type: options.name,
        async plan(input: RuleInput, ruleId: string): Promise<Effect[]> {
          const data = options.data ? await options.data(settings, input) : undefined;
          return [remoteEffect(options.name, s.output, ruleId, input, topic ? await topic.render(input) : input.topic, s.qos ?? input.qos, s.retain ?? input.retain, data)];
        },
      };
    },
    createSink(deps) {
      return {
        execute(effect) {
          if (!deps.outbox) throw new Error(`remote output "${effect.output}" used but outboxes are not running`);
          return deps.outbox.enqueue(effect);
        },
      };
    },
  };
}
