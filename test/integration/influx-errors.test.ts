import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { OutputError } from '../../src/outputs/connector.js';
import { influxConnector, influxSchema } from '../../src/outputs/influx.js';
import { eventually } from '../helpers/durable.js';
import { startFakeInflux } from '../helpers/fake-influx.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { connect } from '../helpers/mqtt.js';

/**
 * The influx output's error policy, against a local HTTP server that answers like an
 * InfluxDB in trouble: 400 is a poison message (dead letter, with the body), 429 and 503 are
 * retried (429 not before its Retry-After).
 */
const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const T = Date.UTC(2026, 0, 1, 12);

/** A stand-in InfluxDB, closed after the test. */
async function fakeInflux(answer?: Parameters<typeof startFakeInflux>[0]) {
  const target = await startFakeInflux(answer);
  cleanups.push(() => target.close());
  return target;
}

const RULE = `rules:
  - id: batch
    on: devices/+/batch
    to:
      - influx: { output: tsdb, measurement: m, tags: { kind: payload.kind, dev: "levels[1]" }, fields: { v: payload.v }, timestamp: payload.t }
`;

async function engineFor(url: string, settings = ''): Promise<TestEngine> {
  const t = await startEngine({
    config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs:\n  tsdb:\n    type: influx\n    url: ${url}\n    bucket: b\n${settings}`,
    rules: { 'batch.yaml': RULE },
  });
  cleanups.push(() => t.close());
  return t;
}

/** A message of `points` points for device `dev`; `poison` marks one of them. */
function message(dev: number, points: number, poison = false): string {
  return JSON.stringify(Array.from({ length: points }, (_, i) => ({ kind: poison && i === points - 1 ? 'poison' : 'ok', v: i, t: T + dev * 1000 + i })));
}

describe('influx output error policy', () => {
  it('dead-letters the one message a 400 refuses, with the response body, out of a batch of many points per message', async () => {
    const accept = { poison: false };
    const target = await fakeInflux((body) =>
      body.includes('kind=poison') && !accept.poison ? { status: 400, body: 'unable to parse points: field type conflict on "v"' } : { status: 204 },
    );
    // One outbox batch holds every message (flushInterval lets them gather), 20 points each.
    const t = await engineFor(target.url, '    flushInterval: 300ms\n');
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await Promise.all(Array.from({ length: 30 }, (_, dev) => client.publishAsync(`devices/${dev}/batch`, message(dev, 20, dev === 17), { qos: 1 })));

    const letters = await eventually(() => {
      const l = t.engine.deadLetters.list({ ruleId: 'batch' });
      return l.length > 0 && l;
    }, 'a dead letter', { within: 10_000 });
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ topic: 'devices/17/batch', output: 'tsdb' });
    expect(letters[0]!.error).toMatch(/^SB_ERR_OUTPUT_REJECTED: influx output "tsdb": HTTP 400 Bad Request: unable to parse points: field type conflict on "v"$/);
    // The letter keeps the planned points, so a replay writes exactly them.
    expect(letters[0]!.data).toHaveLength(20);

    // Every other message arrives in full.
    await eventually(() => new Set(target.accepted()).size === 29 * 20, 'the 580 other points', { within: 10_000 });
    const devices = new Set(target.accepted().map((line) => /dev=(\d+)/.exec(line)![1]));
    expect(devices.size).toBe(29);
    expect(devices.has('17')).toBe(false);
    expect(t.engine.outputs.status()[0]).toMatchObject({ name: 'tsdb', deadLettered: 1, waiting: 0 });
    // The first attempt carried the whole batch in one request; halving it found the culprit
    // in a few more, and the drain's one-by-one resend was answered without a request each.
    expect(target.writes[0]!.body.split('\n')).toHaveLength(600);
    expect(target.writes.length).toBeLessThanOrEqual(1 + 2 * Math.ceil(Math.log2(30)));

    // Once the target takes it (the field type fixed there, say), a replay writes exactly the planned points.
    accept.poison = true;
    expect(t.engine.deadLetters.requestReplay({ ruleId: 'batch' })).toBe(1);
    await eventually(() => target.accepted().filter((line) => line.includes('dev=17')).length === 20, 'the replayed 20 points', { within: 10_000 });
    await eventually(() => t.engine.deadLetters.count() === 0, 'the letter gone after its replay');
  });

  it('dead-letters every message one by one, without halving batches, when the target refuses them all (401)', async () => {
    const target = await fakeInflux(() => ({ status: 401, body: 'unauthorized access' }));
    const t = await engineFor(target.url, '    flushInterval: 300ms\n');
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await Promise.all(Array.from({ length: 6 }, (_, dev) => client.publishAsync(`devices/${dev}/batch`, message(dev, 2), { qos: 1 })));
    const letters = await eventually(() => {
      const l = t.engine.deadLetters.list({ ruleId: 'batch' });
      return l.length === 6 && l;
    }, 'six dead letters', { within: 10_000 });
    for (const letter of letters) expect(letter.error).toBe('SB_ERR_OUTPUT_REJECTED: influx output "tsdb": HTTP 401 Unauthorized: unauthorized access');
    // One request for the batch, then one per message.
    expect(target.writes).toHaveLength(7);
  });

  it('retries a 429 no sooner than its Retry-After, and then delivers', async () => {
    const target = await fakeInflux((_body, n) => (n === 1 ? { status: 429, body: 'too many requests', headers: { 'retry-after': '1' } } : { status: 204 }));
    const t = await engineFor(target.url, '    flushInterval: 0\n    outbox: { retryMinMs: 10, retryMaxMs: 50 }\n');
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await client.publishAsync('devices/1/batch', message(1, 3), { qos: 1 });
    await eventually(() => target.writes.length === 2, 'a retried write', { within: 5000 });
    expect(target.writes[1]!.at - target.writes[0]!.at).toBeGreaterThanOrEqual(950);
    expect(target.writes[1]!.body).toBe(target.writes[0]!.body);
    await eventually(() => t.engine.outputs.status()[0]!.waiting === 0, 'an empty outbox');
    expect(t.engine.outputs.status()[0]).toMatchObject({ delivered: 1, retries: 1, deadLettered: 0 });
    expect(t.engine.deadLetters.list()).toEqual([]);
  });

  it('retries 503 with backoff until the target answers, losing and dead-lettering nothing', async () => {
    const target = await fakeInflux((_body, n) => (n <= 3 ? { status: 503, body: 'service unavailable' } : { status: 204 }));
    const t = await engineFor(target.url, '    flushInterval: 0\n    outbox: { retryMinMs: 10, retryMaxMs: 50 }\n');
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await client.publishAsync('devices/1/batch', message(1, 5), { qos: 1 });
    await eventually(() => target.accepted().length === 5, 'the 5 points after three 503s', { within: 5000 });
    expect(target.writes.map((w) => w.status)).toEqual([503, 503, 503, 204]);
    const status = t.engine.outputs.status()[0]!;
    expect(status.retries).toBe(3);
    expect(status.lastError).toMatch(/HTTP 503 Service Unavailable: service unavailable/);
    expect(t.engine.deadLetters.list()).toEqual([]);
  });

  it('splits a batch into write requests of at most batchSize points, in order', async () => {
    const target = await fakeInflux(() => ({ status: 204 }));
    const t = await engineFor(target.url, '    batchSize: 7\n    flushInterval: 300ms\n');
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await client.publishAsync('devices/1/batch', message(1, 10), { qos: 1 });
    await client.publishAsync('devices/2/batch', message(2, 10), { qos: 1 });
    await eventually(() => target.accepted().length === 20, 'all 20 points');
    expect(target.writes.every((w) => w.body.split('\n').length <= 7)).toBe(true);
    const times = target.accepted().map((line) => Number(line.split(' ').at(-1)));
    expect(times).toEqual([...times].sort((a, b) => a - b));
  });

  it('gives up on a target that never answers after timeoutMs, with a retryable error', async () => {
    const held: http.ServerResponse[] = [];
    const server = http.createServer((_req, res) => void held.push(res));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    });
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const connector = influxConnector.create('slow', influxSchema.parse({ url, timeoutMs: 300 }), { log: silentLogger(), clock: systemClock });
    cleanups.push(() => connector.close());
    const point = { measurement: 'm', fields: { v: 1 }, time: T };
    const batch = [{ seq: 1, time: T, ruleId: 'r', clientId: 'c', topic: 't', payload: Buffer.from('{}'), qos: 1 as const, retain: false, properties: undefined, data: [point], attempts: 0 }];
    const started = Date.now();
    const error = await connector.write(batch).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(OutputError);
    expect(error).toMatchObject({ retryable: true, code: 'SB_ERR_OUTPUT_UNAVAILABLE' });
    expect((error as Error).message).toMatch(/no answer within timeoutMs 300/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(held).toHaveLength(1);
  });

  it('finds two refused messages of a 16-message batch in a few requests, and answers the one-by-one resend from what it found', async () => {
    const target = await fakeInflux((body) => (body.includes('kind=poison') ? { status: 400, body: 'bad point' } : { status: 204 }));
    const connector = influxConnector.create('halves', influxSchema.parse({ url: target.url, gzip: false }), { log: silentLogger(), clock: systemClock });
    cleanups.push(() => connector.close());
    const batch = Array.from({ length: 16 }, (_, i) => ({
      seq: i + 1, time: T, ruleId: 'r', clientId: 'c', topic: 't', payload: Buffer.from('{}'), qos: 1 as const, retain: false, properties: undefined, attempts: 0,
      data: [{ measurement: 'm', tags: { kind: i === 4 || i === 11 ? 'poison' : 'ok', i: String(i) }, fields: { v: i }, time: T + i }],
    }));
    await expect(connector.write(batch)).rejects.toMatchObject({ retryable: false, message: expect.stringContaining('HTTP 400 Bad Request: bad point') });
    const afterHalving = target.writes.length;
    expect(afterHalving).toBeLessThanOrEqual(1 + 2 * 2 * Math.log2(16));
    // The drain now resends one message at a time, as it does after a permanent failure.
    const outcomes: string[] = [];
    for (const m of batch) outcomes.push(await connector.write([m]).then(() => 'ok', (err: OutputError) => (err.retryable ? 'retry' : 'refused')));
    expect(outcomes.map((o, i) => (o === 'refused' ? i : -1)).filter((i) => i >= 0)).toEqual([4, 11]);
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(14);
    expect(target.writes.length).toBe(afterHalving);
    // Every good point reached the target.
    expect(new Set(target.accepted()).size).toBe(14);
  });
});
