// Turns the raw results into the comparison table (printed) and the rows stored in JSON.
import { formatBytes, formatInt, formatMs } from './stats.js';

const IDLE_TARGET_BYTES = 20_000;
const P99_TARGET_MS = 2;
const THROUGHPUT_TARGET_RATIO = 1.5;
/** Above this share of a core used by other processes during a measurement, say so. */
const OTHER_CPU_WARN = 0.2;

/**
 * One row per figure: how to read it from a broker's results, how to print it, and the
 * target (checked against signalbox alone, or against the signalbox/aedes ratio).
 */
const ROWS = [
  { name: 'QoS 0 throughput (msg/s)', get: (b) => b.throughputQos0?.msgPerSec, fmt: formatInt, ratioTarget: THROUGHPUT_TARGET_RATIO },
  { name: 'QoS 0 saturated latency p50', get: (b) => b.throughputQos0?.latencyMs?.p50, fmt: formatMs },
  { name: 'QoS 0 saturated latency p99', get: (b) => b.throughputQos0?.latencyMs?.p99, fmt: formatMs },
  { name: 'QoS 0 broker CPU per message', get: (b) => b.throughputQos0?.brokerCpuUsPerMsg, fmt: formatUs },
  { name: 'QoS 1 throughput (msg/s)', get: (b) => b.throughputQos1?.msgPerSec, fmt: formatInt, ratioTarget: THROUGHPUT_TARGET_RATIO },
  { name: 'QoS 1 saturated latency p50', get: (b) => b.throughputQos1?.latencyMs?.p50, fmt: formatMs },
  { name: 'QoS 1 saturated latency p99', get: (b) => b.throughputQos1?.latencyMs?.p99, fmt: formatMs },
  { name: 'QoS 1 broker CPU per message', get: (b) => b.throughputQos1?.brokerCpuUsPerMsg, fmt: formatUs },
  { name: 'steady QoS 0 latency p50', get: (b) => b.latencyQos0?.latencyMs?.p50, fmt: formatMs },
  { name: 'steady QoS 0 latency p99', get: (b) => b.latencyQos0?.latencyMs?.p99, fmt: formatMs, below: P99_TARGET_MS, targetText: `< ${P99_TARGET_MS} ms` },
  { name: 'steady QoS 0 latency max', get: (b) => b.latencyQos0?.latencyMs?.max, fmt: formatMs },
  { name: 'steady QoS 1 latency p50', get: (b) => b.latencyQos1?.latencyMs?.p50, fmt: formatMs },
  { name: 'steady QoS 1 latency p99', get: (b) => b.latencyQos1?.latencyMs?.p99, fmt: formatMs, below: P99_TARGET_MS, targetText: `< ${P99_TARGET_MS} ms` },
  { name: 'steady QoS 1 latency max', get: (b) => b.latencyQos1?.latencyMs?.max, fmt: formatMs },
  { name: 'idle: RSS per connection', get: (b) => b.idle?.bytesPerConnection, fmt: formatBytes, below: IDLE_TARGET_BYTES, targetText: '< 20 kB' },
  { name: 'idle: heap per connection', get: (b) => b.idle?.heapBytesPerConnection, fmt: formatBytes },
  { name: 'idle: connects per second', get: (b) => b.idle?.connectsPerSec, fmt: formatInt },
  { name: 'idle: heap kept after all closed', get: (b) => b.idle?.heapRetainedAfterCloseBytes, fmt: formatBytes },
];

function formatUs(us) {
  return `${us.toFixed(1)} µs`;
}

/**
 * Builds the table rows from `results.brokers` (each broker's phase results).
 * A missing value (phase failed or not run) is null and prints as "error" or "-".
 */
export function buildRows(results) {
  const sb = results.brokers.signalbox ?? {};
  const ae = results.brokers.aedes ?? {};
  return ROWS.map((row) => {
    const signalbox = num(row.get(sb));
    const aedes = num(row.get(ae));
    const ratio = signalbox !== null && aedes !== null && aedes !== 0 ? signalbox / aedes : null;
    let target = '';
    let met = null;
    if (row.ratioTarget !== undefined) {
      target = `ratio ≥ ${row.ratioTarget}`;
      met = ratio === null ? false : ratio >= row.ratioTarget;
    } else if (row.below !== undefined) {
      target = `signalbox ${row.targetText}`;
      met = signalbox === null ? false : signalbox < row.below;
    }
    return { name: row.name, signalbox, aedes, ratio, target, met, format: row.fmt };
  });
}

function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** The table as text, columns padded; failed phases show "error". */
export function formatTable(rows, results) {
  const failed = (broker, name) => {
    const phase = phaseOf(name);
    return results.brokers[broker]?.[phase]?.error ? 'error' : '-';
  };
  const lines = [['figure', 'signalbox', 'aedes 1.2', 'sb/aedes', 'target', '']];
  for (const r of rows) {
    lines.push([
      r.name,
      r.signalbox === null ? failed('signalbox', r.name) : r.format(r.signalbox),
      r.aedes === null ? failed('aedes', r.name) : r.format(r.aedes),
      r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
      r.target,
      r.met === null ? '' : r.met ? 'met' : 'MISSED',
    ]);
  }
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const render = (l) => l.map((cell, i) => (i === 0 || i >= 4 ? cell.padEnd(widths[i]) : cell.padStart(widths[i]))).join('  ').trimEnd();
  const out = [render(lines[0]), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const l of lines.slice(1)) out.push(render(l));
  return out.join('\n');
}

function phaseOf(rowName) {
  if (rowName.startsWith('QoS 0')) return 'throughputQos0';
  if (rowName.startsWith('QoS 1')) return 'throughputQos1';
  if (rowName.startsWith('steady QoS 0')) return 'latencyQos0';
  if (rowName.startsWith('steady QoS 1')) return 'latencyQos1';
  return 'idle';
}

/**
 * Lines worth a reader's attention below the table: failed phases, lost or reordered
 * messages, and whether the load generator had headroom.
 */
export function formatNotes(results) {
  const notes = [];
  for (const [kind, phases] of Object.entries({ ...results.brokers, 'null (load ceiling)': results.ceiling ?? {} })) {
    for (const [phase, r] of Object.entries(phases)) {
      if (r.error) notes.push(`${kind} ${phase} FAILED: ${r.error}`);
      else {
        if (r.lost > 0) notes.push(`${kind} ${phase}: ${formatInt(r.lost)} of ${formatInt(r.sent ?? r.messages)} messages never arrived`);
        if (r.outOfOrder > 0) notes.push(`${kind} ${phase}: ${formatInt(r.outOfOrder)} messages out of per-publisher order`);
        if (r.strayAcks > 0) notes.push(`${kind} ${phase}: ${formatInt(r.strayAcks)} PUBACKs for packet ids not in flight`);
        if (r.otherCpuShare > OTHER_CPU_WARN) notes.push(`${kind} ${phase}: other processes used ${share(r.otherCpuShare)} of a core meanwhile; figures are noisy, rerun on a quiet machine`);
        if (r.droppedWhileIdle > 0) notes.push(`${kind} ${phase}: broker closed ${r.droppedWhileIdle} idle connections`);
        const dropped = r.brokerCounters?.broker?.droppedQueueFull;
        if (dropped > 0) notes.push(`${kind} ${phase}: the broker dropped ${formatInt(dropped)} queued messages (queue full: maxQueued, by design for a slow subscriber)`);
      }
    }
  }
  const ceiling = results.ceiling ?? {};
  for (const q of [0, 1]) {
    const c = ceiling[`throughputQos${q}`];
    if (!c || c.error) continue;
    const best = Math.max(...Object.values(results.brokers).map((b) => b[`throughputQos${q}`]?.msgPerSec ?? 0));
    const headroom = best > 0 ? ` = ${(c.msgPerSec / best).toFixed(1)}x the fastest broker` : '';
    notes.push(`load generator ceiling QoS ${q} (null broker): ${formatInt(c.msgPerSec)} msg/s${headroom}; load process used ${share(c.loadCpuShare)} of a core there`);
  }
  for (const [kind, phases] of Object.entries(results.brokers)) {
    for (const q of [0, 1]) {
      const r = phases[`throughputQos${q}`];
      if (r && !r.error) notes.push(`${kind} QoS ${q} throughput: broker used ${share(r.brokerCpuShare)} of a core, load process ${share(r.loadCpuShare)}`);
    }
    for (const q of [0, 1]) {
      const r = phases[`latencyQos${q}`];
      if (r && !r.error) notes.push(`${kind} steady QoS ${q}: sent ${formatInt(r.achievedRate)} msg/s, send lag p99 ${formatMs(r.sendLagMs?.p99 ?? 0)}${r.windowStalls ? `, ${r.windowStalls} window stalls` : ''}`);
    }
  }
  return notes;
}

function share(x) {
  return `${Math.round((x ?? 0) * 100)}%`;
}
