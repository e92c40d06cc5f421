import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import type { ConfigIssue } from '../config/issues.js';
import type { NamedOutput } from '../engine/outputs.js';
import { payloadBytes, type RuleInput } from '../engine/message.js';
import type { CompiledRule } from '../rules/compile.js';
import { compileExpression, ExpressionError, type CompiledExpression, type ExpressionLimits } from '../rules/expression.js';
import { compileTemplate, type CompiledTemplate } from '../rules/template.js';
import { compileSetting } from './common.js';
import { outboxSchema } from './connector.js';
import { remoteEffect } from './remote.js';
import { ActionConfigError, type CompiledAction, type Effect, type OutputType } from './types.js';
import {
  bodySchema,
  DEFAULT_WEBHOOK_METHOD,
  DEFAULT_WEBHOOK_TIMEOUT_MS,
  headersSchema,
  methodSchema,
  METHODS_WITH_DEFAULT_BODY,
  timeoutSchema,
  urlSchema,
  webhookConnector,
  type WebhookMethod,
  type WebhookRequest,
  type WebhookSettings,
} from './webhook.js';

/** `- webhook:` in a rule's `to:`: either `output:` (a named webhook) or `url:` (inline). */
export const webhookActionSchema = z
  .object({
    output: z.string().min(1).optional().describe('A `type: webhook` output under `outputs:`. Omit it and give `url:` for an inline webhook.'),
    url: urlSchema.optional().describe('URL template; with `output:` it replaces the output\'s. Required without `output:`.'),
    method: methodSchema.optional().describe(`HTTP method; with \`output:\` it replaces the output's. Default ${DEFAULT_WEBHOOK_METHOD}.`),
    headers: headersSchema.optional().describe('Headers (values may be templates); with `output:` they are added to the output\'s, replacing those of the same name.'),
    body: bodySchema.optional(),
    timeoutMs: timeoutSchema.optional().describe(`Inline webhooks only (a named output sets its own). Default ${DEFAULT_WEBHOOK_TIMEOUT_MS}.`),
  })
  .strict();

/**
 * A run-time problem with the request a rule planned (a URL or header value that a
 * template rendered into something HTTP cannot carry). The rule counts it as failed for that
 * message; the outbox never sees it.
 */
export class WebhookRequestError extends Error {
  readonly code = 'SB_ERR_WEBHOOK_REQUEST';
  readonly retryable = false;
}

/** An inline webhook action, until the loader gave it the output it sends through. */
export interface InlineWebhookAction extends CompiledAction {
  /** The settings of the output the loader makes for it. */
  readonly inline: WebhookSettings;
  /** This action, sending through the output named `name`. */
  withOutput(name: string): CompiledAction;
}

/** How one action builds its request; everything compiled once at load. */
interface RequestPlan {
  readonly method: WebhookMethod;
  readonly url: CompiledTemplate;
  /** Headers rendered per message (lower-case names); the output's constant ones are added at send time. */
  readonly headers: readonly (readonly [string, CompiledTemplate])[];
  readonly body: CompiledExpression | undefined;
  /** A content-type header is configured: do not choose one. */
  readonly fixedContentType: boolean;
}

const JSON_TYPE = 'application/json';
const TEXT_TYPE = 'text/plain; charset=utf-8';
/** Characters a header value may carry: visible Latin-1 and tab (RFC 9110 §5.5 field-value). */
const BAD_HEADER_CHARS = /[^\t\x20-\x7e\x80-\xff]/;

/**
 * `- webhook: { output: hooks, url?, method?, headers?, body? }` or, inline,
 * `- webhook: { url, method?, headers?, body?, timeoutMs? }`. The request (method, URL,
 * headers, body) is computed when the rule runs, against the message after the transform,
 * and stored with the message in the output's durable outbox.
 */
export const webhookAction: OutputType<typeof webhookActionSchema> = {
  name: 'webhook',
  description: 'Send each message as an HTTP request, through a webhook output\'s outbox.',
  schema: webhookActionSchema,
  compile(s, ctx): CompiledAction {
    if (s.output === undefined) {
      if (s.url === undefined) throw new ActionConfigError('give `output:` (a webhook under outputs:) or `url:` (an inline webhook)', [], 'SB_RULE_OUTPUT');
      const inline: WebhookSettings = {
        url: s.url,
        method: s.method ?? DEFAULT_WEBHOOK_METHOD,
        headers: s.headers ?? {},
        ...(s.body === undefined ? {} : { body: s.body }),
        timeoutMs: s.timeoutMs ?? DEFAULT_WEBHOOK_TIMEOUT_MS,
      };
      // Like a named output's: templated headers are rendered per message, constant ones added at send time.
      const templated = Object.fromEntries(Object.entries(inline.headers).filter(([, v]) => v.includes('${')));
      const constant = Object.fromEntries(Object.entries(inline.headers).filter(([, v]) => !v.includes('${')));
      const plan = compilePlan({ url: s.url, method: inline.method, headers: templated, body: s.body }, constant, ctx.limits);
      const action: InlineWebhookAction = {
        type: 'webhook',
        inline,
        withOutput: (name: string) => planningAction(name, plan),
        plan() {
          throw new Error('an inline webhook runs only once the loader gave it its output');
        },
      };
      return action;
    }
    const type = ctx.namedOutputs.get(s.output);
    if (type === undefined) {
      const known = [...ctx.namedOutputs].filter(([, t]) => t === 'webhook').map(([n]) => n);
      throw new ActionConfigError(`output "${s.output}" is not defined under outputs:${known.length ? ` (webhook outputs: ${known.join(', ')})` : ''}`, ['output'], 'SB_RULE_OUTPUT');
    }
    if (type !== 'webhook') throw new ActionConfigError(`output "${s.output}" is a ${type} output, not a webhook`, ['output'], 'SB_RULE_OUTPUT');
    if (s.timeoutMs !== undefined) {
      throw new ActionConfigError(`timeoutMs belongs to the output "${s.output}" under outputs:; an action that names an output cannot set it`, ['timeoutMs'], 'SB_RULE_OUTPUT');
    }
    const base = ctx.outputSettings?.get(s.output) as WebhookSettings | undefined;
    if (base === undefined) throw new ActionConfigError(`the settings of output "${s.output}" are not available`, ['output'], 'SB_RULE_OUTPUT');
    const plan = compilePlan(
      { url: s.url ?? base.url, method: s.method ?? base.method, headers: s.headers ?? {}, body: s.body ?? base.body },
      base.headers,
      ctx.limits,
      { url: s.url !== undefined, body: s.body !== undefined },
    );
    return planningAction(s.output, plan);
  },
  createSink(deps) {
    return {
      execute(effect) {
        if (!deps.outbox) throw new Error(`webhook output "${effect.output}" used but outboxes are not running`);
        return deps.outbox.enqueue(effect);
      },
    };
  },
};

/**
 * Compiles the request of one action. `own` holds the action's settings merged over the
 * output's; `outputHeaders` are the output's headers, of which only templated ones are
 * rendered per message. `fromAction` says which templates were written in the rule (their
 * syntax errors point into the rule file; the output's were checked at its own lines).
 */
function compilePlan(
  own: { url: string; method: WebhookMethod; headers: Readonly<Record<string, string>>; body: string | undefined },
  outputHeaders: Readonly<Record<string, string>>,
  limits: ExpressionLimits,
  fromAction: { url: boolean; body: boolean } = { url: true, body: true },
): RequestPlan {
  if (own.body !== undefined && own.method === 'GET') {
    throw new ActionConfigError('a GET request has no body; use POST, PUT or PATCH, or move the data into the url', [fromAction.body ? 'body' : 'method'], 'SB_RULE_OUTPUT');
  }
  const headers = new Map<string, CompiledTemplate>();
  for (const [name, value] of Object.entries(outputHeaders)) if (value.includes('${')) headers.set(name.toLowerCase(), compileTemplate(value, limits));
  for (const [name, value] of Object.entries(own.headers)) headers.set(name.toLowerCase(), compileSetting(value, ['headers', name], limits));
  let body: CompiledExpression | undefined;
  if (own.body !== undefined) {
    try {
      body = compileExpression(own.body, limits);
    } catch (err) {
      if (err instanceof ExpressionError) throw new ActionConfigError(err.message, ['body'], 'SB_RULE_EXPRESSION', err.position);
      throw err;
    }
  }
  const named = [...Object.keys(outputHeaders), ...Object.keys(own.headers)].map((n) => n.toLowerCase());
  return {
    method: own.method,
    url: fromAction.url ? compileSetting(own.url, ['url'], limits) : compileTemplate(own.url, limits),
    headers: [...headers],
    body,
    fixedContentType: named.includes('content-type'),
  };
}

/** The compiled action that plans `plan` for output `output`. */
function planningAction(output: string, plan: RequestPlan): CompiledAction {
  return {
    type: 'webhook',
    async plan(input: RuleInput, ruleId: string): Promise<Effect[]> {
      const request = await planRequest(plan, input);
      return [remoteEffect('webhook', output, ruleId, input, input.topic, input.qos, input.retain, request)];
    },
  };
}

/** Renders the request for one message. Throws an ExpressionError or a WebhookRequestError. */
async function planRequest(plan: RequestPlan, input: RuleInput): Promise<WebhookRequest> {
  const url = await plan.url.render(input);
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (parsed === undefined || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
    throw new WebhookRequestError(`url template ${JSON.stringify(plan.url.source)} rendered ${JSON.stringify(url)}, which is not an http(s) URL`);
  }
  const headers: Record<string, string> = {};
  for (const [name, template] of plan.headers) {
    const value = await template.render(input);
    if (BAD_HEADER_CHARS.test(value)) throw new WebhookRequestError(`header ${name}: ${JSON.stringify(template.source)} rendered a value HTTP cannot carry (control characters or characters beyond Latin-1); use $encodeUrlComponent() or $base64encode()`);
    headers[name] = value;
  }
  let body: string | undefined;
  let contentType: string | undefined;
  if (plan.body !== undefined) {
    const value = await plan.body.evaluate(input);
    if (value === undefined) throw new WebhookRequestError(`body ${JSON.stringify(plan.body.source)} produced no value; give a default, e.g. \`payload ? payload : {}\``);
    body = typeof value === 'string' ? value : JSON.stringify(value);
    contentType = typeof value === 'string' ? TEXT_TYPE : JSON_TYPE;
  } else if (METHODS_WITH_DEFAULT_BODY.has(plan.method)) {
    contentType = payloadContentType(input);
  }
  if (contentType !== undefined && !plan.fixedContentType) headers['content-type'] = contentType;
  return body === undefined ? { method: plan.method, url, headers } : { method: plan.method, url, headers, body };
}

/**
 * The content type of the payload sent as it is: the MQTT 5 content type when the
 * publisher set one, JSON when the payload is JSON, else UTF-8 text or bytes.
 */
function payloadContentType(input: RuleInput): string | undefined {
  if (input.properties.contentType) return input.properties.contentType;
  const bytes = payloadBytes(input);
  if (bytes.length === 0) return undefined;
  if (typeof input.payload !== 'string') return JSON_TYPE;
  return isUtf8(bytes) ? TEXT_TYPE : 'application/octet-stream';
}

/**
 * Gives every inline webhook action a named output of its own, so it delivers through a
 * durable outbox like any other: `<rule id>.webhook.<n>`, n counting the inline webhooks of
 * that rule from 0. The name stays the same across reloads while the rule keeps its id, so
 * waiting messages are delivered after a change of the action's settings. Returns the rules
 * with those actions bound, and the outputs to add to `outputs:`; a name already taken
 * there is an issue.
 */
export function bindInlineWebhooks(
  rules: readonly CompiledRule[],
  defined: Readonly<Record<string, NamedOutput>>,
  issues: ConfigIssue[],
): { rules: CompiledRule[]; outputs: Record<string, NamedOutput> } {
  const outputs: Record<string, NamedOutput> = {};
  const bound = rules.map((rule) => {
    let n = 0;
    if (!rule.actions.some(isInlineWebhook)) return rule;
    const actions = rule.actions.map((action) => {
      if (!isInlineWebhook(action)) return action;
      const name = `${rule.id}.webhook.${n++}`;
      if (defined[name] !== undefined) {
        issues.push({ file: rule.file, line: rule.line, col: 1, code: 'SB_RULE_OUTPUT', message: `rule "${rule.id}": its inline webhook needs the output name "${name}", which outputs: already uses`, hint: 'rename that output' });
      }
      const implied = webhookConnector.outboxDefaults?.(action.inline) ?? {};
      outputs[name] = { type: 'webhook', settings: action.inline, outbox: outboxSchema.parse(implied) };
      return action.withOutput(name);
    });
    return { ...rule, actions };
  });
  return { rules: bound, outputs };
}

function isInlineWebhook(action: CompiledAction): action is InlineWebhookAction {
  return action.type === 'webhook' && 'withOutput' in action;
}
