import { z } from 'zod';
import { payloadBytes, type RuleInput } from '../engine/message.js';
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
    return {
      type: 'history',
      async plan(input: RuleInput, ruleId: string): Promise<Effect[]> {
        return [
          {
            type: 'history',
            ruleId,
            topic: topic ? await topic.render(input) : input.topic,
            payload: payloadBytes(input),
            qos: input.qos,
            retain: input.retain,
            source: { clientId: input.clientId, timestamp: input.timestamp, hops: input.hops },
          },
        ];
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
