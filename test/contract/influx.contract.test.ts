import { it } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import type { OutboxMessage } from '../../src/outputs/connector.js';
import { influxConnector, influxSchema } from '../../src/outputs/influx.js';
import type { InfluxPoint } from '../../src/outputs/influx-points.js';
import { inCI } from '../helpers/peers.js';
import { startVictoria, victoriaPeer, type Victoria } from '../helpers/victoria.js';
import { describeOutputContract, type Arrival } from './output-contract.js';

/**
 * The influx output against a real VictoriaMetrics. Each message becomes one point of its
 * own measurement per subject, tagged with the message's topic and carrying its seq as an
 * integer field at the message's time, so `received()` maps stored samples back to topics
 * in time order. A time-series database keeps only the topic of a message (as a tag); the
 * target is taken away by stopping VictoriaMetrics and brought back by restarting it on
 * the same port and data folder. Each subject has its own VictoriaMetrics (it starts in well
 * under a second), so no test depends on how the one before it left the target.
 */
let subjects = 0;

if (victoriaPeer.missing !== undefined && !inCI()) {
  it('output contract: influx (needs VictoriaMetrics)', (ctx) => victoriaPeer.require(ctx));
} else {
  describeOutputContract('influx', async () => {
    const target: Victoria = await startVictoria();
    const measurement = `contract${++subjects}`;
    const connector = influxConnector.create('contract', influxSchema.parse({ url: target.url, org: 'o', bucket: 'b' }), { log: silentLogger(), clock: systemClock });
    const point = (m: OutboxMessage): InfluxPoint => ({ measurement, tags: { topic: m.topic }, fields: { seq: m.seq }, integers: ['seq'], time: m.time });
    return {
      connector,
      keeps: ['topic'],
      prepare: (m) => (m.data === undefined ? { ...m, data: [point(m)] } : m),
      // No fields: the connector refuses the row for good before sending anything.
      poison: (m) => ({ ...m, data: [{ measurement, fields: {}, time: m.time }] }),
      async received(): Promise<Arrival[]> {
        const samples = new Map<string, { time: number; topic: string }>();
        for (const s of await target.series(`{__name__="${measurement}_seq"}`)) {
          // A point written twice (a retried batch) is one point: same series, same time.
          s.timestamps.forEach((time) => samples.set(`${s.metric.topic}@${time}`, { time, topic: s.metric.topic! }));
        }
        return [...samples.values()].sort((a, b) => a.time - b.time).map((s) => ({ topic: s.topic }));
      },
      breakTarget: () => target.stop(),
      repairTarget: () => target.restart(),
      close: () => target.close(),
    };
  });
}
