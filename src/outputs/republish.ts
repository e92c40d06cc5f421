import { z } from 'zod';
import type { MessageProperties } from '../broker/types.js';
import { messageProperties, payloadBytes, type RuleInput } from '../engine/message.js';
import { FALLBACK } from '../rules/expression.js';
import type { CompiledTemplate } from '../rules/template.js';
import { compileSetting, qosSchema } from './common.js';
import type { CompiledAction, Effect, OutputType } from './types.js';

const propertiesSchema = z
  .object({
    contentType: z.string().optional().describe('MQTT 5 Content Type; a `${…}` template.'),
    responseTopic: z.string().optional().describe('MQTT 5 Response Topic; a `${…}` template.'),
    correlationData: z.string().optional().describe('MQTT 5 Correlation Data (sent as UTF-8); a `${…}` template.'),
    messageExpiryInterval: z.number().int().min(0).max(0xffff_ffff).optional().describe('MQTT 5 Message Expiry Interval, seconds.'),
    payloadFormatIndicator: z.boolean().optional().describe('MQTT 5 Payload Format Indicator (true = UTF-8).'),
    userProperties: z.record(z.string(), z.string()).optional().describe('MQTT 5 User Properties; each value a `${…}` template.'),
  })
  .strict();

const schema = z
  .object({
    topic: z.string().min(1).describe('Topic to publish to; a `${…}` template evaluated after the transform.'),
    qos: qosSchema.optional().describe('QoS of the republished message. Default: the incoming message\'s QoS.'),
    retain: z.boolean().default(false).describe('Publish as retained. Default false.'),
    properties: propertiesSchema
      .optional()
      .describe('MQTT 5 properties. Default: the incoming message\'s properties, passed through; given keys override them.'),
  })
  .strict();

type Settings = z.output<typeof schema>;
type StringProp = 'contentType' | 'responseTopic' | 'correlationData';

/** `republish`: publishes the rule's result back into the broker, where subscribers and other rules see it. */
export const republishOutput: OutputType<typeof schema> = {
  name: 'republish',
  description: 'Publish the result to a topic on this broker (subscribers and other rules see it).',
  schema,

  compile(settings: Settings, ctx): CompiledAction {
    const topic = compileSetting(settings.topic, ['topic'], ctx.limits);
    const stringProps: [StringProp, CompiledTemplate][] = [];
    for (const key of ['contentType', 'responseTopic', 'correlationData'] as const) {
      const text = settings.properties?.[key];
      if (text !== undefined) stringProps.push([key, compileSetting(text, ['properties', key], ctx.limits)]);
    }
    const userProps: [string, CompiledTemplate][] = Object.entries(settings.properties?.userProperties ?? {}).map(([k, v]) => [
      k,
      compileSetting(v, ['properties', 'userProperties', k], ctx.limits),
    ]);
    const override = settings.properties;
    const effect = (input: RuleInput, ruleId: string, renderedTopic: string, properties: MessageProperties | undefined): Effect[] => [
      {
        type: 'republish',
        ruleId,
        topic: renderedTopic,
        payload: payloadBytes(input),
        qos: settings.qos ?? input.qos,
        retain: settings.retain,
        properties,
        source: { clientId: input.clientId, timestamp: input.timestamp, hops: input.hops },
      },
    ];
    const planAsync = async (input: RuleInput, ruleId: string): Promise<Effect[]> => {
      const renderedTopic = await topic.render(input);
      if (!override) return effect(input, ruleId, renderedTopic, messageProperties(input));
      const p: MessageProperties = { ...messageProperties(input) };
      for (const [key, tpl] of stringProps) {
        const value = await tpl.render(input);
        if (key === 'correlationData') p.correlationData = Buffer.from(value, 'utf8');
        else p[key] = value;
      }
      if (override.messageExpiryInterval !== undefined) p.messageExpiryInterval = override.messageExpiryInterval;
      if (override.payloadFormatIndicator !== undefined) p.payloadFormatIndicator = override.payloadFormatIndicator;
      if (userProps.length > 0) {
        const up: Record<string, string> = {};
        for (const [k, tpl] of userProps) up[k] = await tpl.render(input);
        p.userProperties = { ...(p.userProperties ?? {}), ...up };
      }
      return effect(input, ruleId, renderedTopic, p);
    };
    return {
      type: 'republish',
      republishTopic: topic,
      plan(input: RuleInput, ruleId: string): Effect[] | Promise<Effect[]> {
        // Hot path: a topic template in the fast-path subset and no property overrides plan
        // synchronously, without a promise.
        if (!override) {
          const renderedTopic = topic.renderSync(input);
          if (renderedTopic !== FALLBACK) return effect(input, ruleId, renderedTopic, messageProperties(input));
        }
        return planAsync(input, ruleId);
      },
    };
  },

  createSink(deps) {
    return {
      execute(effect) {
        return deps.publish({
          topic: effect.topic,
          payload: effect.payload,
          qos: effect.qos,
          retain: effect.retain,
          properties: effect.properties,
          hops: effect.source.hops + 1,
        });
      },
    };
  },
};
