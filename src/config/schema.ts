import { z } from 'zod';
import { DEFAULT_EXPRESSION_LIMITS } from '../rules/expression.js';
import { DEFAULT_MAX_HOPS } from '../engine/processor.js';
import { brokerSchema } from './broker.js';
import { parseDuration } from './units.js';

export const DEFAULT_STORAGE_PATH = 'data/signalbox.db';
export const DEFAULT_RULES_PATH = 'rules';
export const DEFAULT_HISTORY_RETENTION_MS = 30 * 86_400_000;

const duration = (what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `${what} must be a duration such as "30d", "12h", "90m" or milliseconds, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return ms;
  });

export const storageSchema = z
  .object({
    path: z.string().min(1).default(DEFAULT_STORAGE_PATH).describe(`SQLite database file, relative to the config file. Default ${DEFAULT_STORAGE_PATH}.`),
    durability: z
      .enum(['normal', 'full'])
      .default('normal')
      .describe('normal: survives a crash of signalbox (synchronous=NORMAL); full: survives power loss (synchronous=FULL). Default normal.'),
  })
  .strict();

export const historySchema = z
  .object({
    retention: duration('retention').default(DEFAULT_HISTORY_RETENTION_MS).describe('How long history rows are kept. Default 30d.'),
  })
  .strict();

export const engineSchema = z
  .object({
    maxHops: z.number().int().min(0).max(100).default(DEFAULT_MAX_HOPS).describe(`How many times rules may republish into rules for one original message. Default ${DEFAULT_MAX_HOPS}.`),
    expressionTimeoutMs: z.number().int().min(1).default(DEFAULT_EXPRESSION_LIMITS.timeoutMs).describe(`Longest one JSONata evaluation may run, ms. Default ${DEFAULT_EXPRESSION_LIMITS.timeoutMs}.`),
    expressionMaxDepth: z.number().int().min(10).default(DEFAULT_EXPRESSION_LIMITS.maxDepth).describe(`Deepest JSONata evaluation (recursion) allowed. Default ${DEFAULT_EXPRESSION_LIMITS.maxDepth}.`),
    expressionMaxSequence: z.number().int().min(1).default(DEFAULT_EXPRESSION_LIMITS.maxSequence).describe(`Longest sequence one JSONata step may build. Default ${DEFAULT_EXPRESSION_LIMITS.maxSequence}.`),
  })
  .strict();

/** signalbox.yaml. Every section is optional. */
export const configSchema = z
  .object({
    broker: brokerSchema.default(() => brokerSchema.parse({})),
    storage: storageSchema.default(() => storageSchema.parse({})),
    history: historySchema.default(() => historySchema.parse({})),
    engine: engineSchema.default(() => engineSchema.parse({})),
    rules: z.string().min(1).default(DEFAULT_RULES_PATH).describe(`Folder of *.yaml rule files, relative to the config file. Default ${DEFAULT_RULES_PATH}.`),
    outputs: z
      .record(z.string(), z.object({ type: z.string() }).loose())
      .default({})
      .describe('Named remote outputs (bridges, time-series databases, webhooks), referenced by rules.'),
  })
  .strict();

export type ConfigFile = z.output<typeof configSchema>;
