import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { loadProject } from '../../src/config/load.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { storedMessages } from '../../src/storage/outbox-codec.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { eventually } from '../helpers/durable.js';
import { connect } from '../helpers/mqtt.js';
import { WebhookTarget, type Answer } from '../helpers/webhook-target.js';

/**
 * Webhook outputs through a whole signalbox: MQTT clients publish over real sockets, rules
 * send to a real HTTP server on 127.0.0.1 (port 0), and delivery goes through the durable
 * outbox with its retries and dead letters.
 */

/** Fast retries, so a recovered target is noticed within a few ms. */
const FAST_RETRY = '{ retryMinMs: 5, retryMaxMs: 20 }';

async function target(answer?: (n: number) => Answer): Promise<WebhookTarget> {
  const t = await WebhookTarget.start();
  if (answer) {
    let n = 0;
    t.answer = () => answer(n++);
  }
  onTestFinished(() => t.close());
  return t;
}

async function signalbox(config: string, rules: string, env: NodeJS.ProcessEnv = {}): Promise<TestEngine> {
  const sb = await startEngine(
    { config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n${config}`, rules: { 'hooks.yaml': rules } },
    { env: { ...process.env, ...env } },
  );
  onTestFinished(() => sb.close());
  return sb;
}

async function client(url: string): Promise<MqttClient> {
  const c = await connect(url);
  onTestFinished(() => {
    c.end(true);
  });
  return c;
}

function hooksOutput(t: WebhookTarget, extra = ''): string {
  return `outputs:
  hooks:
    type: webhook
    url: "${t.url}/devices/\${levels[1]}?t=\${$encodeUrlComponent(topic)}"
    method: PUT
    headers:
      authorization: "Bearer \${env:HOOK_TOKEN}"
      x-qos: "\${qos}"
    timeoutMs: 2000
    outbox: ${FAST_RETRY}
${extra}`;
}

describe('webhook output', () => {
  it('sends the method, URL template, headers and the payload after the transform as JSON', async () => {
    const t = await target();
    const sb = await signalbox(
      hooksOutput(t),
      `rules:
  - id: temps
    on: sensors/+/temp
    transform: '{ "c": payload.c, "f": payload.c * 9 / 5 + 32 }'
    to:
      - webhook: { output: hooks }
`,
      { HOOK_TOKEN: 's3cret' },
    );
    const c = await client(sb.url);
    await c.publishAsync('sensors/kitchen/temp', JSON.stringify({ c: 20 }), { qos: 1 });
    const [req] = await t.waitFor(1);
    expect(req!.method).toBe('PUT');
    expect(req!.url).toBe('/devices/kitchen?t=sensors%2Fkitchen%2Ftemp');
    expect(req!.headers['authorization']).toBe('Bearer s3cret');
    expect(req!.headers['x-qos']).toBe('1');
    expect(req!.headers['content-type']).toBe('application/json');
    expect(JSON.parse(req!.body.toString())).toEqual({ c: 20, f: 68 });
  });

  it('keeps the constant headers (secrets) out of the outbox: they are added when sent', async () => {
    const t = await target(() => 'hang');
    const sb = await signalbox(hooksOutput(t), 'rules:\n  - id: r\n    on: sensors/#\n    to:\n      - webhook: { output: hooks }\n', { HOOK_TOKEN: 's3cret' });
    const c = await client(sb.url);
    await c.publishAsync('sensors/a/temp', '{"c":1}', { qos: 1 });
    await t.waitFor(1);
    expect(storedMessages(sb.engine.db, 'hooks')[0]!.data).toEqual({ method: 'PUT', url: `${t.url}/devices/a?t=sensors%2Fa%2Ftemp`, headers: { 'x-qos': '1', 'content-type': 'application/json' } });
    const stored = sb.engine.db.prepare("SELECT messages FROM outbox_batches WHERE output = 'hooks'").pluck().get() as Buffer;
    expect(stored.toString('latin1')).not.toContain('s3cret');
    // A request in flight holds shutdown until it settles; end it now rather than at its timeout.
    await t.close();
  });

  it('sends the result of a JSONata body: objects as JSON, strings as text; the action overrides the output', async () => {
    const t = await target();
    const sb = await signalbox(
      hooksOutput(t),
      `rules:
  - id: bodies
    on: sensors/+/temp
    to:
      - webhook: { output: hooks, method: post, url: "${t.url}/json", body: '{ "room": levels[1], "celsius": payload.c, "at": timestamp > 0 }' }
      - webhook: { output: hooks, url: "${t.url}/text", body: "'temp=' & payload.c", headers: { x-qos: fixed } }
`,
      { HOOK_TOKEN: 'x' },
    );
    const c = await client(sb.url);
    await c.publishAsync('sensors/hall/temp', '{"c":21.5}', { qos: 1 });
    const reqs = await t.waitFor(2);
    const json = reqs.find((r) => r.url === '/json')!;
    expect(json.method).toBe('POST');
    expect(json.headers['content-type']).toBe('application/json');
    expect(JSON.parse(json.body.toString())).toEqual({ room: 'hall', celsius: 21.5, at: true });
    const text = reqs.find((r) => r.url === '/text')!;
    expect(text.method).toBe('PUT');
    expect(text.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(text.headers['x-qos']).toBe('fixed');
    expect(text.body.toString()).toBe('temp=21.5');
  });

  it('retries a 503 until the target takes the message, in order', async () => {
    const t = await target((n) => (n < 2 ? { status: 503, body: 'busy' } : { status: 200, body: 'ok' }));
    const sb = await signalbox(hooksOutput(t), 'rules:\n  - id: r\n    on: sensors/#\n    to:\n      - webhook: { output: hooks }\n', { HOOK_TOKEN: 'x' });
    const c = await client(sb.url);
    await c.publishAsync('sensors/a/temp', '{"n":1}', { qos: 1 });
    await c.publishAsync('sensors/a/temp', '{"n":2}', { qos: 1 });
    const status = await eventually(() => sb.engine.outputs.status().find((o) => o.name === 'hooks' && o.delivered === 2), 'both delivered');
    expect(status.retries).toBeGreaterThanOrEqual(2);
    expect(status.deadLettered).toBe(0);
    const bodies = t.requests.map((r) => JSON.parse(r.body.toString()).n as number);
    // At least once: a retried batch may resend what already went through; the last of each is in order.
    expect(bodies.slice(-2)).toEqual([1, 2]);
    expect(bodies.slice(0, 2)).toEqual([1, 1]);
  });

  it('waits as long as a 429 Retry-After asks before retrying', async () => {
    const t = await target((n) => (n === 0 ? { status: 429, headers: { 'retry-after': '1' }, body: 'slow down' } : { status: 204 }));
    const sb = await signalbox(hooksOutput(t), 'rules:\n  - id: r\n    on: sensors/#\n    to:\n      - webhook: { output: hooks }\n', { HOOK_TOKEN: 'x' });
    const c = await client(sb.url);
    const times: number[] = [];
    const answer = t.answer;
    t.answer = (r) => (times.push(Date.now()), answer(r));
    await c.publishAsync('sensors/a/temp', '{"n":1}', { qos: 1 });
    await t.waitFor(2, { within: 4000 });
    expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(950);
    expect(sb.engine.outputs.status().find((o) => o.name === 'hooks')!.lastError).toMatch(/429.*slow down/);
  });

  it('dead-letters a message answered 400, with the status and the response body, and carries on', async () => {
    const t = await target();
    t.answer = (r) => (r.body.includes('bad') ? { status: 400, body: '{"error":"field c is missing"}' } : { status: 204 });
    const sb = await signalbox(hooksOutput(t), 'rules:\n  - id: r\n    on: sensors/#\n    to:\n      - webhook: { output: hooks }\n', { HOOK_TOKEN: 'x' });
    const c = await client(sb.url);
    await c.publishAsync('sensors/a/temp', '{"bad":true}', { qos: 1 });
    await c.publishAsync('sensors/a/temp', '{"good":true}', { qos: 1 });
    const [letter] = await eventually(() => {
      const l = sb.engine.deadLetters.list();
      return l.length > 0 && l;
    }, 'a dead letter');
    expect(letter).toMatchObject({ ruleId: 'r', output: 'hooks', topic: 'sensors/a/temp' });
    expect(letter!.payload.toString()).toBe('{"bad":true}');
    expect(letter!.error).toMatch(/^SB_ERR_OUTPUT_REJECTED: webhook "hooks": PUT http:\/\/127\.0\.0\.1:\d+ answered 400 Bad Request: \{"error":"field c is missing"\}$/);
    expect(letter!.data).toMatchObject({ method: 'PUT', url: expect.stringContaining('/devices/a') });
    await eventually(() => t.requests.some((r) => r.body.toString() === '{"good":true}'), 'the next message delivered');
  });

  it('retries a request the target never answers once timeoutMs passed', async () => {
    const t = await target((n) => (n === 0 ? 'hang' : { status: 204 }));
    const sb = await signalbox(hooksOutput(t).replace('timeoutMs: 2000', 'timeoutMs: 300'), 'rules:\n  - id: r\n    on: sensors/#\n    to:\n      - webhook: { output: hooks }\n', { HOOK_TOKEN: 'x' });
    const c = await client(sb.url);
    await c.publishAsync('sensors/a/temp', '{"n":1}', { qos: 1 });
    await t.waitFor(2, { within: 4000 });
    const status = await eventually(() => sb.engine.outputs.status().find((o) => o.name === 'hooks' && o.delivered === 1), 'delivered');
    expect(status.lastError).toMatch(/no complete answer within 300 ms/);
    expect(t.requests[1]!.body.toString()).toBe('{"n":1}');
  });

  it('retries while the target refuses connections, and delivers once it listens', async () => {
    const t = await target();
    const port = new URL(t.url).port;
    await t.close();
    const sb = await signalbox(hooksOutput(t), 'rules:\n  - id: r\n    on: sensors/#\n    to:\n      - webhook: { output: hooks }\n', { HOOK_TOKEN: 'x' });
    const c = await client(sb.url);
    await c.publishAsync('sensors/a/temp', '{"n":1}', { qos: 1 });
    const down = await eventually(() => sb.engine.outputs.status().find((o) => o.name === 'hooks' && o.retries >= 1), 'a retry');
    expect(down.lastError).toMatch(new RegExp(`PUT http://127\\.0\\.0\\.1:${port}: ECONNREFUSED`));
    expect(down.delivered).toBe(0);
  });

  it('delivers an inline webhook through an output of its own, <rule id>.webhook.<n>', async () => {
    const t = await target();
    const sb = await signalbox(
      '',
      `rules:
  - id: door
    on: doors/+
    to:
      - webhook: { url: "${t.url}/doors/\${levels[1]}", method: PUT, body: '{ "open": payload = "open" }', timeoutMs: 1000 }
`,
    );
    const c = await client(sb.url);
    await c.publishAsync('doors/front', 'open', { qos: 1 });
    const [req] = await t.waitFor(1);
    expect(req).toMatchObject({ method: 'PUT', url: '/doors/front' });
    expect(JSON.parse(req!.body.toString())).toEqual({ open: true });
    await eventually(() => sb.engine.outputs.status().find((o) => o.name === 'door.webhook.0' && o.type === 'webhook' && o.delivered === 1), 'door.webhook.0 in status');
  });

  it('dead-letters, as a failure of the rule, a message whose header template renders something HTTP cannot carry', async () => {
    const t = await target();
    const sb = await signalbox('', `rules:\n  - id: tagged\n    on: tags/#\n    to:\n      - webhook: { url: "${t.url}/t", headers: { x-tag: "\${payload.tag}" } }\n`);
    const c = await client(sb.url);
    await c.publishAsync('tags/a', JSON.stringify({ tag: 'line\nbreak' }), { qos: 1 });
    await c.publishAsync('tags/a', JSON.stringify({ tag: 'fine' }), { qos: 1 });
    await t.waitFor(1);
    expect(t.requests[0]!.headers['x-tag']).toBe('fine');
    const [letter] = sb.engine.deadLetters.list();
    expect(letter).toMatchObject({ ruleId: 'tagged', topic: 'tags/a' });
    expect(letter!.output).toBeUndefined();
    expect(letter!.error).toMatch(/^to\[0\] webhook: SB_ERR_WEBHOOK_REQUEST: header x-tag/);
  });

  it('keeps an inline webhook\'s output across a reload that changes it: waiting messages go where they were planned to', async () => {
    const t = await target();
    let up = false;
    t.answer = () => (up ? { status: 204 } : { status: 503 });
    const rule = (p: string) => `rules:\n  - id: door\n    on: doors/+\n    to:\n      - webhook: { url: "${t.url}/${p}/\${levels[1]}", timeoutMs: 1000 }\n`;
    const sb = await signalbox('', rule('v1'));
    const c = await client(sb.url);
    await c.publishAsync('doors/front', 'open', { qos: 1 });
    await t.waitFor(1);
    writeFileSync(path.join(sb.dir, 'rules', 'hooks.yaml'), rule('v2'));
    await sb.engine.reload(loadProject(sb.configFile, { explicit: true, registry: createOutputRegistry(), env: process.env }));
    up = true;
    await c.publishAsync('doors/back', 'open', { qos: 1 });
    await eventually(() => sb.engine.outputs.status().find((o) => o.name === 'door.webhook.0' && o.delivered === 2), 'both delivered through door.webhook.0');
    // The message queued before the reload keeps its planned URL; the outbox order holds.
    expect(t.requests.slice(-2).map((r) => r.url)).toEqual(['/v1/front', '/v2/back']);
    expect(sb.engine.outputs.status().map((o) => o.name)).toEqual(['door.webhook.0']);
  });
});
