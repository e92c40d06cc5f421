// The influx job: MQTT publishers → signalbox (a rule with an influx action, the durable
// outbox, the influx output) → VictoriaMetrics. Points per second end to end, counted as
// VictoriaMetrics confirms them (the output's delivered counter moves only on a 2xx answer)
// and checked at the end by counting the samples VictoriaMetrics holds; signalbox's CPU per
// point and peak RSS.
import { performance } from 'node:perf_hooks';
import { procStats } from './bridge-procs.js';
import { startSignalboxInflux, startVictoriaBench, victoriaMissing } from './influx-procs.js';
import { connectClient, Publisher } from './load.js';
import { jsonPayload } from './rules-spec.js';
import { errorText, formatBytes, formatInt, machineBusyMs, withTimeout } from './stats.js';

/** Target: points per second end to end. */
export const INFLUX_TARGET_POINTS_PER_SEC = 50_000;
/** The epoch of the points' timestamps: point `seq` of a publisher is at T0 + seq ms. */
const T0 = Date.UTC(2026, 0, 1);
const START_TIMEOUT_MS = 15_000;
const POLL_MS = 20;
/** A round in which other processes used more than this share of a core is repeated. */
const NOISY_CPU_SHARE = 0.2;

/** Every setting the job measured with, for the JSON. */
export function influxSettings(options) {
  return {
    publishers: options.publishers,
    window: options.window,
    messages: options.influxMessages,
    warmupMessages: options.influxWarmupMessages,
    rounds: options.rounds,
    phaseTimeoutMs: options.phaseTimeoutMs,
    output: { type: 'influx', url: 'http://127.0.0.1:<victoria port>', ...(process.env.BENCH_INFLUX_SETTINGS ? JSON.parse(process.env.BENCH_INFLUX_SETTINGS) : {}) },
    pointsPerMessage: 1,
  };
}

/**
 * For run.js: runs the job (never throws) with a progress line, and returns the results for
 * influx.json, with `meta` and elapsed time.
 */
export async function runInflux(options, meta) {
  const started = Date.now();
  const results = { settings: influxSettings(options) };
  const missing = victoriaMissing();
  if (missing) results.skipped = `VictoriaMetrics is missing: ${missing}`;
  else Object.assign(results, await runJob(options));
  const line = results.skipped ? `skipped: ${results.skipped}` : results.error ? `FAILED: ${results.error}` : `${formatInt(results.pointsPerSec)} points/s (rounds ${results.roundsPointsPerSec.map(formatInt).join(' / ')}${results.noisyRounds ? `, ${results.noisyRounds} disturbed` : ''}), peak RSS ${formatBytes(results.peakRss)}, lost ${results.lost}`;
  console.log(`${'signalbox       influx'.padEnd(36)} ${line}  [${((Date.now() - started) / 1000).toFixed(1)} s]`);
  return { meta: { ...meta, elapsedMs: Date.now() - started }, ...results };
}

async function runJob(options) {
  const result = {};
  const procs = [];
  const clients = [];
  const crashed = () => procs.map((p) => p.crashed()).find(Boolean);
  try {
    const vm = await startVictoriaBench({ startTimeoutMs: START_TIMEOUT_MS });
    procs.push(vm);
    const sb = await startSignalboxInflux(vm.port, T0, { startTimeoutMs: START_TIMEOUT_MS });
    procs.push(sb);
    result.rule = sb.info.rule;
    const tag = Math.random().toString(36).slice(2, 8);
    const publishers = [];
    for (let i = 0; i < options.publishers; i++) {
      const client = await connectClient(sb.port, { clientId: `bench-influx-${i}-${tag}` });
      clients.push(client);
      publishers.push(new Publisher(client, { index: i, topic: `bench/${i}/data`, qos: 1, payloadBytes: 0, window: options.window, format: jsonPayload }));
    }
    result.rssAtStart = procStats(sb.pid).rss;
    const run = { vm, sb, publishers, crashed, sent: 0 };
    const work = (async () => {
      if (options.influxWarmupMessages > 0) await flood(run, options.influxWarmupMessages, options);
      const wanted = Math.max(1, options.rounds);
      const rounds = [];
      let quiet = 0;
      for (let r = 1; quiet < wanted && r <= wanted * 2; r++) {
        const round = await flood(run, options.influxMessages, options);
        if (!round.noisy) quiet++;
        rounds.push(round);
      }
      return rounds;
    })();
    const rounds = await withTimeout(work, options.phaseTimeoutMs * 3, 'influx job', () => `${run.sent} messages sent${crashed() ? `; ${crashed()}` : ''}`);
    const candidates = rounds.some((r) => !r.noisy) ? rounds.filter((r) => !r.noisy) : rounds;
    const median = [...candidates].sort((a, b) => a.pointsPerSec - b.pointsPerSec)[Math.floor((candidates.length - 1) / 2)];
    Object.assign(result, median, {
      roundsPointsPerSec: rounds.map((r) => Math.round(r.pointsPerSec)),
      noisyRounds: rounds.filter((r) => r.noisy).length,
      rounds,
    });
    const s = procStats(sb.pid);
    result.rssAfterLoad = s.rss;
    result.peakRss = s.peakRss;
    result.victoriaRss = procStats(vm.pid).rss;
    result.sent = run.sent;
    result.atVictoria = await vm.count('{__name__="bench_v"}', T0 + 3_600_000, 7_200);
    result.lost = run.sent - result.atVictoria;
    result.counters = await sb.counters();
    const crash = crashed();
    if (crash) throw new Error(crash);
  } catch (err) {
    result.error = errorText(err, crashed());
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    for (const p of procs.reverse()) await p.stop().catch(() => {});
  }
  return result;
}

function snapshot(run) {
  return { at: performance.now(), sb: procStats(run.sb.pid), vm: procStats(run.vm.pid), load: process.cpuUsage(), machineMs: machineBusyMs() };
}

/**
 * Publishes `total` QoS 1 messages over the publishers (window each), then waits until the
 * influx output has delivered every message sent so far (VictoriaMetrics answered 2xx).
 * Returns the round's figures, timed from the first publish to the last confirmation.
 */
async function flood(run, total, options) {
  const before = snapshot(run);
  const share = Math.floor(total / run.publishers.length);
  const stopped = () => Boolean(run.crashed());
  await Promise.all(run.publishers.map((p, i) => p.flood(i === 0 ? total - share * (run.publishers.length - 1) : share, { stopped })));
  const ackedAt = performance.now();
  run.sent += total;
  let counters;
  for (;;) {
    const crash = run.crashed();
    if (crash) throw new Error(crash);
    counters = await run.sb.counters();
    if (counters.output.delivered + counters.output.deadLettered >= run.sent && counters.output.waiting === 0) break;
    if (performance.now() - before.at > options.phaseTimeoutMs) throw new Error(`influx round did not finish within ${options.phaseTimeoutMs / 1000} s: ${counters.output.delivered} of ${run.sent} delivered, ${counters.output.waiting} waiting, last error ${counters.output.lastError}`);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  const after = snapshot(run);
  const wallMs = after.at - before.at;
  const sbCpuUs = after.sb.cpuUs - before.sb.cpuUs;
  const vmCpuUs = after.vm.cpuUs - before.vm.cpuUs;
  const load = process.cpuUsage(before.load);
  const loadCpuUs = load.user + load.system;
  const otherCpuShare = Math.max(0, after.machineMs - before.machineMs - (sbCpuUs + vmCpuUs + loadCpuUs) / 1000) / wallMs;
  return {
    points: total,
    durationMs: wallMs,
    // Of which publishing (every PUBACK back, so every point in the outbox on disk).
    ackedMs: ackedAt - before.at,
    pointsPerSec: (total / wallMs) * 1000,
    signalboxCpuUsPerPoint: sbCpuUs / total,
    signalboxCpuShare: sbCpuUs / 1000 / wallMs,
    victoriaCpuShare: vmCpuUs / 1000 / wallMs,
    loadCpuShare: loadCpuUs / 1000 / wallMs,
    otherCpuShare,
    noisy: otherCpuShare > NOISY_CPU_SHARE,
    retries: counters.output.retries,
    deadLettered: counters.output.deadLettered,
  };
}

/** True when the job should make the run exit 1: a failure, or points lost. */
export function influxFailed(results) {
  return Boolean(results.error) || results.lost > 0;
}

/** Prints the job's table and notes (run.js), and stores the rows in `results.table`. */
export function printInflux(results) {
  const s = results.settings;
  if (results.skipped) {
    console.log(`\ninflux job skipped: ${results.skipped}`);
    return;
  }
  console.log(`\ninflux job: ${s.publishers} publishers (QoS 1, window ${s.window}) → rule with an influx action → outbox → VictoriaMetrics, 1 point per message, ${formatInt(s.messages)} points per round, node ${process.version}\n`);
  if (results.error) {
    console.log(`- FAILED: ${results.error}`);
    return;
  }
  const pct = (x) => `${Math.round(x * 100)}%`;
  const rows = [
    ['points/s end to end (median round)', formatInt(results.pointsPerSec), `≥ ${formatInt(INFLUX_TARGET_POINTS_PER_SEC)}`, results.pointsPerSec >= INFLUX_TARGET_POINTS_PER_SEC ? 'met' : 'MISSED'],
    ['of which publishing (all PUBACKs back)', `${formatInt(results.ackedMs)} ms of ${formatInt(results.durationMs)} ms`, '', ''],
    ['signalbox CPU per point', `${results.signalboxCpuUsPerPoint.toFixed(1)} µs`, '', ''],
    ['signalbox CPU (share of a core)', pct(results.signalboxCpuShare), '', ''],
    ['VictoriaMetrics CPU (share of a core)', pct(results.victoriaCpuShare), '', ''],
    ['signalbox RSS at start', formatBytes(results.rssAtStart), '', ''],
    ['signalbox RSS after the rounds', formatBytes(results.rssAfterLoad), '', ''],
    ['signalbox peak RSS', formatBytes(results.peakRss), '', ''],
    ['VictoriaMetrics RSS', formatBytes(results.victoriaRss), '', ''],
    ['points at VictoriaMetrics / sent', `${formatInt(results.atVictoria)} / ${formatInt(results.sent)}`, 'all', results.lost === 0 ? 'met' : 'MISSED'],
  ];
  results.table = rows.map(([name, value, target, met]) => ({ name, value, target, met }));
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length), ['figure', 'signalbox', 'target'][i].length));
  const render = (r) => [r[0].padEnd(widths[0]), r[1].padStart(widths[1]), r[2].padEnd(widths[2]), r[3]].join('  ').trimEnd();
  console.log(render(['figure', 'signalbox', 'target', '']));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(render(r));
  console.log('');
  if (results.lost > 0) console.log(`- !!! LOSS: ${formatInt(results.lost)} of ${formatInt(results.sent)} points never reached VictoriaMetrics !!!`);
  console.log(`- rounds ${results.roundsPointsPerSec.map(formatInt).join(' / ')} points/s; load process ${pct(results.loadCpuShare)} of a core`);
  if (results.noisyRounds > 0) console.log(`- ${results.noisyRounds} disturbed round(s) repeated`);
  if (results.otherCpuShare > NOISY_CPU_SHARE) console.log(`- other processes used ${pct(results.otherCpuShare)} of a core during the reported round; figures are noisy, rerun on a quiet machine`);
  const out = results.counters?.output;
  if (out && (out.retries > 0 || out.deadLettered > 0 || out.dropped > 0)) console.log(`- influx output at the end: ${out.retries} retries, ${out.deadLettered} dead-lettered, ${out.dropped} dropped${out.lastError ? ` (last error: ${out.lastError})` : ''}`);
}
