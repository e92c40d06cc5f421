import http from 'node:http';
import https from 'node:https';
import { HttpError, InfluxDB } from '@influxdata/influxdb-client';
import { z } from 'zod';
import { parseDuration } from '../config/units.js';
import { OutputError, parseRetryAfter, type Connector, type ConnectorDeps, type ConnectorType, type OutboxMessage } from './connector.js';
import { malformedPoints, PRECISIONS, toLine } from './influx-line.js';
import type { InfluxPoint } from './influx-points.js';

/** Points per write request, and messages per outbox batch. */
export const DEFAULT_INFLUX_BATCH = 5000;
/** How long a small batch waits for more points before it is written. */
export const DEFAULT_INFLUX_FLUSH_MS = 1000;
/** How long one write request may take before it counts as failed (and is retried). */
export const DEFAULT_INFLUX_TIMEOUT_MS = 10_000;
/** Error response bodies are quoted in dead letters and logs up to this many characters. */
const MAX_BODY_CHARS = 1000;

/** Settings of a `type: influx` output; the `.describe()` texts are its documentation. */
export const influxSchema = z
  .object({
    url: z
      .string()
      .regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, { error: 'must be an http:// or https:// URL such as http://localhost:8086 (without /api/v2 or a query)' })
      .refine((url) => !/\/api\/v2(\/write)?\/?$/.test(url), { error: 'give the base URL without /api/v2 (e.g. http://localhost:8086); /api/v2/write is appended' })
      .describe('Base URL of InfluxDB (2.x, 3, 1.8+) or VictoriaMetrics; /api/v2/write is appended.'),
    token: z.string().optional().describe('API token (`Authorization: Token …`); use ${env:NAME}. InfluxDB 1.8: "user:password". Not needed for VictoriaMetrics.'),
    org: z.string().optional().describe('Organization name or ID (InfluxDB 2.x). Default: none (the token\'s org; ignored by InfluxDB 1.8 and VictoriaMetrics).'),
    bucket: z.string().optional().describe('Bucket (InfluxDB 2.x/3), or "database/retention-policy" (InfluxDB 1.8). Default: none (VictoriaMetrics needs none).'),
    precision: z.enum(PRECISIONS, { error: (i) => `must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(i.input)}` }).default('ms').describe('Timestamp precision written: ns, us, ms or s. Default ms.'),
    batchSize: z.number().int().min(1).max(10_000).default(DEFAULT_INFLUX_BATCH).describe(`Points per write request (and messages per outbox batch). Default ${DEFAULT_INFLUX_BATCH}.`),
    flushInterval: z
      .union([z.number(), z.string()])
      .transform((v, ctx) => {
        const ms = parseDuration(v);
        if (ms === undefined || ms > 3_600_000) {
          ctx.addIssue({ code: 'custom', message: `must be a duration up to 1h such as "1s" or "250ms", got ${JSON.stringify(v)}` });
          return z.NEVER;
        }
        return ms;
      })
      .default(DEFAULT_INFLUX_FLUSH_MS)
      .describe('How long a batch smaller than batchSize waits for more points before it is written (ms, or "1s"). Default 1s.'),
    timeoutMs: z.number().int().min(100).max(600_000).default(DEFAULT_INFLUX_TIMEOUT_MS).describe(`Time allowed for one write request, ms. Default ${DEFAULT_INFLUX_TIMEOUT_MS}.`),
    gzip: z.boolean().default(true).describe('Compress request bodies over 1 KiB with gzip. Default true.'),
    headers: z.record(z.string(), z.string()).optional().describe('Extra HTTP headers sent with every write.'),
  })
  .strict();

/** An influx output's settings after validation (defaults filled in, flushInterval in ms). */
export type InfluxSettings = z.output<typeof influxSchema>;

/** The write path of the InfluxDB 2 API, which InfluxDB 1.8+, 3 and VictoriaMetrics all serve. */
function writePath(s: InfluxSettings): string {
  const query = new URLSearchParams();
  if (s.org !== undefined) query.set('org', s.org);
  if (s.bucket !== undefined) query.set('bucket', s.bucket);
  query.set('precision', s.precision);
  return `/api/v2/write?${query.toString()}`;
}

/**
 * Maps a failed write request to the outbox's terms. 429 and 5xx (the target is busy or
 * down) and anything below HTTP (refused, reset, timed out) are retryable, after the
 * target's Retry-After when it gave one; any other status means the target refuses these
 * points (a malformed line, a field type conflict, a missing bucket, a bad token) and will
 * again, so it is permanent and quotes the response body.
 */
export function toOutputError(name: string, err: unknown, now: number): OutputError {
  if (err instanceof HttpError) {
    const status = err.statusCode;
    const body = (err.body ?? '').trim().slice(0, MAX_BODY_CHARS);
    const text = `influx output "${name}": HTTP ${status}${err.statusMessage ? ` ${err.statusMessage}` : ''}${body ? `: ${body}` : ''}`;
    if (status === 429 || status >= 500) {
      return new OutputError(text, { retryable: true, cause: err, retryAfterMs: parseRetryAfter(err.headers?.['retry-after'], now) });
    }
    return new OutputError(text, { retryable: false, cause: err });
  }
  const detail = err instanceof Error ? `${(err as { code?: string }).code ? `${(err as { code?: string }).code} ` : ''}${err.message}` : String(err);
  return new OutputError(`influx output "${name}": ${detail}`, { retryable: true, cause: err });
}

/**
 * Whether `err` refuses what was sent (400 malformed or conflicting points, 413 too large,
 * 422, or rows signalbox cannot serialise), so a part of the batch may still be taken; a
 * refusal of anything at all (401, 403, 404) is not worth halving the batch for.
 */
function refusesContent(err: unknown): err is OutputError {
  if (!(err instanceof OutputError) || err.retryable) return false;
  if (err.cause === undefined) return true;
  return err.cause instanceof HttpError && [400, 413, 422].includes(err.cause.statusCode);
}

/**
 * One influx output: turns each batch of outbox rows into line protocol and writes it with
 * the InfluxDB client's HTTP transport, in requests of at most `batchSize` points, one after
 * another. The client's own buffering and retries are not used: the outbox is the only
 * buffer, and `write` resolves only when every request was answered 2xx.
 */
export class InfluxConnector implements Connector {
  private readonly client: InfluxDB;
  private readonly agent: http.Agent;
  private readonly path: string;
  /**
   * What halving a refused batch found out, by outbox seq: null when the target has the
   * message, the error when it refuses it. At most one batch's worth; see bisect().
   */
  private readonly verdicts = new Map<number, OutputError | null>();
  /** The request in flight (one at a time), so close() can cut it short. */
  private inflight: AbortController | undefined;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly settings: InfluxSettings,
    private readonly deps: Pick<ConnectorDeps, 'clock' | 'log'>,
  ) {
    // One kept-alive connection: requests go one at a time, in order.
    const Agent = settings.url.startsWith('https:') ? https.Agent : http.Agent;
    this.agent = new Agent({ keepAlive: true, maxSockets: 1 });
    this.client = new InfluxDB({
      url: settings.url,
      token: settings.token,
      timeout: settings.timeoutMs,
      headers: settings.headers,
      transportOptions: { agent: this.agent },
    });
    this.path = writePath(settings);
  }

  async write(batch: readonly OutboxMessage[]): Promise<void> {
    if (this.closed) throw new OutputError(`influx output "${this.name}" is closed`, { retryable: true });
    if (batch.length === 1 && this.verdicts.has(batch[0]!.seq)) {
      const verdict = this.verdicts.get(batch[0]!.seq);
      this.verdicts.delete(batch[0]!.seq);
      if (verdict === null) return;
      throw verdict;
    }
    this.verdicts.clear();
    try {
      await this.writeMessages(batch);
    } catch (err) {
      if (batch.length > 1 && refusesContent(err)) await this.bisect(batch, err, { left: 4 * Math.ceil(Math.log2(batch.length)) + 4 });
      throw err;
    }
  }

  /**
   * After the target refused a batch for good, the drain resends it one message at a time to
   * find the culprit: with thousands of messages per batch that is thousands of requests.
   * Halving the batch instead finds one culprit in about 2·log2(n) requests; what the target
   * took meanwhile and the culprits' errors are kept in `verdicts`, so the drain's
   * one-by-one resend is answered from them without a request. `budget` bounds the requests
   * (when every message is refused, halving would cost 2n); messages it leaves without a
   * verdict are resent one by one as usual. A retryable failure on the way drops the
   * verdicts: the drain then retries the whole batch.
   */
  private async bisect(batch: readonly OutboxMessage[], refused: OutputError, budget: { left: number }): Promise<void> {
    if (batch.length === 1) {
      this.verdicts.set(batch[0]!.seq, refused);
      return;
    }
    const mid = batch.length >> 1;
    for (const half of [batch.slice(0, mid), batch.slice(mid)]) {
      if (budget.left-- <= 0) return;
      try {
        await this.writeMessages(half);
        for (const m of half) this.verdicts.set(m.seq, null);
      } catch (err) {
        if (!refusesContent(err)) {
          if (!(err instanceof OutputError) || err.retryable) this.verdicts.clear();
          return;
        }
        await this.bisect(half, err, budget);
      }
    }
  }

  /** Line protocol for `batch`, written in requests of at most batchSize points, in order. */
  private async writeMessages(batch: readonly OutboxMessage[]): Promise<void> {
    const size = this.settings.batchSize;
    const precision = this.settings.precision;
    let lines: string[] = [];
    for (const m of batch) {
      const bad = malformedPoints(m.data);
      if (bad) throw new OutputError(`influx output "${this.name}": message ${m.seq} of rule "${m.ruleId}" cannot be written: ${bad}`, { retryable: false });
      for (const point of m.data as InfluxPoint[]) {
        lines.push(toLine(point, precision));
        if (lines.length === size) {
          await this.send(lines);
          lines = [];
        }
      }
    }
    if (lines.length > 0) await this.send(lines);
  }

  /**
   * One write request; resolves on a 2xx answer, rejects with an OutputError otherwise. The
   * whole request (not only each socket read, which is what the transport's own timeout
   * bounds) must finish within timeoutMs.
   */
  private send(lines: string[]): Promise<void> {
    if (this.closed) return Promise.reject(new OutputError(`influx output "${this.name}" is closed`, { retryable: true }));
    // A controller per request: the transport adds an abort listener to the signal it is given.
    const abort = new AbortController();
    this.inflight = abort;
    const { clock } = this.deps;
    let timedOut = false;
    const timer = clock.setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, this.settings.timeoutMs);
    return new Promise<void>((resolve, reject) => {
      let status: number | undefined;
      const fail = (err: unknown) =>
        reject(timedOut ? new OutputError(`influx output "${this.name}": no answer within timeoutMs ${this.settings.timeoutMs}`, { retryable: true, cause: err }) : toOutputError(this.name, err, clock.now()));
      try {
        this.client.transport.send(
          this.path,
          lines.join('\n'),
          {
            method: 'POST',
            headers: { 'content-type': 'text/plain; charset=utf-8' },
            gzipThreshold: this.settings.gzip ? 1024 : undefined,
            signal: abort.signal,
          },
          {
            responseStarted: (_headers, statusCode) => {
              status = statusCode;
            },
            error: fail,
            complete: () => {
              // Cancelled (close(), the deadline): the transport completes without an answer.
              if (status === undefined) fail(new Error('the request was cancelled'));
              else resolve();
            },
          },
        );
      } catch (err) {
        fail(err);
      }
    }).finally(() => {
      clock.clearTimeout(timer);
      if (this.inflight === abort) this.inflight = undefined;
    });
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    this.inflight?.abort();
    this.agent.destroy();
    return Promise.resolve();
  }
}

/** `type: influx`: InfluxDB 2.x/3, 1.8+ (v2 write API) and VictoriaMetrics, through the durable outbox. */
export const influxConnector: ConnectorType<typeof influxSchema> = {
  type: 'influx',
  description: 'InfluxDB 2.x, 3 or 1.8+, or VictoriaMetrics: time-series points written with the InfluxDB v2 write API.',
  schema: influxSchema,
  create: (name, settings, deps) => new InfluxConnector(name, settings, deps),
  outboxDefaults: (settings) => ({ batchSize: settings.batchSize, lingerMs: settings.flushInterval }),
};
