import { describe, expect, it, onTestFinished } from 'vitest';
import type { Message } from '../../../src/broker/types.js';
import { systemClock } from '../../../src/clock.js';
import { toRuleInput } from '../../../src/engine/message.js';
import { silentLogger } from '../../../src/log.js';
import { OutputError, parseRetryAfter, type OutboxMessage } from '../../../src/outputs/connector.js';
import type { CompiledAction } from '../../../src/outputs/types.js';
import { DEFAULT_EXPRESSION_LIMITS } from '../../../src/rules/expression.js';
import { webhookAction, type InlineWebhookAction, WebhookRequestError } from '../../../src/outputs/webhook-action.js';
import { webhookConnector, type WebhookRequest } from '../../../src/outputs/webhook.js';
import { WebhookTarget } from '../../helpers/webhook-target.js';

function message(payload: Buffer | string, overrides: Partial<Message> = {}): Message {
  return { topic: 'a/b', payload: Buffer.from(payload), qos: 1, retain: false, clientId: 'c', timestamp: 1000, hops: 0, ...overrides };
}

/** An inline webhook action compiled as the loader does, bound to output `out`. */
function inline(settings: Record<string, unknown>): CompiledAction {
  const parsed = webhookAction.schema.parse(settings);
  const action = webhookAction.compile(parsed, { limits: DEFAULT_EXPRESSION_LIMITS, namedOutputs: new Map() }) as InlineWebhookAction;
  return action.withOutput('out');
}

async function planned(settings: Record<string, unknown>, m: Message): Promise<WebhookRequest> {
  const [effect] = await inline(settings).plan(toRuleInput(m), 'rule');
  expect(effect).toMatchObject({ type: 'webhook', output: 'out', ruleId: 'rule', topic: m.topic });
  return effect!.data as WebhookRequest;
}

describe('parseRetryAfter', () => {
  it('reads delay-seconds and HTTP dates, and ignores what it cannot read', () => {
    const now = Date.UTC(2026, 0, 1, 12, 0, 0);
    expect(parseRetryAfter('120', now)).toBe(120_000);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter('Thu, 01 Jan 2026 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 11:00:00 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('-5', now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});

describe('planning a webhook request', () => {
  it('chooses the content type from the payload: MQTT 5 content type, JSON, UTF-8 text, or bytes', async () => {
    const url = 'https://x.example/in';
    expect((await planned({ url }, message('{"a":1}'))).headers).toEqual({ 'content-type': 'application/json' });
    expect((await planned({ url }, message('hello'))).headers).toEqual({ 'content-type': 'text/plain; charset=utf-8' });
    expect((await planned({ url }, message(Buffer.from([0xff, 0x00, 0xfe])))).headers).toEqual({ 'content-type': 'application/octet-stream' });
    expect((await planned({ url }, message('<a/>', { properties: { contentType: 'application/xml' } }))).headers).toEqual({ 'content-type': 'application/xml' });
    expect((await planned({ url, headers: { 'Content-Type': 'application/cloudevents+json' } }, message('{"a":1}'))).headers).toEqual({});
  });

  it('stores no body when the payload is the body, and none at all for GET and DELETE', async () => {
    const post = await planned({ url: 'https://x.example/in' }, message('{"a":1}'));
    expect(post).toEqual({ method: 'POST', url: 'https://x.example/in', headers: { 'content-type': 'application/json' } });
    expect(await planned({ url: 'https://x.example/in?v=${payload.a}', method: 'get' }, message('{"a":1}'))).toEqual({ method: 'GET', url: 'https://x.example/in?v=1', headers: {} });
    expect(await planned({ url: 'https://x.example/in', method: 'DELETE' }, message('{"a":1}'))).toEqual({ method: 'DELETE', url: 'https://x.example/in', headers: {} });
  });

  it('renders templated headers per message and leaves constant ones to the connector', async () => {
    const req = await planned({ url: 'https://x.example/in', headers: { 'X-Topic': '${topic}', 'X-Key': 'abc' } }, message('1'));
    expect(req.headers).toEqual({ 'x-topic': 'a/b', 'content-type': 'application/json' });
  });

  it('refuses a rendered URL that is not http(s), and a header value HTTP cannot carry', async () => {
    const action = inline({ url: 'https://x.example/${payload.p}', headers: { 'x-v': '${payload.v}' } });
    const plan = (p: unknown) => action.plan(toRuleInput(message(JSON.stringify(p))), 'rule');
    await expect(plan({ p: 'ok', v: 'line\nbreak' })).rejects.toBeInstanceOf(WebhookRequestError);
    await expect(plan({ p: 'ok', v: 'snow ☃' })).rejects.toMatchObject({ code: 'SB_ERR_WEBHOOK_REQUEST', message: expect.stringContaining('header x-v') });
    await expect(plan({ p: 'ok', v: 'fine' })).resolves.toHaveLength(1);
    const hostless = inline({ url: 'http://h${payload.p}' });
    await expect(hostless.plan(toRuleInput(message('{"p":":99999"}')), 'rule')).rejects.toMatchObject({ code: 'SB_ERR_WEBHOOK_REQUEST', message: expect.stringContaining('not an http(s) URL') });
  });

  it('fails a body expression that yields nothing', async () => {
    await expect(inline({ url: 'https://x.example/', body: 'payload.missing' }).plan(toRuleInput(message('{}')), 'rule')).rejects.toMatchObject({ code: 'SB_ERR_WEBHOOK_REQUEST' });
  });
});

describe('webhook connector', () => {
  async function subject() {
    const target = await WebhookTarget.start();
    onTestFinished(() => target.close());
    const connector = webhookConnector.create('w', webhookConnector.schema.parse({ url: `${target.url}/`, headers: { authorization: 'Bearer k', 'x-t': '${topic}' }, timeoutMs: 1000 }), { log: silentLogger(), clock: systemClock });
    onTestFinished(() => connector.close());
    return { target, connector };
  }

  function row(data: unknown, payload = '{"a":1}'): OutboxMessage {
    return { seq: 1, time: 0, ruleId: 'r', clientId: 'c', topic: 't', payload: Buffer.from(payload), qos: 1, retain: false, properties: undefined, data, attempts: 0 };
  }

  it('adds the output\'s constant headers when sending, under the planned ones', async () => {
    const { target, connector } = await subject();
    await connector.write([row({ method: 'PATCH', url: `${target.url}/p`, headers: { 'x-t': 'planned', authorization: 'Bearer override' } })]);
    expect(target.requests[0]).toMatchObject({ method: 'PATCH', url: '/p', headers: { authorization: 'Bearer override', 'x-t': 'planned' } });
    await connector.write([row({ method: 'POST', url: `${target.url}/p`, headers: {} })]);
    expect(target.requests[1]!.headers['authorization']).toBe('Bearer k');
    expect(target.requests[1]!.body.toString()).toBe('{"a":1}');
  });

  it('does not follow a redirect: a 3xx is refused for good, naming the location', async () => {
    const { target, connector } = await subject();
    target.answer = () => ({ status: 301, headers: { location: 'http://elsewhere.example/' } });
    const err = await connector.write([row({ method: 'POST', url: `${target.url}/old`, headers: {} })]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutputError);
    expect(err).toMatchObject({ retryable: false, code: 'SB_ERR_OUTPUT_REJECTED', message: expect.stringContaining('location: http://elsewhere.example/') });
    expect(target.requests).toHaveLength(1);
  });

  it('treats 408 as retryable and quotes a long refusal only up to 512 characters', async () => {
    const { target, connector } = await subject();
    target.answer = () => ({ status: 408 });
    await expect(connector.write([row({ method: 'POST', url: target.url, headers: {} })])).rejects.toMatchObject({ retryable: true, code: 'SB_ERR_OUTPUT_UNAVAILABLE' });
    target.answer = () => ({ status: 422, body: 'x'.repeat(2000) });
    const err = (await connector.write([row({ method: 'POST', url: target.url, headers: {} })]).catch((e: unknown) => e)) as OutputError;
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(`${'x'.repeat(512)}… (1488 more characters)`);
  });

  it('refuses for good a row that holds no planned request', async () => {
    const { connector } = await subject();
    await expect(connector.write([row(undefined)])).rejects.toMatchObject({ retryable: false, message: expect.stringContaining('no planned request') });
  });

  it('stops a batch at the first failure, having sent the messages before it', async () => {
    const { target, connector } = await subject();
    target.answer = (r) => (r.url === '/2' ? { status: 500 } : { status: 204 });
    const batch = [1, 2, 3].map((n) => ({ ...row({ method: 'POST', url: `${target.url}/${n}`, headers: {} }), seq: n }));
    await expect(connector.write(batch)).rejects.toMatchObject({ retryable: true });
    expect(target.requests.map((r) => r.url)).toEqual(['/1', '/2']);
  });

  it('aborts a request in flight on close, with a retryable error', async () => {
    const { target, connector } = await subject();
    target.answer = () => 'hang';
    const writing = connector.write([row({ method: 'POST', url: target.url, headers: {} })]);
    await target.waitFor(1);
    await connector.close();
    await expect(writing).rejects.toMatchObject({ retryable: true, message: expect.stringContaining('closed') });
  });
});
