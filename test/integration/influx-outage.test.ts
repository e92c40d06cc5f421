import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/durable.js';
import { startEngine } from '../helpers/engine.js';
import { connect } from '../helpers/mqtt.js';
import { startVictoria, victoriaPeer } from '../helpers/victoria.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const T = Date.UTC(2026, 0, 1, 12);
const MESSAGES = 5000;
const STOP_AFTER = 1500;
const CHUNK = 250;

describe('an influx output across a VictoriaMetrics outage', () => {
  it(`delivers every point of ${MESSAGES} messages when VictoriaMetrics stops during the run and comes back`, async (ctx) => {
    victoriaPeer.require(ctx);
    const vm = await startVictoria();
    const t = await startEngine({
      config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs:\n  tsdb:\n    type: influx\n    url: ${vm.url}\n    flushInterval: 100ms\n    outbox: { retryMinMs: 50, retryMaxMs: 500 }\n`,
      rules: { 'load.yaml': 'rules:\n  - id: load\n    on: load/+\n    to:\n      - influx: { output: tsdb, measurement: load, fields: { v: payload.i }, timestamp: payload.t }\n' },
    });
    cleanups.push(() => t.close());
    const client = await connect(t.url);
    cleanups.push(() => client.endAsync());

    for (let from = 0; from < MESSAGES; from += CHUNK) {
      if (from === STOP_AFTER) await vm.stop();
      // QoS 1: each PUBACK means the point is in the outbox on disk.
      await Promise.all(Array.from({ length: CHUNK }, (_, k) => from + k).map((i) => client.publishAsync(`load/${i % 10}`, JSON.stringify({ i, t: T + i }), { qos: 1 })));
    }
    await eventually(() => t.engine.outputs.status()[0]!.retries > 0, 'a failed write while VictoriaMetrics is down');
    expect(t.engine.outputs.status()[0]!.waiting).toBeGreaterThan(0);
    await vm.restart();

    const distinct = async () => {
      const times = new Set<number>();
      for (const s of await vm.series('{__name__="load_v"}')) for (const time of s.timestamps) times.add(time);
      return times;
    };
    const deadline = Date.now() + 60_000;
    let times = await distinct();
    while (times.size < MESSAGES && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      times = await distinct();
    }
    expect(times.size).toBe(MESSAGES);
    expect(Math.min(...times)).toBe(T);
    expect(Math.max(...times)).toBe(T + MESSAGES - 1);
    await eventually(() => t.engine.outputs.status()[0]!.waiting === 0, 'an empty outbox');
    expect(t.engine.outputs.status()[0]).toMatchObject({ deadLettered: 0, dropped: 0 });
    expect(t.engine.deadLetters.list()).toEqual([]);
  }, 120_000);
});
