import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/durable.js';
import { startFakeInflux } from '../helpers/fake-influx.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { connect } from '../helpers/mqtt.js';
import { startVictoria, victoriaPeer, type Series, type Victoria } from '../helpers/victoria.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const T = Date.UTC(2026, 0, 1, 12);

const CLIMATE_RULE = `rules:
  - id: climate
    on: greenhouse/+/climate
    to:
      - influx:
          output: tsdb
          measurement: climate
          tags: { room: "levels[1]" }
          fields:
            c: payload.c
            count: { value: payload.n, type: integer }
            open: payload.open
            note: payload.note
          timestamp: payload.ts
`;

async function engineFor(url: string, rules: Record<string, string>, extra = ''): Promise<TestEngine> {
  const t = await startEngine({
    config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs:\n  tsdb:\n    type: influx\n    url: ${url}\n    org: home\n    bucket: telemetry\n    flushInterval: 50ms\n${extra}`,
    rules,
  });
  cleanups.push(() => t.close());
  return t;
}

async function victoria(ctx: Parameters<typeof victoriaPeer.require>[0]): Promise<Victoria> {
  victoriaPeer.require(ctx);
  return startVictoria();
}

/** Series matching `match` once there are `samples` samples in all, polled for up to 10 s. */
async function seriesOnce(vm: Victoria, match: string, samples: number): Promise<Series[]> {
  let last: Series[] = [];
  const deadline = Date.now() + 10_000;
  for (;;) {
    last = await vm.series(match);
    if (last.reduce((n, s) => n + s.values.length, 0) >= samples) return last.sort((a, b) => JSON.stringify(a.metric).localeCompare(JSON.stringify(b.metric)));
    if (Date.now() > deadline) throw new Error(`${match}: ${samples} samples not there within 10 s; got ${JSON.stringify(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A stand-in InfluxDB, closed after the test. */
async function fakeInflux(answer?: Parameters<typeof startFakeInflux>[0]) {
  const target = await startFakeInflux(answer);
  cleanups.push(() => target.close());
  return target;
}

describe('an influx output writes points to VictoriaMetrics', () => {
  it('writes measurement, tags, fields and timestamps from an influx rule action', async (ctx) => {
    const vm = await victoria(ctx);
    const t = await engineFor(vm.url, { 'climate.yaml': CLIMATE_RULE });
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await client.publishAsync('greenhouse/north/climate', JSON.stringify({ c: 20, n: 3, open: true, note: 'ok', ts: T }), { qos: 1 });
    await client.publishAsync('greenhouse/south/climate', JSON.stringify({ c: 21.5, n: 4, open: false, ts: T + 1000 }), { qos: 1 });

    const got = await seriesOnce(vm, '{__name__=~"climate_.*"}', 7);
    const view = got.map((s) => [s.metric.__name__, s.metric.room, s.values, s.timestamps]);
    expect(view).toEqual(
      expect.arrayContaining([
        ['climate_c', 'north', [20], [T]],
        ['climate_c', 'south', [21.5], [T + 1000]],
        ['climate_count', 'north', [3], [T]],
        ['climate_count', 'south', [4], [T + 1000]],
        ['climate_open', 'north', [1], [T]],
        ['climate_open', 'south', [0], [T + 1000]],
      ]),
    );
    // The bucket is an InfluxDB notion; VictoriaMetrics adds no label for it.
    expect(got.every((s) => Object.keys(s.metric).sort().join() === '__name__,room')).toBe(true);
    expect(t.engine.deadLetters.list()).toEqual([]);
  });

  it('writes one point per element of an array payload', async (ctx) => {
    const vm = await victoria(ctx);
    const rule = `rules:
  - id: readings
    on: site/readings
    transform: payload.readings
    to:
      - influx: { output: tsdb, measurement: reading, tags: { sensor: payload.id }, fields: { v: payload.v }, timestamp: payload.t }
`;
    const t = await engineFor(vm.url, { 'readings.yaml': rule });
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    const readings = [
      { id: 'a', v: 1.5, t: T },
      { id: 'b', v: 2.5, t: T + 1 },
      { id: 'a', v: 3.5, t: T + 2 },
    ];
    await client.publishAsync('site/readings', JSON.stringify({ readings }), { qos: 1 });
    const got = await seriesOnce(vm, '{__name__="reading_v"}', 3);
    expect(got.map((s) => [s.metric.sensor, s.values, s.timestamps])).toEqual([
      ['a', [1.5, 3.5], [T, T + 2]],
      ['b', [2.5], [T + 1]],
    ]);
  });

  it('sends each field with its line protocol type through the real client, to /api/v2/write with org, bucket and precision', async () => {
    const target = await fakeInflux();
    const t = await engineFor(target.url, { 'climate.yaml': CLIMATE_RULE }, '    precision: s\n    token: secret-token\n    headers: { X-Site: a }\n');
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await client.publishAsync('greenhouse/north/climate', JSON.stringify({ c: 20, n: 3, open: true, note: 'say "hi"', ts: T }), { qos: 1 });
    await eventually(() => target.writes.length > 0, 'a write request');
    const [write] = target.writes;
    expect(write!.url).toBe('/api/v2/write?org=home&bucket=telemetry&precision=s');
    expect(write!.headers.authorization).toBe('Token secret-token');
    expect(write!.headers['x-site']).toBe('a');
    expect(write!.body).toBe(`climate,room=north c=20,count=3i,open=true,note="say \\"hi\\"" ${T / 1000}`);
  });

  it('puts a message whose point cannot be built in the dead letters, naming the rule and the field, and carries on', async (ctx) => {
    const vm = await victoria(ctx);
    const t = await engineFor(vm.url, { 'climate.yaml': CLIMATE_RULE });
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());
    await client.publishAsync('greenhouse/north/climate', JSON.stringify({ c: 20, n: 2.5, ts: T }), { qos: 1 });
    await client.publishAsync('greenhouse/north/climate', JSON.stringify({ humidity: 50, ts: T }), { qos: 1 });
    await client.publishAsync('greenhouse/west/climate', JSON.stringify({ c: 19, ts: T + 5 }), { qos: 1 });

    const letters = await eventually(() => {
      const l = t.engine.deadLetters.list({ ruleId: 'climate', order: 'asc' });
      return l.length === 2 && l;
    }, 'two dead letters');
    expect(letters[0]!.error).toMatch(/SB_ERR_INFLUX_POINT: rule "climate": influx fields\.count: must be a whole number.*2\.5/);
    expect(letters[1]!.error).toMatch(/SB_ERR_INFLUX_POINT: rule "climate": influx fields: none of c, count, open, note has a value/);
    expect(JSON.parse(letters[1]!.payload.toString())).toEqual({ humidity: 50, ts: T });
    const got = await seriesOnce(vm, '{__name__="climate_c"}', 1);
    expect(got.map((s) => [s.metric.room, s.values])).toEqual([['west', [19]]]);
  });
});
