import { z } from 'zod';
import type { Clock } from '../clock.js';
import type { MessageProperties, QoS } from '../broker/types.js';
import type { Logger } from '../log.js';
import { parseDuration, parseSize } from '../config/units.js';

/** One message waiting in, or taken from, an output's durable outbox. */
export interface OutboxMessage {
  /** Position in the outbox; increasing in the order messages were enqueued. */
  readonly seq: number;
  readonly time: number;
  readonly ruleId: string;
  readonly clientId: string;
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly properties: MessageProperties | undefined;
  /** Output-specific data planned by the rule action (e.g. time-series points), as JSON. */
  readonly data: unknown;
  /** Delivery attempts that failed so far. */
  readonly attempts: number;
}

/**
 * The error a connector throws from `write`. `retryable` decides what the outbox does:
 * retry later with backoff (the target is down, busy, rate limiting) or, for a permanent
 * error (the target refuses this message), move the message to the dead letters.
 */
export class OutputError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  /** The target asked to wait this long before retrying (HTTP Retry-After); the drain honours it. */
  readonly retryAfterMs: number | undefined;
  /**
   * How many leading messages of the batch the target confirmed before this error: the
   * drain counts them delivered and does not send them again.
   */
  delivered: number;
  constructor(message: string, options: { retryable: boolean; code?: string; cause?: unknown; retryAfterMs?: number; delivered?: number }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.retryable = options.retryable;
    this.retryAfterMs = options.retryAfterMs;
    this.delivered = options.delivered ?? 0;
    this.code = options.code ?? (options.retryable ? 'SB_ERR_OUTPUT_UNAVAILABLE' : 'SB_ERR_OUTPUT_REJECTED');
  }
}

/**
 * `Retry-After` (RFC 9110 §10.2.3) as a delay in ms from `now`: delay-seconds or an
 * HTTP-date; undefined when absent or unreadable. For {@link OutputError}'s `retryAfterMs`
 * (the drain caps what it honours).
 */
export function parseRetryAfter(header: string | readonly string[] | null | undefined, now: number): number | undefined {
  const value = typeof header === 'string' ? header : header?.[0];
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  // An HTTP-date names a month and weekday; Date.parse alone would also take "-5" as a year.
  const at = /[a-z]{3}/i.test(v) ? Date.parse(v) : Number.NaN;
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * A connection to one named remote output (`outputs.<name>`): the only thing an output
 * author writes. The framework owns the durable outbox, ordering, batching, retry and
 * backoff, and dead letters.
 */
export interface Connector {
  /** Connects; called once before the first write. May resolve before the target is reachable. */
  start?(): Promise<void> | void;
  /**
   * Delivers a batch, in order. Resolves only when the target has all of it. Throws an
   * OutputError saying whether a retry can help; any other error counts as retryable.
   */
  write(batch: readonly OutboxMessage[]): Promise<void>;
  /**
   * How many writes may be in flight at once (default 1). Above 1, the drain hands out the
   * next batches before the first is confirmed; the connector must deliver them in the order
   * `write` was called. After a failed write, the ones after it are abandoned and sent again.
   */
  readonly maxConcurrentWrites?: number;
  /** Disconnects; pending writes may be abandoned (their rows stay in the outbox). */
  close(): Promise<void>;
}

export interface ConnectorDeps {
  readonly log: Logger;
  readonly clock: Clock;
  /** The config file's folder: relative paths in settings (certificates) resolve against it. */
  readonly baseDir?: string;
  /** Publishes into the local broker as if from client `clientId` (bridges' in direction). */
  readonly publishLocal?: (input: { topic: string; payload: Buffer; qos: QoS; retain: boolean; properties?: MessageProperties; clientId: string }) => Promise<void>;
}

/**
 * A kind of named output (`type:` under `outputs:`): its settings schema and how to build a
 * connector from them. Registered in a registry value, like action types.
 */
export interface ConnectorType<S extends z.ZodType = z.ZodType> {
  readonly type: string;
  readonly description: string;
  /** The output's own settings (without `type` and `outbox`, which the framework adds). */
  readonly schema: S;
  create(name: string, settings: z.output<S>, deps: ConnectorDeps): Connector;
  /**
   * Outbox settings this type's own settings imply (e.g. an InfluxDB output's `batchSize`
   * and `flushInterval`); applied under the user's explicit `outbox:` settings.
   */
  outboxDefaults?(settings: z.output<S>): Partial<z.input<typeof outboxSchema>>;
}

export type ConnectorRegistry = ReadonlyMap<string, ConnectorType>;

export const DEFAULT_OUTBOX_MAX_BYTES = 256 * 1024 * 1024;
export const DEFAULT_OUTBOX_MAX_AGE_MS = 7 * 86_400_000;
export const DEFAULT_OUTBOX_BATCH = 100;
export const DEFAULT_RETRY_MIN_MS = 200;
export const DEFAULT_RETRY_MAX_MS = 60_000;

/** `outbox:` settings every named output has. */
export const outboxSchema = z
  .object({
    maxBytes: z
      .union([z.number(), z.string()])
      .transform((v, ctx) => {
        const n = parseSize(v);
        if (n === undefined || n < 1) {
          ctx.addIssue({ code: 'custom', message: `maxBytes must be a size such as "256MiB", got ${JSON.stringify(v)}` });
          return z.NEVER;
        }
        return n;
      })
      .default(DEFAULT_OUTBOX_MAX_BYTES)
      .describe('Bytes of payload the outbox may hold on disk. Default 256MiB.'),
    maxAge: z
      .union([z.number(), z.string()])
      .transform((v, ctx) => {
        const n = parseDuration(v);
        if (n === undefined || n < 1) {
          ctx.addIssue({ code: 'custom', message: `maxAge must be a duration such as "7d", got ${JSON.stringify(v)}` });
          return z.NEVER;
        }
        return n;
      })
      .default(DEFAULT_OUTBOX_MAX_AGE_MS)
      .describe('Oldest message the outbox may hold. Default 7d.'),
    overflow: z
      .enum(['block', 'drop-oldest'])
      .default('block')
      .describe('Over maxBytes or maxAge: block (QoS 1/2 input routed here is not acknowledged until there is room; the default) or drop-oldest (counted and logged).'),
    batchSize: z.number().int().min(1).max(10_000).default(DEFAULT_OUTBOX_BATCH).describe(`Messages per write, and so in flight at once. Default ${DEFAULT_OUTBOX_BATCH}.`),
    lingerMs: z
      .number().int().min(0).max(3_600_000)
      .default(0)
      .describe('When fewer than batchSize messages wait, wait this long for more before writing (a flush interval). Default 0: write at once.'),
    retryMinMs: z.number().int().min(1).default(DEFAULT_RETRY_MIN_MS).describe(`First retry delay, ms; doubles per failure, with jitter. Default ${DEFAULT_RETRY_MIN_MS}.`),
    retryMaxMs: z.number().int().min(1).default(DEFAULT_RETRY_MAX_MS).describe(`Longest retry delay, ms. Default ${DEFAULT_RETRY_MAX_MS}.`),
  })
  .strict();

export type OutboxSettings = z.output<typeof outboxSchema>;
