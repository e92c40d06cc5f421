// Phase 1: broker throughput. N publishers flood one subscriber (filter bench/+/data) with a
// fixed number of messages at QoS 0 or QoS 1, in a few rounds after a warm-up; reports the
// median round's msg/s delivered to the subscriber and per-message latency (which, at
// saturation, is mostly time spent queued in buffers).
import { performance } from 'node:perf_hooks';
import { awaitDelivery, connectBenchClients } from './clients.js';
import { percentiles, withTimeout } from './stats.js';

/**
 * Runs one throughput measurement against a started broker.
 * @param {import('./broker-process.js').BrokerProcess} broker
 * @param {{ qos: 0 | 1, messages: number, warmupMessages: number, publishers: number,
 *   payloadBytes: number, window: number, batch: number, rounds: number, timeoutMs: number }} options
 */
export async function runThroughput(broker, options) {
  const { qos, messages, warmupMessages, publishers: n, timeoutMs } = options;
  let stopped = false;
  const state = { stage: 'connecting', sub: undefined };
  const progress = () =>
    state.sub ? `${state.stage}: subscriber received ${state.sub.received} of ${state.sub.expected}` : state.stage;
  const bench = connectBenchClients(broker.port, { ...options, capacity: messages });
  const work = (async () => {
    const { subscriber, publishers, close } = await bench;
    state.sub = subscriber;
    try {
      if (warmupMessages > 0) {
        state.stage = 'warm-up';
        await floodAll(subscriber, publishers, warmupMessages, options, () => stopped);
      }
      const rounds = [];
      for (let r = 1; r <= Math.max(1, options.rounds); r++) {
        state.stage = `measured round ${r}`;
        rounds.push(await measureRound(broker, subscriber, publishers, options, () => stopped));
      }
      // Median round by throughput: one noisy round (another process, GC) does not decide.
      const sorted = [...rounds].sort((a, b) => a.msgPerSec - b.msgPerSec);
      const median = sorted[Math.floor((sorted.length - 1) / 2)];
      return {
        qos,
        publishers: n,
        messages,
        ...median,
        lost: rounds.reduce((sum, r) => sum + r.lost, 0),
        outOfOrder: rounds.reduce((sum, r) => sum + r.outOfOrder, 0),
        roundsMsgPerSec: rounds.map((r) => Math.round(r.msgPerSec)),
        strayAcks: publishers.reduce((sum, p) => sum + p.strayAcks, 0),
      };
    } finally {
      await close();
    }
  })();
  try {
    return await withTimeout(work, timeoutMs, `${broker.kind} throughput QoS ${qos}`, progress);
  } catch (err) {
    stopped = true;
    bench.then(({ close }) => close(), () => {});
    throw err;
  }
}

/** One measured round on already connected clients: returns its figures. */
async function measureRound(broker, subscriber, publishers, options, stopped) {
  const { messages } = options;
  for (const p of publishers) p.resetSequence();
  const brokerBefore = await broker.stats();
  const loadBefore = process.cpuUsage();
  const t0 = performance.now();
  await floodAll(subscriber, publishers, messages, options, stopped);
  const wallMs = subscriber.lastAt - t0;
  const loadCpu = process.cpuUsage(loadBefore);
  const brokerAfter = await broker.stats();
  const brokerCpuUs = brokerAfter.cpuUserUs + brokerAfter.cpuSystemUs - brokerBefore.cpuUserUs - brokerBefore.cpuSystemUs;
  const received = subscriber.received;
  const { values, count } = subscriber.samples();
  return {
    received,
    lost: Math.max(0, messages - received),
    outOfOrder: subscriber.outOfOrder,
    durationMs: wallMs,
    msgPerSec: (received / wallMs) * 1000,
    latencyMs: percentiles(values, count),
    brokerCpuUsPerMsg: brokerCpuUs / Math.max(1, received),
    brokerCpuShare: brokerCpuUs / 1000 / wallMs,
    loadCpuShare: (loadCpu.user + loadCpu.system) / 1000 / wallMs,
    brokerRssAfter: brokerAfter.rss,
  };
}

/** Splits `total` messages over the publishers, floods them, waits until delivered (or lost). */
async function floodAll(subscriber, publishers, total, options, stopped) {
  subscriber.reset(total);
  const share = Math.floor(total / publishers.length);
  let sendingDone = false;
  const sending = Promise.all(
    publishers.map((p, i) => p.flood(i === 0 ? total - share * (publishers.length - 1) : share, { batch: options.batch, stopped })),
  ).then(() => (sendingDone = true));
  await Promise.all([sending, awaitDelivery(subscriber, { sendingDone: () => sendingDone, stopped })]);
}
