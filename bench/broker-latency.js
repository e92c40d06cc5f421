// Phase 2: latency at a steady rate. The publishers together send `rate` msg/s (round-robin,
// one PUBLISH per write) for `seconds`; the subscriber records publish→deliver latency of
// every message. Far below saturation, so this is the broker's own per-message delay.
import { performance } from 'node:perf_hooks';
import { brokerBusy } from './broker-throughput.js';
import { awaitDelivery, connectBenchClients } from './clients.js';
import { machineBusyMs, percentiles, withTimeout } from './stats.js';

const TICK_MS = 1;

/**
 * Runs the steady-rate measurement against a started broker.
 * @param {import('./broker-process.js').BrokerProcess} broker
 * @param {{ qos: 0 | 1, rate: number, rateSeconds: number, rateWarmupSeconds: number,
 *   publishers: number, payloadBytes: number, window: number, timeoutMs: number }} options
 */
export async function runSteadyRate(broker, options) {
  const { qos, rate, rateSeconds, rateWarmupSeconds, timeoutMs } = options;
  const total = Math.round(rate * rateSeconds);
  let stopped = false;
  const state = { stage: 'connecting', sub: undefined };
  const progress = () =>
    state.sub ? `${state.stage}: subscriber received ${state.sub.received} of ${state.sub.expected}` : state.stage;
  const bench = connectBenchClients(broker.port, { ...options, capacity: total });
  const stillWorking = options.waitWhileBusy ? brokerBusy(broker) : undefined;
  const work = (async () => {
    const { subscriber, publishers, close } = await bench;
    state.sub = subscriber;
    try {
      if (rateWarmupSeconds > 0) {
        state.stage = 'warm-up';
        await sendAtRate(subscriber, publishers, Math.round(rate * rateWarmupSeconds), rate, () => stopped, stillWorking);
      }
      state.stage = 'measured run';
      for (const p of publishers) {
        p.resetSequence();
        if (qos === 1) p.recordAcks(total);
      }
      const brokerBefore = await broker.stats();
      const loadBefore = process.cpuUsage();
      const machineBefore = machineBusyMs();
      const t0 = performance.now();
      const pacing = await sendAtRate(subscriber, publishers, total, rate, () => stopped, stillWorking);
      const wallMs = performance.now() - t0;
      const loadCpu = process.cpuUsage(loadBefore);
      const machineMs = machineBusyMs() - machineBefore;
      const brokerAfter = await broker.stats({ counters: true });
      const { values, count } = subscriber.samples();
      const brokerCpuUs = brokerAfter.cpuUserUs + brokerAfter.cpuSystemUs - brokerBefore.cpuUserUs - brokerBefore.cpuSystemUs;
      return {
        qos,
        rate,
        messages: total,
        received: subscriber.received,
        lost: Math.max(0, total - subscriber.received),
        outOfOrder: subscriber.outOfOrder,
        invalid: subscriber.invalid,
        maxGapMs: subscriber.maxGapMs,
        achievedRate: (pacing.sent / pacing.sendMs) * 1000,
        latencyMs: percentiles(values, count),
        // QoS 1: publish → PUBACK at the publisher, every publisher's samples together.
        ackLatencyMs: qos === 1 ? ackPercentiles(publishers) : undefined,
        sendLagMs: pacing.lag,
        windowStalls: pacing.windowStalls,
        brokerCpuUsPerMsg: brokerCpuUs / Math.max(1, subscriber.received),
        otherCpuShare: Math.max(0, machineMs - brokerCpuUs / 1000 - (loadCpu.user + loadCpu.system) / 1000) / wallMs,
        brokerPeakRss: brokerAfter.maxRss,
        brokerCounters: brokerAfter.counters,
      };
    } finally {
      await close();
    }
  })();
  try {
    return await withTimeout(work, timeoutMs, `${broker.kind} steady ${rate} msg/s QoS ${qos}`, progress);
  } catch (err) {
    stopped = true;
    bench.then(({ close }) => close(), () => {});
    throw err;
  }
}

/**
 * Sends `total` messages at `rate` msg/s on a 1 ms timer: each tick sends what is due, one
 * message per write, round-robin over the publishers. A QoS 1 publisher with a full window
 * is skipped (counted as a stall) and its message goes out on a later tick.
 * Returns pacing figures: how late messages left versus their schedule.
 */
async function sendAtRate(subscriber, publishers, total, rate, stopped, stillWorking) {
  subscriber.reset(total);
  const lateness = new Float64Array(total);
  let sent = 0;
  let windowStalls = 0;
  let sendingDone = false;
  let sendEnd = 0;
  const t0 = performance.now();
  const sending = new Promise((resolve, reject) => {
    const tick = () => {
      if (stopped()) return resolve();
      const now = performance.now();
      const due = Math.min(total, Math.floor(((now - t0) * rate) / 1000) + 1);
      while (sent < due) {
        const p = publishers[sent % publishers.length];
        if (p.client.error) return reject(p.client.error);
        if (p.qos === 1 && p.inflight >= p.window) {
          windowStalls++;
          break;
        }
        p.send(1);
        lateness[sent] = performance.now() - (t0 + (sent * 1000) / rate);
        sent++;
      }
      if (sent >= total) return resolve();
      setTimeout(tick, TICK_MS);
    };
    tick();
  }).then(() => {
    sendingDone = true;
    sendEnd = performance.now();
  });
  await Promise.all([sending, awaitDelivery(subscriber, { sendingDone: () => sendingDone, stopped, stillWorking })]);
  const sendMs = Math.max(1, sendEnd - t0);
  return { sent, sendMs, lag: percentiles(lateness, sent), windowStalls };
}

/** Percentiles of the publish → PUBACK latencies all publishers recorded. */
function ackPercentiles(publishers) {
  const all = publishers.map((p) => p.ackSamples());
  const merged = new Float64Array(all.reduce((sum, s) => sum + s.count, 0));
  let at = 0;
  for (const { values, count } of all) {
    merged.set(values.subarray(0, count), at);
    at += count;
  }
  return percentiles(merged, at);
}
