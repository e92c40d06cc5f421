// The rules job's table (printed) and rows (stored in JSON), and the notes under it.
import { RULES_LIMITS } from './rules-spec.js';
import { formatBytes, formatInt, formatMs } from './stats.js';

const PEER_RATIO_TARGET = 2;
const STORAGE_PEER_RATIO_TARGET = 1.5;
const SCALE_RATIO_TARGET = 0.8;
const HISTORY_COST_TARGET = 0.3;
const PUBACK_P99_TARGET_MS = 10;
/** Above this share of a core used by other processes during a measurement, say so. */
const OTHER_CPU_WARN = 0.2;

const formatUs = (us) => `${us.toFixed(1)} µs`;
const formatPct = (x) => `${Math.round(x * 100)}%`;

/**
 * One row per figure: `sb` and `peer` say where the two compared values come from
 * ([contender, phase]) and `get` reads the figure from that phase's result; `ratio` is
 * sb / peer. The peer column holds Aedes + JSONata, or, for a signalbox variant, signalbox's
 * own base case (the row name says "vs ..."). A target is on the ratio or on signalbox's value.
 */
function rowsFor(options) {
  const few = formatInt(options.rulesFew);
  const many = formatInt(options.rulesMany);
  const rate = formatInt(options.rate);
  const msgPerSec = (r) => r.msgPerSec;
  const rows = [];
  for (const q of [0, 1]) {
    const at = { sb: ['signalbox', `qos${q}`], peer: ['aedes', `qos${q}`] };
    rows.push(
      { name: `QoS ${q} throughput (msg/s)`, ...at, get: msgPerSec, fmt: formatInt, ratioAtLeast: PEER_RATIO_TARGET },
      { name: `QoS ${q} latency p50 (saturated)`, ...at, get: (r) => r.latencyMs?.p50, fmt: formatMs },
      { name: `QoS ${q} latency p99 (saturated)`, ...at, get: (r) => r.latencyMs?.p99, fmt: formatMs },
      { name: `QoS ${q} longest delivery gap`, ...at, get: (r) => r.maxGapMs, fmt: formatMs },
      { name: `QoS ${q} broker CPU per message`, ...at, get: (r) => r.brokerCpuUsPerMsg, fmt: formatUs },
      { name: `QoS ${q} broker peak RSS`, ...at, get: (r) => r.brokerPeakRss, fmt: formatBytes },
    );
  }
  for (const q of [0, 1]) {
    rows.push({ name: `QoS ${q} ${many} rules (vs ${few}) msg/s`, sb: ['signalbox', `scaleQos${q}`], peer: ['signalbox', `qos${q}`], get: msgPerSec, fmt: formatInt, ratioAtLeast: SCALE_RATIO_TARGET });
  }
  for (const q of [0, 1]) {
    rows.push({ name: `QoS ${q} history on (vs off) msg/s`, sb: ['signalbox', `historyQos${q}`], peer: ['signalbox', `qos${q}`], get: msgPerSec, fmt: formatInt, costBelow: HISTORY_COST_TARGET });
  }
  const steady = { sb: ['signalbox', 'puback'], peer: ['aedes', 'puback'] };
  rows.push(
    { name: 'QoS 1 history on (vs Aedes) msg/s', sb: ['signalbox', 'historyQos1'], peer: ['aedes', 'qos1'], get: msgPerSec, fmt: formatInt, ratioAtLeast: STORAGE_PEER_RATIO_TARGET },
    { name: `steady ${rate}/s QoS 1 PUBACK p50`, ...steady, get: (r) => r.ackLatencyMs?.p50, fmt: formatMs },
    { name: `steady ${rate}/s QoS 1 PUBACK p99`, ...steady, get: (r) => r.ackLatencyMs?.p99, fmt: formatMs, below: PUBACK_P99_TARGET_MS },
    { name: `steady ${rate}/s QoS 1 delivery p99`, ...steady, get: (r) => r.latencyMs?.p99, fmt: formatMs },
  );
  return rows;
}

/** Builds the rows from `results.contenders` ({ signalbox: { phase: result }, aedes: {...} }). */
export function buildRulesRows(results, options) {
  const value = ([who, phase], get) => {
    const r = results.contenders[who]?.[phase];
    return r && !r.error ? num(get(r)) : null;
  };
  const ran = ([who, phase]) => results.contenders[who]?.[phase] !== undefined;
  return rowsFor(options).map((row) => {
    const signalbox = value(row.sb, row.get);
    const peer = value(row.peer, row.get);
    const ratio = signalbox !== null && peer !== null && peer !== 0 ? signalbox / peer : null;
    let target = '';
    let met = null;
    if (row.ratioAtLeast !== undefined) {
      target = `ratio ≥ ${row.ratioAtLeast}`;
      met = ratio !== null && ratio >= row.ratioAtLeast;
    } else if (row.costBelow !== undefined) {
      target = `cost < ${formatPct(row.costBelow)}`;
      met = ratio !== null && 1 - ratio < row.costBelow;
    } else if (row.below !== undefined) {
      target = `signalbox < ${row.below} ms`;
      met = signalbox !== null && signalbox < row.below;
    }
    // A verdict needs what it compares to have run (a failed phase is MISSED, one not run is no verdict).
    if (!ran(row.sb) || ((row.ratioAtLeast !== undefined || row.costBelow !== undefined) && !ran(row.peer))) met = null;
    return { name: row.name, signalbox, peer, ratio, target, met, sbPhase: row.sb.join(' '), peerPhase: row.peer.join(' '), format: row.fmt };
  });
}

function num(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

/**
 * The table as text. A value shows "error" when its phase failed and "-" when it was not run.
 */
export function formatRulesTable(rows, results) {
  const state = (at) => {
    const [who, phase] = at.split(' ');
    const r = results.contenders[who]?.[phase];
    return r ? (r.error ? 'error' : 'ok') : 'not run';
  };
  const cell = (value, row, at) => (value !== null ? row.format(value) : state(at) === 'error' ? 'error' : '-');
  const lines = [['figure', 'signalbox', 'peer / base', 'ratio', 'target', '']];
  for (const r of rows) {
    lines.push([
      r.name,
      cell(r.signalbox, r, r.sbPhase),
      cell(r.peer, r, r.peerPhase),
      r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
      r.target,
      r.met === null ? '' : r.met ? 'met' : 'MISSED',
    ]);
  }
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  const render = (l) => l.map((c, i) => (i === 0 || i >= 4 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [render(lines[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.slice(1).map(render)].join('\n');
}

/**
 * Notes under the table: how the comparison is set up, then anything lost, dropped, failed
 * or disturbed (loudly: a throughput bought with lost messages is no throughput), then CPU
 * shares and the variants' CPU-per-message ratios, steadier than throughput on a busy machine.
 */
export function formatRulesNotes(results, options) {
  const notes = [];
  const warn = [];
  const noisy = [];
  const sb = results.contenders.signalbox ?? {};
  const ae = results.contenders.aedes ?? {};
  notes.push(
    `signalbox runs with limits ${JSON.stringify(RULES_LIMITS)} (defaults: maxInflight 100, maxQueued 1000 per client, which drop a slow subscriber's oldest QoS 1 messages by design); Aedes queues without bound`,
  );
  for (const [who, phases] of Object.entries(results.contenders)) {
    for (const [phase, r] of Object.entries(phases)) {
      if (r.error) {
        warn.push(`${who} ${phase} FAILED: ${r.error}`);
        continue;
      }
      const sent = r.sent ?? r.messages;
      if (r.lost > 0) warn.push(`LOSS: ${who} ${phase}: ${formatInt(r.lost)} of ${formatInt(sent)} messages never reached the subscriber`);
      if (r.invalid > 0) warn.push(`WRONG: ${who} ${phase}: ${formatInt(r.invalid)} deliveries were not the rule's output (topic, JSON or Fahrenheit wrong)`);
      if (r.outOfOrder > 0) warn.push(`ORDER: ${who} ${phase}: ${formatInt(r.outOfOrder)} messages out of per-publisher order`);
      if (r.strayAcks > 0) warn.push(`${who} ${phase}: ${formatInt(r.strayAcks)} PUBACKs for packet ids not in flight`);
      const c = r.brokerCounters;
      if (c?.broker?.droppedQueueFull > 0) warn.push(`DROPS: ${who} ${phase}: broker dropped ${formatInt(c.broker.droppedQueueFull)} queued messages (queue full)`);
      if (c?.broker?.publishHookErrors > 0) warn.push(`${who} ${phase}: ${formatInt(c.broker.publishHookErrors)} publishes not acknowledged (publish hook failed)`);
      const ruleErrors = (c?.rules?.ruleErrors ?? 0) + (c?.rules?.effectErrors ?? 0);
      if (ruleErrors > 0) {
        const why = (c?.deadLetterErrors ?? []).map((d) => `${d.count}x ${d.error}`).join('; ');
        warn.push(`RULE ERRORS: ${who} ${phase}: ${formatInt(ruleErrors)}${c?.deadLetters ? ` (${formatInt(c.deadLetters)} dead letters${why ? `: ${why}` : ''})` : ''}`);
      }
      if (phase.startsWith('history') || phase === 'puback') {
        const run = c?.rules?.rulesRun;
        if (who === 'signalbox' && run !== undefined && c.historyRows !== run) warn.push(`LOSS: ${who} ${phase}: ${formatInt(c.historyRows)} history rows stored for ${formatInt(run)} rule runs`);
      }
      if (r.otherCpuShare > OTHER_CPU_WARN) noisy.push(`${who} ${phase}: other processes used ${formatPct(r.otherCpuShare)} of a core meanwhile; figures are noisy, rerun on a quiet machine`);
      if (r.noisyRounds > 0) notes.push(`${who} ${phase}: ${r.noisyRounds} disturbed round(s) repeated`);
    }
  }
  // The base case is the "storage off" side of the storage cost: check it wrote nothing.
  for (const q of [0, 1]) {
    const r = sb[`qos${q}`];
    const c = r?.brokerCounters;
    if (!c || c.walBytes === undefined) continue;
    const grew = c.walBytes - (r.startInfo?.walBytesAtStart ?? 0);
    if (grew > 0 || c.brokerStateRows > 0) warn.push(`signalbox qos${q} (history off) still wrote to SQLite: WAL grew ${formatBytes(grew)}, ${c.brokerStateRows} broker state rows; it is not "storage off"`);
    else notes.push(`signalbox QoS ${q} with history off wrote nothing to SQLite (WAL unchanged, no broker state rows: clean sessions keep no durable state), so it is the "storage off" case`);
  }
  if (warn.length === 0) notes.push('no message lost, dropped, wrong or out of order; no rule error' + (sb.historyQos1 ? '; every rule run stored its history row' : ''));
  for (const q of [0, 1]) {
    for (const [who, r] of [['signalbox', sb[`qos${q}`]], ['aedes', ae[`qos${q}`]]]) {
      if (r && !r.error) notes.push(`${who} QoS ${q}: broker used ${formatPct(r.brokerCpuShare)} of a core (GC threads count), load process ${formatPct(r.loadCpuShare)}`);
    }
  }
  const cpuRatio = (variant, q) => {
    const a = sb[`qos${q}`];
    const v = sb[`${variant}Qos${q}`];
    if (!a || a.error || !v || v.error) return undefined;
    return `${formatUs(v.brokerCpuUsPerMsg)} vs ${formatUs(a.brokerCpuUsPerMsg)} per message (${(v.brokerCpuUsPerMsg / a.brokerCpuUsPerMsg).toFixed(2)}x)`;
  };
  for (const q of [0, 1]) {
    const s = cpuRatio('scale', q);
    if (s) notes.push(`QoS ${q} ${formatInt(options.rulesMany)} rules, broker CPU: ${s}; loaded in ${formatInt(sb[`scaleQos${q}`].startInfo?.loadMs ?? NaN)} ms`);
    const h = cpuRatio('history', q);
    const hv = sb[`historyQos${q}`];
    const a = sb[`qos${q}`];
    if (h) notes.push(`QoS ${q} history cost: ${formatPct(1 - hv.msgPerSec / a.msgPerSec)} of throughput; broker CPU ${h}`);
  }
  if (ae.puback && !ae.puback.error) notes.push('Aedes acknowledges QoS 1 on receipt, before its rule runs (PUBACK is written, then the message published); signalbox only once the rule\'s republish and history row are done: the two PUBACK columns promise different things');
  const p = sb.puback;
  if (p && !p.error) notes.push(`steady QoS 1 (history on): sent ${formatInt(p.achievedRate)} msg/s, send lag p99 ${formatMs(p.sendLagMs?.p99 ?? 0)}, PUBACK max ${formatMs(p.ackLatencyMs?.max ?? 0)}${p.windowStalls ? `, ${p.windowStalls} window stalls` : ''}`);
  return [...warn, ...noisy, ...notes];
}
