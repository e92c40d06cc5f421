// The bridge job: QoS 1 messages published to a local broker, forwarded by a bridge to a
// remote Mosquitto, received there by one subscriber. Contenders, each with a fresh remote
// Mosquitto and a fresh bridging process:
//   signalbox   the whole signalbox (servers/signalbox-bridge.js) with a `type: bridge` output
//   mosquitto   a second Mosquitto whose `connection` bridges `topic bench/# out 1` to the remote
//   direct      (BENCH_CEILING=1) no bridge: the publishers connect to the remote itself; the
//               ceiling of the remote + load generator, so a bridge below it is the bottleneck
// Per contender: a warm-up, measured rounds of a fixed number of messages (msg/s delivered at
// the remote subscriber, saturated latency, loss, duplicates, CPU and RSS of the bridging
// process from /proc), then a steady-rate run for the bridge's own latency.
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt-packet';
import { mosquittoMissing, mosquittoVersion, procStats, startMosquitto, startSignalboxBridge } from './bridge-procs.js';
import { connectClient, Publisher, Subscriber } from './load.js';
import { errorText, machineBusyMs, percentiles, withTimeout } from './stats.js';

export const BRIDGE_CONTENDERS = ['signalbox', 'mosquitto'];
/** Topic filter of the subscriber at the remote; publisher i sends on bench/<i>/data. */
const FILTER = 'bench/+/data';
/** What the path-ready probe sends through the bridge (outside FILTER, inside bench/#). */
const PROBE_TOPIC = 'bench/ready';
const PROBE_EVERY_MS = 100;
const START_TIMEOUT_MS = 15_000;
/** A round in which other processes used more than this share of a core is repeated. */
const NOISY_CPU_SHARE = 0.2;
/** After sending is done, this long without a delivery (and no sign of work) means the rest is lost. */
const QUIET_MS = 2_000;
const TICK_MS = 1;

/**
 * The remote sink. Not under test, so nothing in it should be what limits: no cap on
 * messages in flight or queued towards the subscriber (its defaults, 20 and 1000, would
 * throttle delivery to the bench subscriber and drop beyond the queue), and no Nagle delay.
 */
export const SINK_CONFIG = ['max_inflight_messages 0', 'max_queued_messages 0', 'set_tcp_nodelay true'];

/**
 * The Mosquitto contender: a stock `connection` bridge. Its own defaults, except
 * max_queued_messages 0: by default it drops (silently) what is queued for the bridge past
 * 1000 messages, and the bench must compare two bridges that lose nothing. Signalbox's
 * outbox is on disk and bounded by bytes (256 MiB by default), not by messages.
 * BENCH_BRIDGE_MOSQUITTO_CONF='line;line' replaces that tuning line (diagnosis only; '' = all
 * Mosquitto defaults, which loses messages under this load).
 */
export function mosquittoBridgeConfig(remotePort) {
  const tuning = process.env.BENCH_BRIDGE_MOSQUITTO_CONF;
  return [...(tuning !== undefined ? tuning.split(';').map((l) => l.trim()).filter(Boolean) : ['max_queued_messages 0']), 'connection bench-bridge', `address 127.0.0.1:${remotePort}`, 'topic bench/# out 1'];
}

/** Every setting the job measured with, for the JSON. */
export function bridgeSettings(options) {
  return {
    contenders: contendersOf(options),
    ceiling: Boolean(options.ceiling),
    publishers: options.publishers,
    messages: options.bridgeMessages,
    warmupMessages: options.bridgeWarmupMessages,
    rounds: options.rounds,
    window: options.window,
    payloadBytes: options.payloadBytes,
    rate: options.bridgeRate,
    rateSeconds: options.rateSeconds,
    rateWarmupSeconds: options.rateWarmupSeconds,
    phaseTimeoutMs: options.phaseTimeoutMs,
    sinkConfig: SINK_CONFIG,
    mosquittoBridgeConfig: mosquittoBridgeConfig('<remote port>'),
  };
}

function contendersOf(options) {
  return String(options.bridgeContenders ?? BRIDGE_CONTENDERS.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/**
 * Runs the whole job, one contender after the other; never throws. `report(kind, result)`
 * is called after each (for a progress line). Returns the results for bridge.json.
 */
export async function runBridgeJob(options, { report } = {}) {
  const results = { settings: bridgeSettings(options), contenders: {} };
  const missing = mosquittoMissing();
  if (missing) {
    results.skipped = `Mosquitto is missing: ${missing}`;
    return results;
  }
  results.mosquittoVersion = await mosquittoVersion();
  const kinds = [...(options.ceiling ? ['direct'] : []), ...contendersOf(options)];
  for (const kind of kinds) {
    const t0 = Date.now();
    const result = await runContender(kind, options);
    result.elapsedMs = Date.now() - t0;
    results.contenders[kind] = result;
    report?.(kind, result);
  }
  return results;
}

/** Starts the remote and the bridging process, runs the phases, stops everything. Never throws. */
async function runContender(kind, options) {
  const result = {};
  const procs = [];
  let clients;
  const crashed = () => procs.map((p) => p.crashed()).find(Boolean);
  try {
    const remote = await startMosquitto('remote', SINK_CONFIG, { startTimeoutMs: START_TIMEOUT_MS });
    procs.push(remote);
    let bridge;
    const t0 = performance.now();
    if (kind === 'signalbox') bridge = await startSignalboxBridge(remote.port, { startTimeoutMs: START_TIMEOUT_MS });
    else if (kind === 'mosquitto') bridge = await startMosquitto('bridge', mosquittoBridgeConfig(remote.port), { startTimeoutMs: START_TIMEOUT_MS });
    else if (kind !== 'direct') throw new Error(`unknown bridge contender ${JSON.stringify(kind)}; accepted: ${BRIDGE_CONTENDERS.join(', ')}`);
    if (bridge) procs.push(bridge);
    const localPort = bridge?.port ?? remote.port;
    // connectClient bounds each CONNECT / SUBSCRIBE itself (10 s).
    clients = await connectClients(remote.port, localPort, options);
    result.pathReadyMs = await waitForPath(clients, crashed, START_TIMEOUT_MS);
    result.startMs = Math.round(performance.now() - t0);
    const watched = { kind, remote, bridge, crashed, counters: bridge?.counters };
    if (bridge) result.rssAtStart = procStats(bridge.pid).rss;

    result.throughput = await phase('throughput', () => runThroughput(watched, clients, options), options.phaseTimeoutMs, clients, crashed);
    if (bridge) {
      const s = procStats(bridge.pid);
      result.rssAfterLoad = s.rss;
      result.peakRss = s.peakRss;
    }
    if (!result.throughput.error) result.steady = await phase('steady', () => runSteady(watched, clients, options), options.phaseTimeoutMs, clients, crashed);
    if (bridge) result.peakRss = procStats(bridge.pid).peakRss;
    if (bridge?.counters) result.counters = await bridge.counters().catch((err) => ({ error: err.message }));
    if (bridge?.info) result.info = bridge.info;
    const crash = crashed();
    if (crash) throw new Error(crash);
  } catch (err) {
    result.error = errorText(err, crashed());
  } finally {
    await clients?.close().catch(() => {});
    for (const p of procs.reverse()) await p.stop().catch(() => {});
  }
  return result;
}

/**
 * Runs one phase under its deadline; a failure becomes `{ error }` and stops the load (the
 * phase's loops see `clients.stopped` and wind down; whatever they throw then is ignored).
 */
async function phase(name, run, timeoutMs, clients, crashed) {
  clients.stopped = false;
  const running = run();
  running.catch(() => {});
  try {
    return await withTimeout(running, timeoutMs, name, () => {
      const t = clients.tally;
      return `${clients.stage}: ${t.distinct} of ${t.total} delivered at the remote${crashed() ? `; ${crashed()}` : ''}`;
    });
  } catch (err) {
    clients.stopped = true;
    return { error: errorText(err, crashed()) };
  }
}

/**
 * The subscriber on the remote (bench/+/data, QoS 1), the publishers on the local broker
 * (the bridging process, or the remote for `direct`), and a probe pair for the path check.
 */
async function connectClients(remotePort, localPort, options) {
  const tag = Math.random().toString(36).slice(2, 8);
  const all = [];
  const close = () => Promise.all(all.map((c) => c.close()));
  try {
    const subClient = await connectClient(remotePort, { clientId: `bench-sub-${tag}` });
    all.push(subClient);
    await subClient.subscribe(FILTER, 1);
    const capacity = Math.max(options.bridgeMessages, Math.round(options.bridgeRate * options.rateSeconds));
    const subscriber = new Subscriber(subClient, { publishers: options.publishers, capacity });
    const tally = new Tally(subscriber, options.publishers);
    const probeSub = await connectClient(remotePort, { clientId: `bench-probe-sub-${tag}` });
    all.push(probeSub);
    await probeSub.subscribe(PROBE_TOPIC, 0);
    const probePub = await connectClient(localPort, { clientId: `bench-probe-pub-${tag}` });
    all.push(probePub);
    const publishers = [];
    for (let i = 0; i < options.publishers; i++) {
      const client = await connectClient(localPort, { clientId: `bench-pub-${i}-${tag}` });
      all.push(client);
      publishers.push(new Publisher(client, { index: i, topic: `bench/${i}/data`, qos: 1, payloadBytes: options.payloadBytes, window: options.window }));
    }
    return { subscriber, tally, publishers, probeSub, probePub, close, stage: 'connected', stopped: false };
  } catch (err) {
    for (const c of all) c.socket.destroy();
    throw err;
  }
}

/**
 * Publishes QoS 1 probes on the local side until one arrives at the remote (the bridge is
 * up); throws after `timeoutMs`. Returns how long it took, ms.
 */
async function waitForPath(clients, crashed, timeoutMs) {
  const t0 = performance.now();
  let arrived = false;
  clients.probeSub.onPublish = () => (arrived = true);
  let id = 0;
  while (!arrived) {
    const crash = crashed();
    if (crash) throw new Error(crash);
    if (performance.now() - t0 > timeoutMs) throw new Error(`no probe reached the remote through the bridge within ${timeoutMs / 1000} s`);
    if (clients.probePub.error) throw clients.probePub.error;
    id = (id % 65535) + 1;
    clients.probePub.socket.write(mqtt.generate({ cmd: 'publish', topic: PROBE_TOPIC, payload: Buffer.from('ready'), qos: 1, messageId: id, retain: false, dup: false }));
    await new Promise((resolve) => setTimeout(resolve, PROBE_EVERY_MS));
  }
  return Math.round(performance.now() - t0);
}

/**
 * Counts distinct bench messages at the subscriber (publisher, sequence), so a duplicate
 * (a bridge resending after a retry) can neither pass for a delivery nor hide a loss.
 */
class Tally {
  constructor(subscriber, publishers) {
    this.subscriber = subscriber;
    this.publishers = publishers;
    this.reset(0);
    const receive = subscriber.client.onPublish;
    subscriber.client.onPublish = (packet) => {
      this.count(packet.payload);
      receive(packet);
    };
  }

  reset(total, onComplete) {
    this.total = total;
    /** Called (synchronously) as the last missing message arrives. */
    this.onComplete = onComplete;
    this.seen = new Uint8Array(this.publishers * total);
    this.distinct = 0;
    this.duplicates = 0;
    this.subscriber.reset(Infinity);
  }

  count(p) {
    const pub = p.readUInt16LE(8);
    const seq = p.readUInt32LE(10);
    if (pub >= this.publishers || seq >= this.total) return;
    const i = pub * this.total + seq;
    if (this.seen[i]) this.duplicates++;
    else {
      this.seen[i] = 1;
      if (++this.distinct === this.total) this.onComplete?.();
    }
  }
}

/**
 * Resolves when all `total` messages arrived at the remote, or once sending is done and
 * nothing arrived for QUIET_MS while the bridging process shows no work left (signalbox: an
 * outbox still holding messages or still delivering counts as work; Mosquitto has no such
 * counter). The shortfall is then reported as lost.
 */
function awaitRemote(clients, sendingDone, counters) {
  const { tally } = clients;
  return new Promise((resolve) => {
    let last = -1;
    let quietSince = 0;
    let asking = false;
    let lastDelivered;
    const timer = setInterval(() => {
      const now = Date.now();
      if (tally.distinct + tally.duplicates !== last) {
        last = tally.distinct + tally.duplicates;
        quietSince = now;
      }
      if (tally.distinct >= tally.total || clients.stopped) return finish();
      if (!sendingDone() || now - quietSince < QUIET_MS || asking) return;
      if (!counters) return finish();
      asking = true;
      counters().then(
        (c) => {
          asking = false;
          const delivered = c.output?.delivered;
          const busy = (c.output?.waiting ?? 0) > 0 || delivered !== lastDelivered;
          lastDelivered = delivered;
          if (busy) quietSince = Date.now();
          else finish();
        },
        () => finish(),
      );
    }, 50);
    const finish = () => {
      clearInterval(timer);
      resolve();
    };
  });
}

/** CPU and RSS of the bridging process and the remote, and the machine's busy time, now. */
function snapshot(w) {
  return {
    at: performance.now(),
    bridge: w.bridge ? procStats(w.bridge.pid) : undefined,
    remote: procStats(w.remote.pid),
    load: process.cpuUsage(),
    machineMs: machineBusyMs(),
  };
}

function between(before, after, delivered) {
  const wallMs = after.at - before.at;
  const bridgeCpuUs = after.bridge ? after.bridge.cpuUs - before.bridge.cpuUs : 0;
  const remoteCpuUs = after.remote.cpuUs - before.remote.cpuUs;
  const load = process.cpuUsage(before.load);
  const loadCpuUs = load.user + load.system;
  const machineMs = after.machineMs - before.machineMs;
  return {
    bridgeCpuUsPerMsg: after.bridge ? bridgeCpuUs / Math.max(1, delivered) : undefined,
    bridgeCpuShare: after.bridge ? bridgeCpuUs / 1000 / wallMs : undefined,
    remoteCpuShare: remoteCpuUs / 1000 / wallMs,
    loadCpuShare: loadCpuUs / 1000 / wallMs,
    // Cores' worth of CPU everything else on the machine used meanwhile (10 ms ticks: short rounds read rough).
    otherCpuShare: Math.max(0, machineMs - (bridgeCpuUs + remoteCpuUs + loadCpuUs) / 1000) / wallMs,
  };
}

/**
 * Splits `total` over the publishers and floods them at QoS 1 (window each); waits for the
 * remote. Returns a snapshot taken as the last message arrived (or, if some never did, when
 * the wait gave up), so CPU shares cover the round and not the wait after it.
 */
async function floodAll(w, clients, total) {
  const { publishers, tally } = clients;
  let end;
  tally.reset(total, () => (end = snapshot(w)));
  for (const p of publishers) p.resetSequence();
  const share = Math.floor(total / publishers.length);
  let sendingDone = false;
  const stopped = () => clients.stopped || Boolean(w.crashed());
  const sending = Promise.all(publishers.map((p, i) => p.flood(i === 0 ? total - share * (publishers.length - 1) : share, { stopped }))).then(() => (sendingDone = true));
  await Promise.all([sending, awaitRemote(clients, () => sendingDone || stopped(), w.counters)]);
  const crash = w.crashed();
  if (crash) throw new Error(crash);
  return end ?? snapshot(w);
}

/** Warm-up, then `rounds` measured rounds (disturbed ones repeated, up to as many again); the median round is the figure. */
async function runThroughput(w, clients, options) {
  const messages = options.bridgeMessages;
  if (options.bridgeWarmupMessages > 0) {
    clients.stage = 'warm-up';
    await floodAll(w, clients, options.bridgeWarmupMessages);
  }
  const wanted = Math.max(1, options.rounds);
  const rounds = [];
  let quiet = 0;
  for (let r = 1; quiet < wanted && r <= wanted * 2; r++) {
    clients.stage = `measured round ${r}`;
    const before = snapshot(w);
    const after = await floodAll(w, clients, messages);
    const { tally, subscriber } = clients;
    const wallMs = subscriber.lastAt - before.at;
    const { values, count } = subscriber.samples();
    const round = {
      delivered: tally.distinct,
      lost: messages - tally.distinct,
      duplicates: tally.duplicates,
      outOfOrder: subscriber.outOfOrder - tally.duplicates,
      maxGapMs: subscriber.maxGapMs,
      durationMs: wallMs,
      msgPerSec: (tally.distinct / wallMs) * 1000,
      latencyMs: percentiles(values, count),
      ...between(before, after, tally.distinct),
      bridgeRss: after.bridge?.rss,
    };
    round.noisy = round.otherCpuShare > NOISY_CPU_SHARE;
    if (!round.noisy) quiet++;
    rounds.push(round);
  }
  const candidates = quiet > 0 ? rounds.filter((r) => !r.noisy) : rounds;
  const median = [...candidates].sort((a, b) => a.msgPerSec - b.msgPerSec)[Math.floor((candidates.length - 1) / 2)];
  return {
    messages,
    ...median,
    sent: messages * rounds.length,
    lost: rounds.reduce((s, r) => s + r.lost, 0),
    duplicates: rounds.reduce((s, r) => s + r.duplicates, 0),
    outOfOrder: rounds.reduce((s, r) => s + Math.max(0, r.outOfOrder), 0),
    roundsMsgPerSec: rounds.map((r) => Math.round(r.msgPerSec)),
    noisyRounds: rounds.filter((r) => r.noisy).length,
    strayAcks: clients.publishers.reduce((s, p) => s + p.strayAcks, 0),
    rounds,
  };
}

/**
 * `rate` msg/s in total for `rateSeconds` (after rateWarmupSeconds), one PUBLISH per write,
 * round-robin over the publishers on a 1 ms timer; publish → remote delivery latency of
 * every message. Far below saturation: the bridge's own delay.
 */
async function runSteady(w, clients, options) {
  const rate = options.bridgeRate;
  if (options.rateWarmupSeconds > 0) {
    clients.stage = 'steady warm-up';
    await sendAtRate(w, clients, Math.round(rate * options.rateWarmupSeconds), rate);
  }
  clients.stage = 'steady run';
  const total = Math.round(rate * options.rateSeconds);
  const before = snapshot(w);
  const pacing = await sendAtRate(w, clients, total, rate);
  const after = pacing.end;
  const { tally, subscriber } = clients;
  const { values, count } = subscriber.samples();
  return {
    rate,
    messages: total,
    delivered: tally.distinct,
    lost: total - tally.distinct,
    duplicates: tally.duplicates,
    outOfOrder: Math.max(0, subscriber.outOfOrder - tally.duplicates),
    maxGapMs: subscriber.maxGapMs,
    achievedRate: (pacing.sent / pacing.sendMs) * 1000,
    latencyMs: percentiles(values, count),
    sendLagMs: pacing.lag,
    windowStalls: pacing.windowStalls,
    ...between(before, after, tally.distinct),
  };
}

async function sendAtRate(w, clients, total, rate) {
  const { publishers, tally } = clients;
  let end;
  tally.reset(total, () => (end = snapshot(w)));
  for (const p of publishers) p.resetSequence();
  const lateness = new Float64Array(total);
  const stopped = () => clients.stopped || Boolean(w.crashed());
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
        if (p.inflight >= p.window) {
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
  await Promise.all([sending, awaitRemote(clients, () => sendingDone || stopped(), w.counters)]);
  const crash = w.crashed();
  if (crash) throw new Error(crash);
  return { sent, sendMs: Math.max(1, sendEnd - t0), lag: percentiles(lateness, sent), windowStalls, end: end ?? snapshot(w) };
}

/**
 * For run.js: runs the job with a progress line per contender (like the other jobs' steps)
 * and returns the results for bridge.json, with `meta`, the table rows and elapsed time.
 */
export async function runBridge(options, meta) {
  const started = Date.now();
  const results = await runBridgeJob(options, {
    report(kind, r) {
      console.log(`${`${kind.padEnd(15)} bridge`.padEnd(36)} ${summarize(r)}  [${(r.elapsedMs / 1000).toFixed(1)} s]`);
    },
  });
  return { meta: { ...meta, elapsedMs: Date.now() - started }, ...results };
}

function summarize(r) {
  const t = r.throughput;
  const s = r.steady;
  if (r.error && !t) return `FAILED: ${r.error}`;
  const parts = [];
  if (t?.error) parts.push(`FAILED: ${t.error}`);
  else if (t) {
    const fmt = (n) => Math.round(n).toLocaleString('en-US');
    parts.push(`${fmt(t.msgPerSec)} msg/s (rounds ${t.roundsMsgPerSec.map(fmt).join(' / ')}${t.noisyRounds ? `, ${t.noisyRounds} disturbed` : ''}), p99 ${t.latencyMs ? t.latencyMs.p99.toFixed(1) : '-'} ms, lost ${t.lost}`);
  }
  if (s?.error) parts.push(`steady FAILED: ${s.error}`);
  else if (s) parts.push(`steady p99 ${s.latencyMs ? s.latencyMs.p99.toFixed(2) : '-'} ms, lost ${s.lost}`);
  if (r.error && t) parts.push(`FAILED: ${r.error}`);
  return parts.join('; ');
}
