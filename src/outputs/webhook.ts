import { z } from 'zod';
import { compileExpression, ExpressionError } from '../rules/expression.js';
import { compileTemplate } from '../rules/template.js';
import { OutputError, type ConnectorType, type OutboxMessage } from './connector.js';
import { sendRequest, type PreparedRequest } from './webhook-http.js';

/** HTTP methods a webhook may use. */
export const WEBHOOK_METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
/** One of {@link WEBHOOK_METHODS}, upper case. */
export type WebhookMethod = (typeof WEBHOOK_METHODS)[number];

/** Methods that send the message's payload when no `body:` is given; GET and DELETE send none. */
export const METHODS_WITH_DEFAULT_BODY: ReadonlySet<WebhookMethod> = new Set(['POST', 'PUT', 'PATCH']);

/** The method when none is given. */
export const DEFAULT_WEBHOOK_METHOD: WebhookMethod = 'POST';
/** Time one request may take, response body included. */
export const DEFAULT_WEBHOOK_TIMEOUT_MS = 10_000;
/** Longest `timeoutMs` accepted: a request held longer than 5 minutes stalls its whole outbox. */
export const MAX_WEBHOOK_TIMEOUT_MS = 300_000;
/** Headers one webhook may set. */
export const MAX_WEBHOOK_HEADERS = 64;
/** Longest header value, in characters. */
export const MAX_WEBHOOK_HEADER_CHARS = 8192;

/** RFC 9110 §5.6.2 `token`: the characters a header field name may use. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** A URL template must start with a literal scheme and the first character of the host. */
const URL_START = /^https?:\/\/[^\s/$]/i;

/** `method:` in any case, e.g. `post` or `POST`. */
export const methodSchema = z
  .string()
  .transform((s) => s.toUpperCase())
  .pipe(z.enum(WEBHOOK_METHODS, { error: (issue) => `must be one of ${WEBHOOK_METHODS.join(', ')}, got ${JSON.stringify(issue.input)}` }))
  .describe(`HTTP method: ${WEBHOOK_METHODS.join(', ')} (any case). Default ${DEFAULT_WEBHOOK_METHOD}.`);

/**
 * `url:` a `${…}` template whose scheme (http or https) and host start are literal, so a
 * message can choose the path or query but never where the request goes to.
 */
export const urlSchema = z
  .string()
  .min(1)
  .max(8192)
  .superRefine((text, ctx) => {
    if (!URL_START.test(text)) {
      ctx.addIssue({ code: 'custom', message: `must start with http:// or https:// and a literal host, e.g. "https://hooks.example.com/${'${topic}'}", got ${JSON.stringify(text)}` });
    } else if (!text.includes('${') && !URL.canParse(text)) {
      ctx.addIssue({ code: 'custom', message: `is not a valid URL: ${JSON.stringify(text)}` });
    }
  })
  .describe('Where the request goes: an http(s) URL, a `${…}` template evaluated per message against the message after the transform. Required.');

/** `headers:` name → value; values may be `${…}` templates. */
export const headersSchema = z
  .record(
    z.string(),
    z.string().max(MAX_WEBHOOK_HEADER_CHARS).refine((v) => !/[\r\n\0]/.test(v), { error: 'header values may not contain CR, LF or NUL' }),
  )
  .superRefine((h, ctx) => {
    const names = Object.keys(h);
    if (names.length > MAX_WEBHOOK_HEADERS) ctx.addIssue({ code: 'custom', message: `at most ${MAX_WEBHOOK_HEADERS} headers, got ${names.length}` });
    for (const name of names) {
      if (!HEADER_NAME.test(name)) ctx.addIssue({ code: 'custom', path: [name], message: `header name ${JSON.stringify(name)}: header names are letters, digits and !#$%&'*+.^_\`|~-` });
    }
  })
  .describe('Request headers; values may be `${…}` templates, and `${env:NAME}` is replaced at load. Default: none (content-type is chosen from the body).');

/** `body:` a JSONata expression. */
export const bodySchema = z
  .string()
  .min(1)
  .describe('JSONata expression whose result is the request body: a string is sent as text/plain, anything else as JSON. Default: the payload as it leaves the rule (POST, PUT, PATCH; GET and DELETE send no body).');

/** `timeoutMs:` of one request. */
export const timeoutSchema = z
  .number()
  .int()
  .min(1)
  .max(MAX_WEBHOOK_TIMEOUT_MS)
  .describe(`Time one request may take (connect, send, response), ms; past it the request is retried. Default ${DEFAULT_WEBHOOK_TIMEOUT_MS}.`);

/** `type: webhook` settings under `outputs:`. */
export const webhookSchema = z
  .object({
    url: urlSchema,
    method: methodSchema.default(DEFAULT_WEBHOOK_METHOD),
    headers: headersSchema.default({}),
    body: bodySchema.optional(),
    timeoutMs: timeoutSchema.default(DEFAULT_WEBHOOK_TIMEOUT_MS),
  })
  .strict()
  .superRefine((s, ctx) => {
    // Rule actions compile these again with the engine's limits; here only the syntax is checked, at the output's own lines.
    const check = (path: (string | number)[], compile: () => unknown) => {
      try {
        compile();
      } catch (err) {
        if (!(err instanceof ExpressionError)) throw err;
        ctx.addIssue({ code: 'custom', path, message: err.message });
      }
    };
    check(['url'], () => compileTemplate(s.url));
    for (const [name, value] of Object.entries(s.headers)) check(['headers', name], () => compileTemplate(value));
    if (s.body !== undefined) check(['body'], () => compileExpression(s.body!));
    if (s.body !== undefined && s.method === 'GET') ctx.addIssue({ code: 'custom', path: ['body'], message: 'a GET request has no body; use POST, PUT or PATCH, or move the data into the url' });
  });

/** A webhook output's validated settings (also those the loader makes for an inline webhook). */
export type WebhookSettings = z.output<typeof webhookSchema>;

/**
 * What a webhook action planned for one message when its rule ran, stored as the outbox
 * row's `data`. `body` absent: the row's payload is the body (POST, PUT, PATCH), or there is
 * none (GET, DELETE). Constant headers of the output are not here: they are added when sent.
 */
export interface WebhookRequest {
  readonly method: WebhookMethod;
  readonly url: string;
  /** Lower-case names. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body?: string;
}

/** The request planned in an outbox row, or undefined when the row holds none. */
function plannedRequest(data: unknown): WebhookRequest | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const d = data as Record<string, unknown>;
  if (typeof d['url'] !== 'string' || typeof d['method'] !== 'string' || !(WEBHOOK_METHODS as readonly string[]).includes(d['method'])) return undefined;
  if (typeof d['headers'] !== 'object' || d['headers'] === null) return undefined;
  if (d['body'] !== undefined && typeof d['body'] !== 'string') return undefined;
  return d as unknown as WebhookRequest;
}

/** Header values of the output without `${…}`: applied at send time, so secrets never go to the outbox. */
export function constantHeaders(settings: Pick<WebhookSettings, 'headers'>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(settings.headers)) if (!value.includes('${')) out[name.toLowerCase()] = value;
  return out;
}

/**
 * `type: webhook`: sends each message as one HTTP request, planned by the rule action when
 * the rule ran (see webhook-action.ts). A batch is sent one request at a time, in order;
 * `write` resolves when every request got a 2xx answer. A failure stops the batch and is
 * thrown, so the drain retries the whole batch (requests that already succeeded are sent
 * again: at least once) or narrows a refused one down to the dead letters.
 */
export const webhookConnector: ConnectorType<typeof webhookSchema> = {
  type: 'webhook',
  description: 'An HTTP endpoint: one request per message, method, URL, headers and body planned by the rule.',
  schema: webhookSchema,
  create(name, settings, deps) {
    const fixed = constantHeaders(settings);
    const inFlight = new Set<AbortController>();
    let closed = false;
    const send = async (m: OutboxMessage): Promise<void> => {
      const planned = plannedRequest(m.data);
      if (!planned) throw new OutputError(`webhook "${name}": the outbox row holds no planned request (rule ${m.ruleId})`, { retryable: false });
      const request: PreparedRequest = {
        method: planned.method,
        url: planned.url,
        headers: { ...fixed, ...planned.headers },
        body: planned.body !== undefined ? planned.body : METHODS_WITH_DEFAULT_BODY.has(planned.method) ? m.payload : undefined,
      };
      const controller = new AbortController();
      inFlight.add(controller);
      try {
        await sendRequest(name, request, { timeoutMs: settings.timeoutMs, signal: controller.signal, clock: deps.clock });
      } finally {
        inFlight.delete(controller);
      }
    };
    return {
      async write(batch) {
        // One request at a time keeps the outbox order without tracking topics; throughput
        // per output is then one round trip per message.
        for (let i = 0; i < batch.length; i++) {
          if (closed) throw new OutputError(`webhook "${name}" is closed`, { retryable: true, delivered: i });
          try {
            await send(batch[i]!);
          } catch (err) {
            // The requests before this one succeeded: they are not sent again.
            if (err instanceof OutputError) err.delivered = i;
            throw err;
          }
        }
      },
      async close() {
        closed = true;
        for (const c of inFlight) c.abort(new OutputError(`webhook "${name}" is closed`, { retryable: true }));
      },
    };
  },
};
