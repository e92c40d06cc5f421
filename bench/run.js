// `npm run bench`: runs the broker benchmark and the rules job against signalbox and Aedes 1.2
// (+ JSONata), the bridge, history, influx, tls and auth jobs, each broker in its own child
// process, prints a table per job and writes bench/results/<job>.json and bench/results/latest.json.
// Settings come from BENCH_* environment variables (--help).
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startBroker } from './broker-process.js';
import { runIdle } from './broker-idle.js';
import { runSteadyRate } from './broker-latency.js';
import { runThroughput } from './broker-throughput.js';
import { OPTIONS, readOptions } from './options.js';
import { buildRows, formatNotes, formatTable } from './report.js';
import { planRules, rulesSettings } from './rules-job.js';
import { runBridge } from './bridge-job.js';
import { authFailed, printAuth, runAuth } from './auth-connect.js';
import { bridgeFailed, printBridge } from './bridge-report.js';
import { printTls, runTls, tlsFailed } from './tls-job.js';
import { influxFailed, printInflux, runInflux } from './influx-job.js';
import { historyFailed, runHistory } from './history-job.js';
import { buildRulesRows, formatRulesNotes, formatRulesTable } from './rules-report.js';
import { formatBytes, formatInt, formatMs } from './stats.js';

const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
/** Last resort if something escapes every phase timeout. */
const WHOLE_RUN_LIMIT_MS = 10 * 60_000;
/** Settings that change what is measured (see README, "Finding out why"). */
const DIAGNOSTIC_ENV = ['BENCH_SIGNALBOX_DIST', 'BENCH_SIGNALBOX_LIMITS', 'BENCH_CPU_PROF', 'BENCH_BRIDGE_SETTINGS', 'BENCH_BRIDGE_MOSQUITTO_CONF', 'BENCH_INFLUX_SETTINGS'];

/**
 * The list of steps: one (broker, phase) pair each, every one in a fresh broker process; the
 * broker benchmark's, then the rules job's (rules-job.js).
 */
function plan(options) {
  return [...planBroker(options), ...planRules(options)];
}

function planBroker(options) {
  const steps = [];
  const qosList = [0, 1];
  if (options.phases.includes('throughput')) {
    for (const qos of qosList) {
      const messages = qos === 0 ? options.qos0Messages : options.qos1Messages;
      const run = (broker) => runThroughput(broker, { ...options, qos, messages, timeoutMs: options.phaseTimeoutMs });
      if (options.ceiling) steps.push({ job: 'broker', kind: 'null', contender: 'null', phase: `throughputQos${qos}`, run });
      for (const kind of options.brokers) steps.push({ job: 'broker', kind, contender: kind, phase: `throughputQos${qos}`, run });
    }
  }
  if (options.phases.includes('latency')) {
    for (const qos of qosList) {
      const run = (broker) => runSteadyRate(broker, { ...options, qos, timeoutMs: options.phaseTimeoutMs });
      for (const kind of options.brokers) steps.push({ job: 'broker', kind, contender: kind, phase: `latencyQos${qos}`, run });
    }
  }
  if (options.phases.includes('idle')) {
    const run = (broker) => runIdle(broker, { ...options, timeoutMs: options.phaseTimeoutMs });
    for (const kind of options.brokers) steps.push({ job: 'broker', kind, contender: kind, phase: 'idle', run });
  }
  return steps;
}

/** Starts a fresh broker, runs one phase against it, stops it. Never throws: failures become `{ error }`. */
async function runStep(step) {
  let broker;
  try {
    broker = await startBroker(step.kind, { options: step.startOptions, startTimeoutMs: step.startTimeoutMs });
    const result = await step.run(broker);
    const crash = broker.crashed();
    if (crash) throw new Error(`${step.kind} broker crashed: ${crash.split('\n')[0]}`);
    if (broker.info) result.startInfo = broker.info;
    return result;
  } catch (err) {
    const crash = broker?.crashed();
    const message = crash ? `${err.message} (broker crashed: ${crash.split('\n')[0]})` : err.message;
    return { error: message };
  } finally {
    await broker?.stop();
  }
}

function summarize(result) {
  if (result.error) return `FAILED: ${result.error}`;
  if (result.msgPerSec !== undefined) {
    return `${formatInt(result.msgPerSec)} msg/s (rounds ${result.roundsMsgPerSec.map(formatInt).join(' / ')}${result.noisyRounds ? `, ${result.noisyRounds} disturbed` : ''}), p50 ${formatMs(result.latencyMs.p50)}, p99 ${formatMs(result.latencyMs.p99)}, ${formatInt(result.received)} received`;
  }
  if (result.rate !== undefined) {
    const acks = result.ackLatencyMs ? `; PUBACK p50 ${formatMs(result.ackLatencyMs.p50)}, p99 ${formatMs(result.ackLatencyMs.p99)}` : '';
    return `p50 ${formatMs(result.latencyMs.p50)}, p99 ${formatMs(result.latencyMs.p99)}, max ${formatMs(result.latencyMs.max)}, ${formatInt(result.received)} received${acks}`;
  }
  return `${formatBytes(result.bytesPerConnection)} per connection, ${formatInt(result.connectsPerSec)} connects/s`;
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return undefined;
  }
}

async function main() {
  if (process.argv.includes('--help')) {
    console.log('npm run bench  (or: node bench/run.js after npm run build)\n\nSettings (environment variables):');
    for (const [, name, fallback, what] of OPTIONS) console.log(`  ${name.padEnd(28)} ${what} (default ${fallback})`);
    return;
  }
  const options = readOptions(process.env);
  setTimeout(() => {
    console.error(`bench: still running after ${WHOLE_RUN_LIMIT_MS / 60_000} minutes; giving up`);
    process.exit(2);
  }, WHOLE_RUN_LIMIT_MS).unref();

  const started = Date.now();
  const meta = {
    startedAt: new Date(started).toISOString(),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    commit: gitCommit(),
  };
  const steps = plan(options);
  const jobs = new Set(steps.map((s) => s.job));
  const broker = { meta: { ...meta }, options, ceiling: {}, brokers: Object.fromEntries(options.brokers.map((b) => [b, {}])) };
  const rules = { meta: { ...meta }, options, settings: rulesSettings(options), contenders: Object.fromEntries(options.brokers.map((b) => [b, {}])) };
  const jobMs = { broker: 0, rules: 0 };

  for (const step of steps) {
    const label = `${step.kind.padEnd(15)} ${step.phase}`;
    process.stdout.write(`${label.padEnd(36)} `);
    const t0 = Date.now();
    const result = await runStep(step);
    result.elapsedMs = Date.now() - t0;
    jobMs[step.job] += result.elapsedMs;
    console.log(`${summarize(result)}  [${(result.elapsedMs / 1000).toFixed(1)} s]`);
    if (step.job === 'rules') rules.contenders[step.contender][step.phase] = result;
    else if (step.kind === 'null') broker.ceiling[step.phase] = result;
    else broker.brokers[step.kind][step.phase] = result;
  }

  // The bridge job (bridge-job.js) starts its own processes: Mosquitto brokers and a signalbox child.
  const bridge = options.phases.includes('bridge') ? await runBridge(options, meta) : undefined;
  // The tls job (tls-job.js): signalbox over mqtts vs mqtt, each in its own child.
  const tls = options.phases.includes('tls') ? await runTls(options, meta) : undefined;
  // The auth phase (auth-connect.js) starts its own signalbox children, with and without the credential cache.
  const auth = options.phases.includes('auth') && options.brokers.includes('signalbox') ? { meta: { ...meta }, ...(await runAuth(options)) } : undefined;
  // The influx job (influx-job.js) starts its own processes too: VictoriaMetrics and a signalbox child.
  const influx = options.phases.includes('influx') ? await runInflux(options, meta) : undefined;
  // The history job (history-job.js) starts its own signalbox child and prints as it goes.
  const history = options.phases.includes('history') ? await runHistory(options, meta) : undefined;

  const outputs = [];
  if (jobs.has('broker')) {
    const rows = buildRows(broker);
    broker.table = rows.map(({ format, ...row }) => row);
    broker.meta.elapsedMs = jobMs.broker;
    console.log(`\nsignalbox vs Aedes 1.2 — ${options.publishers} publishers → 1 subscriber, ${options.payloadBytes} B payloads, node ${process.version}, ${meta.cpus} CPUs\n`);
    console.log(formatTable(rows, broker));
    console.log('');
    for (const note of formatNotes(broker)) console.log(`- ${note}`);
    outputs.push(['broker', broker]);
  }
  if (jobs.has('rules')) {
    const rows = buildRulesRows(rules, options);
    rules.table = rows.map(({ format, ...row }) => row);
    rules.meta.elapsedMs = jobMs.rules;
    console.log(`\nrules job: signalbox (whole engine) vs Aedes 1.2 + JSONata — ${options.publishers} publishers on sensors/<i>/temp → transform → republish out/<id>/temp → 1 subscriber, node ${process.version}, ${meta.cpus} CPUs\n`);
    console.log(formatRulesTable(rows, rules));
    console.log('');
    for (const note of formatRulesNotes(rules, options)) console.log(`- ${note}`);
    outputs.push(['rules', rules]);
  }
  if (bridge) {
    printBridge(bridge);
    outputs.push(['bridge', bridge]);
  }
  if (tls) {
    printTls(tls);
    outputs.push(['tls', tls]);
  }

  if (auth) {
    printAuth(auth);
    outputs.push(['auth', auth]);
  }

  if (influx) {
    printInflux(influx);
    outputs.push(['influx', influx]);
  }

  if (history) outputs.push(['history', history]);

  if (outputs.length === 0) {
    console.log(`nothing to run: BENCH_PHASES=${options.phases.join(',')} with BENCH_BROKERS=${options.brokers.join(',')} selects no step`);
    return;
  }
  await mkdir(RESULTS_DIR, { recursive: true });
  const resultsFile = (name) => new URL(name, pathToFileURL(RESULTS_DIR));
  // A run with a diagnostic knob set measures something other than the real build with its
  // real settings: keep it out of <job>.json / latest.json.
  const diagnostic = DIAGNOSTIC_ENV.filter((name) => process.env[name]);
  const elapsed = `${((Date.now() - started) / 1000).toFixed(0)} s`;
  if (diagnostic.length) {
    const written = [];
    for (const [job, results] of outputs) {
      results.meta.diagnostic = Object.fromEntries(diagnostic.map((n) => [n, process.env[n]]));
      await writeFile(resultsFile(`${job}-diagnostic.json`), `${JSON.stringify(results, null, 2)}\n`);
      written.push(`bench/results/${job}-diagnostic.json`);
    }
    console.log(`\n${diagnostic.join(', ')} set: wrote ${written.join(' and ')} only (${elapsed})`);
  } else {
    // latest.json gathers every benchmark's newest results, each under its own key.
    let latest = {};
    try {
      latest = JSON.parse(await readFile(resultsFile('latest.json'), 'utf8'));
    } catch {
      latest = {};
    }
    const written = [];
    for (const [job, results] of outputs) {
      await writeFile(resultsFile(`${job}.json`), `${JSON.stringify(results, null, 2)}\n`);
      latest[job] = results;
      written.push(`bench/results/${job}.json`);
    }
    latest.updatedAt = new Date().toISOString();
    await writeFile(resultsFile('latest.json'), `${JSON.stringify(latest, null, 2)}\n`);
    console.log(`\nwrote ${written.join(', ')} and bench/results/latest.json (${elapsed})`);
  }

  const phaseSets = [...Object.values(broker.brokers), broker.ceiling, ...Object.values(rules.contenders)];
  if (phaseSets.some((phases) => Object.values(phases).some((r) => r.error))) process.exitCode = 1;
  if (bridge && bridgeFailed(bridge)) process.exitCode = 1;
  if (tls && tlsFailed(tls)) process.exitCode = 1;
  if (auth && authFailed(auth)) process.exitCode = 1;
  if (influx && influxFailed(influx)) process.exitCode = 1;
  if (history && historyFailed(history)) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`bench: ${err.message}`);
  process.exitCode = 1;
});
