// The bridge job's table (printed) and rows (stored in JSON), and the notes under it.
import { formatBytes, formatInt, formatMs } from './stats.js';

/** signalbox's bridge should forward at least as fast as Mosquitto's own. */
const THROUGHPUT_RATIO_TARGET = 1;
/** Above this share of a core used by other processes during a measurement, say so. */
const OTHER_CPU_WARN = 0.2;

const formatUs = (us) => `${us.toFixed(1)} µs`;
const formatPct = (x) => `${Math.round(x * 100)}%`;

/** Messages lost / duplicated over every measured round and the steady run of one contender. */
export function lossOf(c) {
  const parts = [c?.throughput, c?.steady].filter((r) => r && !r.error);
  if (parts.length === 0) return { lost: null, duplicates: null, sent: 0 };
  return {
    lost: parts.reduce((s, r) => s + r.lost, 0),
    duplicates: parts.reduce((s, r) => s + r.duplicates, 0),
    sent: parts.reduce((s, r) => s + (r.sent ?? r.messages), 0),
  };
}

/**
 * One row per figure: `get` reads it from a contender's results ({ throughput, steady,
 * rssAtStart, ... }); `ratio` is signalbox / mosquitto.
 */
function rowsFor(settings) {
  const rate = formatInt(settings.rate);
  const t = (f) => (c) => (c.throughput && !c.throughput.error ? f(c.throughput) : undefined);
  const s = (f) => (c) => (c.steady && !c.steady.error ? f(c.steady) : undefined);
  return [
    { name: 'throughput at the remote (msg/s)', get: t((r) => r.msgPerSec), fmt: formatInt, ratioAtLeast: THROUGHPUT_RATIO_TARGET },
    { name: 'saturated latency p50', get: t((r) => r.latencyMs?.p50), fmt: formatMs },
    { name: 'saturated latency p99', get: t((r) => r.latencyMs?.p99), fmt: formatMs },
    { name: 'longest delivery gap', get: t((r) => r.maxGapMs), fmt: formatMs },
    { name: 'lost (all rounds + steady)', get: (c) => lossOf(c).lost, fmt: formatInt, zero: true },
    { name: 'duplicates', get: (c) => lossOf(c).duplicates, fmt: formatInt },
    { name: 'bridging process CPU per message', get: t((r) => r.bridgeCpuUsPerMsg), fmt: formatUs },
    { name: 'bridging process CPU (share of a core)', get: t((r) => r.bridgeCpuShare), fmt: formatPct },
    { name: 'bridging process RSS at start', get: (c) => c.rssAtStart, fmt: formatBytes },
    { name: 'bridging process RSS after the rounds', get: (c) => c.rssAfterLoad, fmt: formatBytes },
    { name: 'bridging process peak RSS', get: (c) => c.peakRss, fmt: formatBytes },
    { name: `steady ${rate}/s latency p50`, get: s((r) => r.latencyMs?.p50), fmt: formatMs },
    { name: `steady ${rate}/s latency p99`, get: s((r) => r.latencyMs?.p99), fmt: formatMs },
    { name: `steady ${rate}/s latency max`, get: s((r) => r.latencyMs?.max), fmt: formatMs },
  ];
}

function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/** The table rows from `results.contenders` ({ signalbox, mosquitto, direct }). */
export function buildBridgeRows(results) {
  const sb = results.contenders.signalbox;
  const mq = results.contenders.mosquitto;
  return rowsFor(results.settings).map((row) => {
    const signalbox = sb ? num(row.get(sb)) : null;
    const mosquitto = mq ? num(row.get(mq)) : null;
    const ratio = signalbox !== null && mosquitto !== null && mosquitto !== 0 ? signalbox / mosquitto : null;
    let target = '';
    let met = null;
    if (row.ratioAtLeast !== undefined) {
      target = `ratio ≥ ${row.ratioAtLeast}`;
      met = ratio !== null && ratio >= row.ratioAtLeast;
    } else if (row.zero) {
      target = 'both 0';
      met = signalbox === 0 && mosquitto === 0;
    }
    return { name: row.name, signalbox, mosquitto, ratio, target, met, format: row.fmt };
  });
}

/** The table as text; a contender that failed shows "error", one not run "-". */
export function formatBridgeTable(rows, results) {
  const missing = (kind) => (results.contenders[kind]?.error || results.contenders[kind]?.throughput?.error ? 'error' : '-');
  const version = results.mosquittoVersion ? `mosquitto ${results.mosquittoVersion}` : 'mosquitto';
  const lines = [['figure', 'signalbox', version, 'sb/mosq', 'target', '']];
  for (const r of rows) {
    lines.push([
      r.name,
      r.signalbox === null ? missing('signalbox') : r.format(r.signalbox),
      r.mosquitto === null ? missing('mosquitto') : r.format(r.mosquitto),
      r.ratio === null || r.target === 'both 0' ? '-' : `${r.ratio.toFixed(2)}x`,
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

/** Loss first and loud, then failures, noise, the direct ceiling, and where the CPU went. */
export function formatBridgeNotes(results) {
  const notes = [];
  const entries = Object.entries(results.contenders);
  for (const [kind, c] of entries) {
    const { lost, duplicates, sent } = lossOf(c);
    if (lost > 0) notes.push(`!!! LOSS: ${kind} lost ${formatInt(lost)} of ${formatInt(sent)} QoS 1 messages (never arrived at the remote subscriber) !!!`);
    if (duplicates > 0) notes.push(`${kind}: ${formatInt(duplicates)} duplicate deliveries (at least once allows them; a bridge resent after a retry)`);
  }
  for (const [kind, c] of entries) {
    if (c.error) notes.push(`${kind} FAILED: ${c.error}`);
    for (const phase of ['throughput', 'steady']) {
      const r = c[phase];
      if (!r) continue;
      if (r.error) {
        notes.push(`${kind} ${phase} FAILED: ${r.error}`);
        continue;
      }
      if (r.outOfOrder > 0) notes.push(`${kind} ${phase}: ${formatInt(r.outOfOrder)} messages out of per-publisher order`);
      if (r.strayAcks > 0) notes.push(`${kind} ${phase}: ${formatInt(r.strayAcks)} PUBACKs for packet ids not in flight`);
      if (r.otherCpuShare > OTHER_CPU_WARN) notes.push(`${kind} ${phase}: other processes used ${formatPct(r.otherCpuShare)} of a core meanwhile; figures are noisy, rerun on a quiet machine`);
      if (phase === 'throughput' && r.noisyRounds > 0) notes.push(`${kind}: ${r.noisyRounds} disturbed round(s) repeated; rounds ${r.roundsMsgPerSec.map(formatInt).join(' / ')} msg/s`);
    }
  }
  const direct = results.contenders.direct;
  if (direct?.throughput && !direct.throughput.error) {
    const best = Math.max(...['signalbox', 'mosquitto'].map((k) => results.contenders[k]?.throughput?.msgPerSec ?? 0));
    const headroom = best > 0 ? ` = ${(direct.throughput.msgPerSec / best).toFixed(1)}x the fastest bridge` : '';
    notes.push(`ceiling without a bridge (publishers straight to the remote Mosquitto): ${formatInt(direct.throughput.msgPerSec)} msg/s${headroom}; a bridge well below it is the bottleneck`);
  }
  for (const kind of ['signalbox', 'mosquitto']) {
    const r = results.contenders[kind]?.throughput;
    if (r && !r.error) notes.push(`${kind} rounds: bridging process ${formatPct(r.bridgeCpuShare)} of a core, remote Mosquitto ${formatPct(r.remoteCpuShare)}, load process ${formatPct(r.loadCpuShare)}; rounds ${r.roundsMsgPerSec.map(formatInt).join(' / ')} msg/s`);
    const s = results.contenders[kind]?.steady;
    if (s && !s.error) notes.push(`${kind} steady: sent ${formatInt(s.achievedRate)} msg/s, send lag p99 ${formatMs(s.sendLagMs?.p99 ?? 0)}${s.windowStalls ? `, ${s.windowStalls} window stalls` : ''}`);
    const out = results.contenders[kind]?.counters?.output;
    if (out && (out.retries > 0 || out.deadLettered > 0 || out.dropped > 0 || out.waiting > 0)) {
      notes.push(`${kind} bridge output at the end: ${out.waiting} waiting, ${out.retries} retries, ${out.deadLettered} dead-lettered, ${out.dropped} dropped${out.lastError ? ` (last error: ${out.lastError})` : ''}`);
    }
  }
  return notes;
}

/** True when the job should make the run exit 1: a failure, or any message lost. */
export function bridgeFailed(results) {
  return Object.values(results.contenders).some((c) => c.error || c.throughput?.error || c.steady?.error || lossOf(c).lost > 0);
}

/** Prints the job's table and notes (run.js), and stores the rows in `results.table`. */
export function printBridge(results) {
  const s = results.settings;
  if (results.skipped) {
    console.log(`\nbridge job skipped: ${results.skipped}`);
    return;
  }
  const rows = buildBridgeRows(results);
  results.table = rows.map(({ format, ...row }) => row);
  console.log(
    `\nbridge job: signalbox bridge output vs Mosquitto ${results.mosquittoVersion ?? ''} bridge — ${s.publishers} publishers (QoS 1, window ${s.window}) → bridge → remote Mosquitto → 1 subscriber, ${s.payloadBytes} B payloads, ${formatInt(s.messages)} messages per round, node ${process.version}\n`,
  );
  console.log(formatBridgeTable(rows, results));
  console.log('');
  for (const note of formatBridgeNotes(results)) console.log(`- ${note}`);
}
