import { createServer } from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import { HttpApi } from '../../src/http/api.js';
import { HTTP_ERROR_CODES } from '../../src/http/errors.js';
import { silentLogger } from '../../src/log.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { connect } from '../helpers/mqtt.js';
import { TestTarget, testAction, testConnector } from '../helpers/test-output.js';

/**
 * The HTTP API of a whole signalbox (broker + SQLite + rules), asked over real HTTP with
 * fetch on 127.0.0.1, after real MQTT clients published through a rule with `history: {}`.
 */

const CONFIG = `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
http: { host: 127.0.0.1, port: 0 }
`;

const STORE_RULES = {
  'store.yaml': `rules:
  - id: store
    on: [sensors/#, bin/#]
    to:
      - history: {}
`,
};

const T0 = Date.UTC(2026, 10, 25, 12, 0, 0);
const cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function engine(clock?: FakeClock, config = CONFIG): Promise<TestEngine> {
  const te = await startEngine({ config, rules: STORE_RULES }, { clock });
  cleanups.push(() => te.close());
  return te;
}

async function client(te: TestEngine): Promise<MqttClient> {
  // No keepalive: tests move the fake clock by hours, which would time the client out.
  const c = await connect(te.url, { protocolVersion: 5, keepalive: 0 });
  cleanups.push(() => c.endAsync(true));
  return c;
}

interface Json {
  status: number;
  headers: Headers;
  body: any;
}

async function get(te: TestEngine, path: string, init?: RequestInit): Promise<Json> {
  const res = await fetch(`${te.http!.url}${path}`, { signal: AbortSignal.timeout(5000), ...init });
  const text = await res.text();
  let body: unknown = text;
  if ((res.headers.get('content-type') ?? '').startsWith('application/json')) body = JSON.parse(text);
  return { status: res.status, headers: res.headers, body };
}

const q = (params: Record<string, string>) => new URLSearchParams(params).toString();

/** Publishes at QoS 1: resolved once the PUBACK came, so the history row is committed. */
async function publish(c: MqttClient, topic: string, payload: string | Buffer, retain = false): Promise<void> {
  await c.publishAsync(topic, payload, { qos: 1, retain });
}

describe('GET /api/history', () => {
  /** Four stored messages an hour apart (fake clock) and one no rule stores. */
  async function seeded(): Promise<{ te: TestEngine; clock: FakeClock }> {
    const clock = new FakeClock(T0);
    const te = await engine(clock);
    const c = await client(te);
    await publish(c, 'sensors/a/temp', '{"c":20}');
    clock.advance(3_600_000);
    await publish(c, 'sensors/b/temp', '{"c":21}');
    clock.advance(3_600_000);
    await publish(c, 'sensors/a/hum', 'dry', true);
    clock.advance(3_600_000);
    await publish(c, 'bin/raw', Buffer.from([0xff, 0x00, 0xfe]));
    await publish(c, 'elsewhere/x', 'not stored');
    return { te, clock };
  }

  test('answers the messages matching a filter with + and # wildcards, newest first, in a documented shape', async () => {
    const { te } = await seeded();
    const plus = await get(te, `/api/history?${q({ filter: 'sensors/+/temp' })}`);
    expect(plus.status).toBe(200);
    expect(plus.body.messages.map((m: { topic: string }) => m.topic)).toEqual(['sensors/b/temp', 'sensors/a/temp']);
    expect(plus.body.messages[1]).toEqual({
      topic: 'sensors/a/temp',
      time: new Date(T0).toISOString(),
      timeMs: T0,
      qos: 1,
      retain: false,
      ruleId: 'store',
      clientId: expect.any(String),
      payload: { c: 20 },
      payloadEncoding: 'json',
    });
    expect(plus.body).toMatchObject({ filter: 'sensors/+/temp', order: 'desc', limit: 100, count: 2, more: false, from: null, to: null });

    const hash = await get(te, `/api/history?${q({ filter: 'sensors/#' })}`);
    expect(hash.body.messages.map((m: { topic: string }) => m.topic)).toEqual(['sensors/a/hum', 'sensors/b/temp', 'sensors/a/temp']);
    expect(hash.body.messages[0]).toMatchObject({ payload: 'dry', payloadEncoding: 'utf8', retain: true });

    const all = await get(te, `/api/history?${q({ filter: '#' })}`);
    expect(all.body.count).toBe(4);
    expect(all.body.messages[0]).toMatchObject({ topic: 'bin/raw', payload: Buffer.from([0xff, 0x00, 0xfe]).toString('base64'), payloadEncoding: 'base64' });

    const exact = await get(te, `/api/history?${q({ filter: 'sensors/a/hum' })}`);
    expect(exact.body.messages.map((m: { topic: string }) => m.topic)).toEqual(['sensors/a/hum']);
    const none = await get(te, `/api/history?${q({ filter: 'elsewhere/#' })}`);
    expect(none.body).toMatchObject({ count: 0, messages: [] });
  });

  test('order=asc answers the oldest first; limit cuts the page and says more may match', async () => {
    const { te } = await seeded();
    const asc = await get(te, `/api/history?${q({ filter: '#', order: 'asc', limit: '2' })}`);
    expect(asc.body.messages.map((m: { topic: string }) => m.topic)).toEqual(['sensors/a/temp', 'sensors/b/temp']);
    expect(asc.body).toMatchObject({ order: 'asc', limit: 2, count: 2, more: true });
    const one = await get(te, `/api/history?${q({ filter: '#', limit: '1' })}`);
    expect(one.body.messages.map((m: { topic: string }) => m.topic)).toEqual(['bin/raw']);
  });

  test('limit defaults to 100 and takes up to 10000', async () => {
    const te = await engine();
    const c = await client(te);
    // In chunks: more than Receive Maximum (100) in flight would be a protocol error.
    for (let start = 0; start < 105; start += 50) {
      await Promise.all(Array.from({ length: Math.min(50, 105 - start) }, (_, i) => publish(c, `sensors/n/${start + i}`, String(start + i))));
    }
    const page = await get(te, `/api/history?${q({ filter: 'sensors/#' })}`);
    expect(page.body).toMatchObject({ limit: 100, count: 100, more: true });
    const max = await get(te, `/api/history?${q({ filter: 'sensors/#', limit: '10000' })}`);
    expect(max.body).toMatchObject({ limit: 10000, count: 105, more: false });
  });

  test('from and to take ISO 8601 times, dates, ms since the epoch and times ago; from is inclusive, to exclusive', async () => {
    const { te, clock } = await seeded();
    const topics = async (params: Record<string, string>) => {
      const r = await get(te, `/api/history?${q({ filter: '#', order: 'asc', ...params })}`);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body.messages.map((m: { topic: string }) => m.topic);
    };
    const iso = (ms: number) => new Date(ms).toISOString();
    expect(await topics({ from: iso(T0 + 3_600_000) })).toEqual(['sensors/b/temp', 'sensors/a/hum', 'bin/raw']);
    expect(await topics({ from: iso(T0), to: iso(T0 + 3_600_000) })).toEqual(['sensors/a/temp']);
    expect(await topics({ from: '2026-11-25T13:30:00+01:00', to: '2026-11-25T14:30:00Z' })).toEqual(['sensors/b/temp', 'sensors/a/hum']);
    expect(await topics({ from: String(T0 + 1), to: String(T0 + 7_200_001) })).toEqual(['sensors/b/temp', 'sensors/a/hum']);
    expect(await topics({ to: '2026-11-25' })).toEqual([]);
    expect(await topics({ from: '2026-11-25', to: '2026-11-26' })).toHaveLength(4);
    // Relative to now, which is T0 + 3 h on the fake clock.
    expect(clock.now()).toBe(T0 + 3 * 3_600_000);
    expect(await topics({ from: '-90m' })).toEqual(['sensors/a/hum', 'bin/raw']);
    expect(await topics({ from: 'now-2h', to: 'now-1h' })).toEqual(['sensors/b/temp']);
    expect(await topics({ from: '-1w', to: 'now' })).toEqual(['sensors/a/temp', 'sensors/b/temp', 'sensors/a/hum']);
  });

  test('every bad parameter is a 400 naming the parameter and why', async () => {
    const te = await engine();
    const cases: Array<[string, string, string, RegExp]> = [
      ['filter=%23&colour=red', 'SB_HTTP_UNKNOWN_PARAMETER', 'colour', /unknown parameter 'colour'.*filter, from, to, limit, order/],
      ['filter=%23&limit=1&limit=2', 'SB_HTTP_DUPLICATE_PARAMETER', 'limit', /more than once/],
      ['', 'SB_HTTP_MISSING_PARAMETER', 'filter', /'filter' is required/],
      ['filter=', 'SB_HTTP_MISSING_PARAMETER', 'filter', /'filter' is required/],
      ['filter=a/%23/b', 'SB_HTTP_BAD_FILTER', 'filter', /'#' must be the last level/],
      ['filter=a/b%2B', 'SB_HTTP_BAD_FILTER', 'filter', /'\+' must occupy a whole level/],
      ['filter=%24share/g/a', 'SB_HTTP_BAD_FILTER', 'filter', /shared subscription/],
      ['filter=sensors/+/temp', 'SB_HTTP_BAD_FILTER', 'filter', /'\+' means a space.*%2B/],
      ['filter=%23&from=yesterday', 'SB_HTTP_BAD_TIME', 'from', /'from' 'yesterday' is not an ISO 8601 time/],
      ['filter=%23&to=-5parsecs', 'SB_HTTP_BAD_TIME', 'to', /not a duration/],
      ['filter=%23&from=2026-11-25T18:00:00', 'SB_HTTP_BAD_TIME', 'from', /no time zone/],
      ['filter=%23&from=2026-11-25T18:00:00+01:00', 'SB_HTTP_BAD_TIME', 'from', /%2B/],
      ['filter=%23&from=2026-02-30', 'SB_HTTP_BAD_TIME', 'from', /not a calendar date/],
      ['filter=%23&to=', 'SB_HTTP_BAD_TIME', 'to', /is empty/],
      ['filter=%23&from=-1h&to=-2h', 'SB_HTTP_BAD_RANGE', 'from', /must be before 'to'/],
      ['filter=%23&from=now&to=now', 'SB_HTTP_BAD_RANGE', 'from', /must be before 'to'/],
      ['filter=%23&limit=0', 'SB_HTTP_BAD_LIMIT', 'limit', /from 1 to 10000, got '0'/],
      ['filter=%23&limit=10001', 'SB_HTTP_BAD_LIMIT', 'limit', /from 1 to 10000/],
      ['filter=%23&limit=ten', 'SB_HTTP_BAD_LIMIT', 'limit', /got 'ten'/],
      ['filter=%23&limit=1.5', 'SB_HTTP_BAD_LIMIT', 'limit', /got '1.5'/],
      ['filter=%23&order=newest', 'SB_HTTP_BAD_ORDER', 'order', /asc .* or desc/],
    ];
    for (const [query, code, parameter, message] of cases) {
      const r = await get(te, `/api/history?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.body.error, query).toMatchObject({ code, parameter });
      expect(r.body.error.message, query).toMatch(message);
    }
  });
});

describe('GET /api/last', () => {
  test('answers the newest stored message of each matching topic, and after a restart from SQLite', async () => {
    const clock = new FakeClock(T0);
    const te = await engine(clock);
    const c = await client(te);
    await publish(c, 'sensors/a/temp', '{"c":1}');
    await publish(c, 'sensors/b/temp', '{"c":2}');
    clock.advance(1000);
    await publish(c, 'sensors/a/temp', '{"c":3}');
    await publish(c, 'sensors/a/hum', '40');
    await c.endAsync();

    const last = await get(te, `/api/last?${q({ filter: 'sensors/+/temp' })}`);
    expect(last.status).toBe(200);
    expect(last.body).toMatchObject({ filter: 'sensors/+/temp', count: 2, matched: 2, limit: 1000 });
    expect(last.body.messages.map((m: { topic: string; payload: unknown }) => [m.topic, m.payload])).toEqual([
      ['sensors/a/temp', { c: 3 }],
      ['sensors/b/temp', { c: 2 }],
    ]);
    expect(last.body.messages[0]).toMatchObject({ timeMs: T0 + 1000, qos: 1, ruleId: 'store' });
    const exact = await get(te, `/api/last?${q({ filter: 'sensors/a/hum' })}`);
    expect(exact.body.messages).toEqual([expect.objectContaining({ topic: 'sensors/a/hum', payload: 40 })]);
    const limited = await get(te, `/api/last?${q({ filter: '#', limit: '1' })}`);
    expect(limited.body).toMatchObject({ count: 1, matched: 3 });

    // A new process starts with an empty cache: it is seeded from the database.
    const again = await te.restart();
    cleanups.push(() => again.close());
    await waitUntil(async () => (await get(again, `/api/last?${q({ filter: '#' })}`)).body.count === 3);
    const seeded = await get(again, `/api/last?${q({ filter: 'sensors/+/temp' })}`);
    expect(seeded.body.messages.map((m: { topic: string; payload: unknown }) => [m.topic, m.payload])).toEqual([
      ['sensors/a/temp', { c: 3 }],
      ['sensors/b/temp', { c: 2 }],
    ]);
    expect(again.engine.lastValues!.stats.seeded).toBe(3);
  });

  test('bad parameters are a 400 naming the parameter', async () => {
    const te = await engine();
    for (const [query, code, parameter] of [
      ['filter=%23&from=-1h', 'SB_HTTP_UNKNOWN_PARAMETER', 'from'],
      ['', 'SB_HTTP_MISSING_PARAMETER', 'filter'],
      ['filter=a%23', 'SB_HTTP_BAD_FILTER', 'filter'],
      ['filter=%23&limit=10001', 'SB_HTTP_BAD_LIMIT', 'limit'],
      ['filter=%23&filter=a', 'SB_HTTP_DUPLICATE_PARAMETER', 'filter'],
    ]) {
      const r = await get(te, `/api/last?${query}`);
      expect(r.status, query).toBe(400);
      expect(r.body.error, query).toMatchObject({ code, parameter });
    }
  });
});

/** Polls `check` until it holds (every 20 ms, at most `within` ms). */
async function waitUntil(check: () => Promise<boolean>, within = 3000): Promise<void> {
  const deadline = Date.now() + within;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`condition not met within ${within} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('health, readiness and routing', () => {
  test('/healthz is 200; /readyz is 200 when ready and 503 naming what is not', async () => {
    const te = await engine();
    expect(await get(te, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    const ready = await get(te, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ status: 'ready', checks: { listeners: { ok: true }, database: { ok: true }, rules: { ok: true, detail: '1 rule(s) loaded' } } });

    te.http!.setListening(false);
    const notReady = await get(te, '/readyz');
    expect(notReady.status).toBe(503);
    expect(notReady.body).toMatchObject({ status: 'not ready', notReady: ['listeners'], checks: { listeners: { ok: false, detail: expect.stringMatching(/not bound/) } } });
    expect(await get(te, '/healthz')).toMatchObject({ status: 200 });
  });

  test('/readyz names the database once it is closed, and /api/history answers 503 SB_HTTP_STORAGE', async () => {
    const te = await engine();
    te.engine.db.close();
    const r = await get(te, '/readyz');
    expect(r.status).toBe(503);
    expect(r.body.notReady).toEqual(['database']);
    const h = await get(te, `/api/history?${q({ filter: '#' })}`);
    expect(h.status).toBe(503);
    expect(h.headers.get('retry-after')).toBe('1');
    expect(h.body.error).toMatchObject({ code: 'SB_HTTP_STORAGE', message: expect.stringMatching(/history cannot be read now/) });
  });

  test('an unknown path is 404, another method 405 with Allow, HEAD is answered like GET without a body', async () => {
    const te = await engine();
    const missing = await get(te, '/api/nothing');
    expect(missing.status).toBe(404);
    expect(missing.body.error).toMatchObject({ code: 'SB_HTTP_NOT_FOUND', message: expect.stringMatching(/\/api\/history/) });
    const post = await get(te, '/api/history?filter=%23', { method: 'POST', body: '{}' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect(post.body.error.code).toBe('SB_HTTP_METHOD_NOT_ALLOWED');
    const head = await fetch(`${te.http!.url}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  test('a port in use is an SB_HTTP_LISTEN error naming host:port', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => blocker.close(resolve)));
    const port = (blocker.address() as { port: number }).port;
    const te = await engine();
    const api = new HttpApi({ host: '127.0.0.1', port }, te.engine, { clock: { now: Date.now, setTimeout, clearTimeout } as never, log: silentLogger(), listening: () => true });
    await expect(api.listen()).rejects.toMatchObject({ code: 'SB_HTTP_LISTEN', message: expect.stringContaining(`127.0.0.1:${port}: the port is in use`) });
  });

  test('every HTTP error code is documented in README.md', async () => {
    const { readFileSync } = await import('node:fs');
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    const missing = Object.keys(HTTP_ERROR_CODES).filter((code) => !new RegExp(`(^|[^A-Z0-9_])${code}([^A-Z0-9_]|$)`).test(readme));
    expect(missing).toEqual([]);
  });
});

describe('history.maxRows in a running signalbox', () => {
  test('the oldest rows beyond the cap are deleted in the background, counted in /metrics', async () => {
    const clock = new FakeClock(T0);
    const te = await engine(clock, `${CONFIG}history: { maxRows: 3 }\n`);
    const c = await client(te);
    for (let i = 0; i < 5; i++) {
      await publish(c, `sensors/${i}`, String(i));
      clock.advance(1);
    }
    expect((await get(te, `/api/history?${q({ filter: '#' })}`)).body.count).toBe(5);
    clock.advance(60_000); // the retention interval
    const left = await get(te, `/api/history?${q({ filter: '#', order: 'asc' })}`);
    expect(left.body.messages.map((m: { topic: string }) => m.topic)).toEqual(['sensors/2', 'sensors/3', 'sensors/4']);
    expect((await get(te, '/metrics')).body).toContain('signalbox_history_rows_deleted_total{reason="max_rows"} 2');
  });
});

describe('GET /metrics', () => {
  test('serves Prometheus text with broker, rule, history, dead-letter, output and last-value series', async () => {
    const targets: Record<string, TestTarget> = {};
    const config = `${CONFIG}outputs:\n  remote:\n    type: test\n`;
    const rules = {
      ...STORE_RULES,
      'forward.yaml': `rules:\n  - id: forward\n    on: data/#\n    to:\n      - test: { output: remote }\n`,
      'broken.yaml': `rules:\n  - id: broken\n    on: bad/#\n    transform: 'payload.x.y ~> $error("no")'\n    to:\n      - history: {}\n`,
    };
    const te = await startEngine({ config, rules }, { actions: [testAction], connectors: [testConnector(targets)] });
    cleanups.push(() => te.close());
    const c = await client(te);
    await publish(c, 'sensors/a/temp', '1');
    await publish(c, 'sensors/b/temp', '2');
    await publish(c, 'data/x', 'forwarded');
    await publish(c, 'bad/x', '{}');
    await targets['remote']!.waitFor(1);

    const r = await get(te, '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = r.body as string;
    const value = (series: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      if (!line) throw new Error(`no series ${series} in:\n${text}`);
      return Number(line.slice(series.length + 1));
    };
    expect(value('signalbox_messages_received_total')).toBe(4);
    expect(value('signalbox_connections')).toBe(1);
    expect(value('signalbox_history_rows_written_total')).toBe(2);
    expect(value('signalbox_rule_evaluations_total{result="run"}')).toBe(3);
    expect(value('signalbox_rule_evaluations_total{result="error"}')).toBe(1);
    expect(value('signalbox_dead_letters')).toBe(1);
    expect(value('signalbox_history_rows_deleted_total{reason="max_rows"}')).toBe(0);
    expect(value('signalbox_limit_hits_total{limit="connectionsRefusedMax"}')).toBe(0);
    expect(value('signalbox_messages_dropped_total{reason="send_buffer"}')).toBe(0);
    expect(value('signalbox_acl_denied_total{action="publish"}')).toBe(0);
    expect(value('signalbox_auth_failures_total')).toBe(0);
    await waitUntil(async () => /signalbox_output_delivered_total\{output="remote",type="test"\} 1/.test((await get(te, '/metrics')).body as string));
    const later = (await get(te, '/metrics')).body as string;
    expect(later).toContain('signalbox_output_waiting{output="remote",type="test"} 0');
    expect(later).toMatch(/signalbox_output_state\{output="remote",type="test",state="(idle|sending)"\} 1/);
    expect(later).toContain('signalbox_last_values_topics 2');
    expect(later).toContain('signalbox_last_values_evicted_total 0');
    expect(later).toMatch(/^process_resident_memory_bytes \d+/m);
    expect(later).toContain('# TYPE signalbox_messages_received_total counter');
  });
});
