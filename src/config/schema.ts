import { z } from 'zod';
import { DEFAULT_EXPRESSION_LIMITS } from '../rules/expression.js';
import { DEFAULT_MAX_HOPS } from '../engine/processor.js';
import { brokerSchema } from './broker.js';
import { parseDuration, parseSize } from './units.js';

export const DEFAULT_STORAGE_PATH = 'data/signalbox.db';
export const DEFAULT_RULES_PATH = 'rules';
export const DEFAULT_HISTORY_RETENTION_MS = 30 * 86_400_000;
/** Default `history.maxRows`: about 2-4 GB of disk with small JSON payloads. */
export const DEFAULT_HISTORY_MAX_ROWS = 10_000_000;
export const DEFAULT_HTTP_HOST = '127.0.0.1';
/** Default `http.port` (Prometheus itself defaults to 9090: set another port when both run on one host). */
export const DEFAULT_HTTP_PORT = 9090;
/** Default `http.lastValues.maxTopics`. */
export const DEFAULT_LAST_VALUES_MAX_TOPICS = 100_000;
/** Default `http.lastValues.maxBytes`: payload and topic bytes the last-value cache holds. */
export const DEFAULT_LAST_VALUES_MAX_BYTES = 64 * 1024 * 1024;

const duration = (what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const ms = parseDuration(v);
    if (ms === undefined) {
      ctx.addIssue({ code: 'custom', message: `${what} must be a duration such as "30d", "12h", "90m" or milliseconds, got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return ms;
  });

const size = (what: string) =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const bytes = parseSize(v);
    if (bytes === undefined) {
      ctx.addIssue({ code: 'custom', message: `${what} must be a size such as 67108864, "64MiB" or "1GiB", got ${JSON.stringify(v)}` });
      return z.NEVER;
    }
    return bytes;
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
    maxRows: z
      .number()
      .int()
      .min(1)
      .default(DEFAULT_HISTORY_MAX_ROWS)
      .describe(`Most history rows kept; beyond it the oldest are deleted in the background (counted and logged). Default ${DEFAULT_HISTORY_MAX_ROWS}.`),
  })
  .strict();

export const lastValuesSchema = z
  .object({
    maxTopics: z
      .number()
      .int()
      .min(1)
      .default(DEFAULT_LAST_VALUES_MAX_TOPICS)
      .describe(`Most topics whose latest stored message is kept in memory for GET /api/last; the least recently updated is evicted (counted). Default ${DEFAULT_LAST_VALUES_MAX_TOPICS}.`),
    maxBytes: size('maxBytes')
      .default(DEFAULT_LAST_VALUES_MAX_BYTES)
      .describe('Most topic and payload bytes the last-value cache holds; the least recently updated topics are evicted beyond it (counted). Default 64MiB.'),
  })
  .strict();

export const httpSchema = z
  .object({
    host: z.string().min(1).default(DEFAULT_HTTP_HOST).describe(`Address the HTTP API listens on. Default ${DEFAULT_HTTP_HOST} (loopback only: the API has no authentication).`),
    port: z.number().int().min(0).max(65535).default(DEFAULT_HTTP_PORT).describe(`TCP port of the HTTP API; 0 lets the OS choose. Default ${DEFAULT_HTTP_PORT}.`),
    lastValues: lastValuesSchema.default(() => lastValuesSchema.parse({})).describe('The in-memory cache behind GET /api/last.'),
  })
  .strict();

export type HttpConfig = z.output<typeof httpSchema>;

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
    // `http:` with nothing under it is YAML null: the same as `http: {}`.
    http: z.preprocess((v) => (v === null ? {} : v), httpSchema.optional()).describe('The HTTP API (health, Prometheus metrics, history and last values). Off unless this section is present; `http: {}` serves 127.0.0.1:9090.'),
    rules: z.string().min(1).default(DEFAULT_RULES_PATH).describe(`Folder of *.yaml rule files, relative to the config file. Default ${DEFAULT_RULES_PATH}.`),
    outputs: z
      .record(z.string(), z.object({ type: z.string() }).loose())
      .default({})
      .describe('Named remote outputs (bridges, time-series databases, webhooks), referenced by rules.'),
  })
  .strict();

export type ConfigFile = z.output<typeof configSchema>;
