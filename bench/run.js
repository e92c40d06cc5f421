// `npm run bench`: runs the broker benchmarks against signalbox and Aedes 1.2, each broker in
// its own child process, prints a comparison table and writes bench/results/broker.json and
// bench/results/latest.json. Settings come from BENCH_* environment variables (--help).
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
import { formatBytes, formatInt, formatMs } from './stats.js';

const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
/** Last resort if something escapes every phase timeout. */
const WHOLE_RUN_LIMIT_MS = 10 * 60_000;
/** Settings that change what is measured (see README, "Finding out why"). */
const DIAGNOSTIC_ENV = ['BENCH_SIGNALBOX_DIST', 'BENCH_SIGNALBOX_LIMITS', 'BENCH_CPU_PROF'];

/** The list of steps: one (broker, phase) pair each, every one in a fresh broker process. */
function plan(options) {
  const steps = [];
  const qosList = [0, 1];
  if (options.phases.includes('throughput')) {
    for (const qos of qosList) {
      const messages = qos === 0 ? options.qos0Messages : options.qos1Messages;
      const run = (broker) => runThroughput(broker, { ...options, qos, messages, timeoutMs: options.phaseTimeoutMs });
      if (options.ceiling) steps.push({ kind: 'null', phase: `throughputQos${qos}`, run });
      for (const kind of options.brokers) steps.push({ kind, phase: `throughputQos${qos}`, run });
    }
  }
  if (options.phases.includes('latency')) {
    for (const qos of qosList) {
      const run = (broker) => runSteadyRate(broker, { ...options, qos, timeoutMs: options.phaseTimeoutMs });
      for (const kind of options.brokers) steps.push({ kind, phase: `latencyQos${qos}`, run });
    }
  }
  if (options.phases.includes('idle')) {
    const run = (broker) => runIdle(broker, { ...options, timeoutMs: options.phaseTimeoutMs });
    for (const kind of options.brokers) steps.push({ kind, phase: 'idle', run });
  }
  return steps;
}

/** Starts a fresh broker, runs one phase against it, stops it. Never throws: failures become `{ error }`. */
async function runStep(step) {
  let broker;
  try {
    broker = await startBroker(step.kind);
    const result = await step.run(broker);
    const crash = broker.crashed();
    if (crash) throw new Error(`${step.kind} broker crashed: ${crash.split('\n')[0]}`);
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
    return `p50 ${formatMs(result.latencyMs.p50)}, p99 ${formatMs(result.latencyMs.p99)}, max ${formatMs(result.latencyMs.max)}, ${formatInt(result.received)} received`;
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
    for (const [, name, fallback, what] of OPTIONS) console.log(`  ${name.padEnd(26)} ${what} (default ${fallback})`);
    return;
  }
  const options = readOptions(process.env);
  setTimeout(() => {
    console.error(`bench: still running after ${WHOLE_RUN_LIMIT_MS / 60_000} minutes; giving up`);
    process.exit(2);
  }, WHOLE_RUN_LIMIT_MS).unref();

  const started = Date.now();
  const results = {
    meta: {
      startedAt: new Date(started).toISOString(),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      commit: gitCommit(),
    },
    options,
    ceiling: {},
    brokers: Object.fromEntries(options.brokers.map((b) => [b, {}])),
  };

  for (const step of plan(options)) {
    const label = `${step.kind.padEnd(9)} ${step.phase}`;
    process.stdout.write(`${label.padEnd(30)} `);
    const t0 = Date.now();
    const result = await runStep(step);
    result.elapsedMs = Date.now() - t0;
    console.log(`${summarize(result)}  [${(result.elapsedMs / 1000).toFixed(1)} s]`);
    if (step.kind === 'null') results.ceiling[step.phase] = result;
    else results.brokers[step.kind][step.phase] = result;
  }

  const rows = buildRows(results);
  results.table = rows.map(({ format, ...row }) => row);
  results.meta.elapsedMs = Date.now() - started;

  console.log(`\nsignalbox vs Aedes 1.2 — ${options.publishers} publishers → 1 subscriber, ${options.payloadBytes} B payloads, node ${process.version}, ${results.meta.cpus} CPUs\n`);
  console.log(formatTable(rows, results));
  console.log('');
  for (const note of formatNotes(results)) console.log(`- ${note}`);

  await mkdir(RESULTS_DIR, { recursive: true });
  const resultsFile = (name) => new URL(name, pathToFileURL(RESULTS_DIR));
  // A run with a diagnostic knob set measures something other than the real build with
  // default limits: keep it out of broker.json / latest.json.
  const diagnostic = DIAGNOSTIC_ENV.filter((name) => process.env[name]);
  results.meta.diagnostic = diagnostic.length ? Object.fromEntries(diagnostic.map((n) => [n, process.env[n]])) : undefined;
  if (diagnostic.length) {
    await writeFile(resultsFile('broker-diagnostic.json'), `${JSON.stringify(results, null, 2)}\n`);
    console.log(`\n${diagnostic.join(', ')} set: wrote bench/results/broker-diagnostic.json only (${(results.meta.elapsedMs / 1000).toFixed(0)} s)`);
  } else {
    await writeFile(resultsFile('broker.json'), `${JSON.stringify(results, null, 2)}\n`);
    // latest.json gathers every benchmark's newest results under its own key.
    let latest = {};
    try {
      latest = JSON.parse(await readFile(resultsFile('latest.json'), 'utf8'));
    } catch {
      latest = {};
    }
    latest.broker = results;
    latest.updatedAt = new Date().toISOString();
    await writeFile(resultsFile('latest.json'), `${JSON.stringify(latest, null, 2)}\n`);
    console.log(`\nwrote bench/results/broker.json and bench/results/latest.json (${(results.meta.elapsedMs / 1000).toFixed(0)} s)`);
  }

  const failed = [...Object.values(results.brokers), results.ceiling].some((phases) => Object.values(phases).some((r) => r.error));
  if (failed) process.exitCode = 1;
}

main().catch((err) => {
  console.error(`bench: ${err.message}`);
  process.exitCode = 1;
});
