import { z } from 'zod';
import { payloadBytes, type RuleInput } from '../engine/message.js';
import { FALLBACK } from '../rules/expression.js';
import { compileSetting } from './common.js';
import type { CompiledAction, Effect, OutputType } from './types.js';

const schema = z
  .object({
    topic: z.string().min(1).optional().describe('Topic to store the message under; a `${…}` template. Default: the message\'s topic.'),
  })
  .strict();

/** `history`: stores the message as it leaves the rule in the SQLite history table. */
export const historyOutput: OutputType<typeof schema> = {
  name: 'history',
  description: 'Store the message as it leaves the rule (topic, transformed payload) in SQLite history.',
  schema,

  compile(settings, ctx): CompiledAction {
    const topic = settings.topic === undefined ? undefined : compileSetting(settings.topic, ['topic'], ctx.limits);
    const effect = (input: RuleInput, ruleId: string, storedTopic: string): Effect[] => [
      {
        type: 'history',
        ruleId,
        topic: storedTopic,
        payload: payloadBytes(input),
        qos: input.qos,
        retain: input.retain,
        source: { clientId: input.clientId, timestamp: input.timestamp, hops: input.hops },
      },
    ];
    return {
      type: 'history',
      plan(input: RuleInput, ruleId: string): Effect[] | Promise<Effect[]> {
        // Hot path: the message's own topic, or a template in the fast-path subset, plans
        // synchronously, so the rule stays in the synchronous fast path (no promise per message).
        if (topic === undefined) return effect(input, ruleId, input.topic);
        const rendered = topic.renderSync(input);
        if (rendered !== FALLBACK) return effect(input, ruleId, rendered);
        return topic.render(input).then((t) => effect(input, ruleId, t));
      },
    };
  },

  createSink(deps) {
    const history = deps.history;
    return {
      execute(effect) {
        if (!history) throw new Error('history output used but storage is not open');
        return history.append({
          time: effect.source.timestamp,
          topic: effect.topic,
          payload: effect.payload,
          qos: effect.qos,
          retain: effect.retain,
          ruleId: effect.ruleId,
          clientId: effect.source.clientId,
        });
      },
    };
  },
};
