// The tls job: signalbox's QoS 1 throughput over `mqtts` against the same over plain `mqtt`,
// in the same run, each in a fresh broker child, under the broker benchmark's load (4
// publishers → 1 subscriber on raw clients, median of the rounds; see broker-throughput.js).
// The ratio says what TLS costs. Certificates are made with openssl in a temp folder (EC
// P-256; Node negotiates TLS 1.3 with AES-GCM).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startBroker } from './broker-process.js';
import { runThroughput } from './broker-throughput.js';
import { formatInt, formatMs } from './stats.js';

const OPENSSL_TIMEOUT_MS = 10_000;
const TRANSPORTS = ['mqtt', 'mqtts'];

/** A CA and a server certificate for 127.0.0.1 it signed, or `{ missing }` when openssl fails. */
function makeCertificates() {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-tls-'));
  const openssl = (args) => execFileSync('openssl', args, { cwd: dir, timeout: OPENSSL_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  try {
    writeFileSync(path.join(dir, 'server.ext'), 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n');
    openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=signalbox bench ca', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign']);
    openssl(['req', '-new', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1']);
    openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.crt', '-days', '2', '-extfile', 'server.ext']);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    return { missing: `openssl failed or is not installed (${err.code ?? err.message}); apt-get install -y openssl` };
  }
  return { dir, ca: path.join(dir, 'ca.crt'), cert: path.join(dir, 'server.crt'), key: path.join(dir, 'server.key') };
}

/** One transport's throughput in a fresh signalbox child. Never throws: a failure becomes `{ error }`. */
async function measure(transport, certs, options) {
  const listener = transport === 'mqtts' ? { type: 'mqtts', cert: certs.cert, key: certs.key } : { type: 'mqtt' };
  // The load generator verifies the server certificate like a real client.
  const tls = transport === 'mqtts' ? { ca: readFileSync(certs.ca) } : undefined;
  let broker;
  const t0 = Date.now();
  try {
    broker = await startBroker('signalbox', { options: { listener } });
    const result = await runThroughput(broker, { ...options, qos: 1, messages: options.qos1Messages, timeoutMs: options.phaseTimeoutMs, tls });
    const crash = broker.crashed();
    if (crash) throw new Error(`signalbox crashed: ${crash.split('\n')[0]}`);
    return { ...result, elapsedMs: Date.now() - t0 };
  } catch (err) {
    return { error: err.message, elapsedMs: Date.now() - t0 };
  } finally {
    await broker?.stop();
  }
}

/**
 * Runs the job (run.js calls it when BENCH_PHASES includes `tls`): returns
 * `{ meta, settings, transports: { mqtt, mqtts }, ratio }` or `{ skipped }`.
 */
export async function runTls(options, meta) {
  const results = { meta: { ...meta }, settings: { publishers: options.publishers, messages: options.qos1Messages, window: options.window, payloadBytes: options.payloadBytes, rounds: options.rounds }, transports: {} };
  if (!options.brokers.includes('signalbox')) {
    results.skipped = 'BENCH_BROKERS does not include signalbox';
    return results;
  }
  const certs = makeCertificates();
  if (certs.missing) {
    results.skipped = certs.missing;
    return results;
  }
  try {
    for (const transport of TRANSPORTS) {
      process.stdout.write(`${`signalbox ${transport}`.padEnd(15)} ${'tlsQos1'.padEnd(20)} `);
      const r = await measure(transport, certs, options);
      results.transports[transport] = r;
      console.log(`${r.error ? `FAILED: ${r.error}` : `${formatInt(r.msgPerSec)} msg/s (rounds ${r.roundsMsgPerSec.map(formatInt).join(' / ')}), p50 ${formatMs(r.latencyMs.p50)}, broker ${r.brokerCpuUsPerMsg.toFixed(1)} µs/msg`}  [${(r.elapsedMs / 1000).toFixed(1)} s]`);
    }
  } finally {
    rmSync(certs.dir, { recursive: true, force: true });
  }
  const { mqtt, mqtts } = results.transports;
  if (!mqtt.error && !mqtts.error) {
    results.ratio = {
      msgPerSec: mqtts.msgPerSec / mqtt.msgPerSec,
      brokerCpuUsPerMsg: mqtts.brokerCpuUsPerMsg / mqtt.brokerCpuUsPerMsg,
      latencyP50: mqtts.latencyMs.p50 / mqtt.latencyMs.p50,
    };
  }
  return results;
}

/** True when a transport failed or lost messages. */
export function tlsFailed(results) {
  return Object.values(results.transports).some((r) => r.error || r.lost > 0);
}

/** Prints the job's table (run.js). */
export function printTls(results) {
  if (results.skipped) {
    console.log(`\ntls job skipped: ${results.skipped}`);
    return;
  }
  const s = results.settings;
  console.log(`\ntls job: signalbox QoS 1 throughput, mqtts vs mqtt — ${s.publishers} publishers → 1 subscriber, window ${s.window}, ${s.payloadBytes} B payloads, ${formatInt(s.messages)} messages per round, node ${process.version}\n`);
  const { mqtt, mqtts } = results.transports;
  const cell = (r, f) => (r && !r.error ? f(r) : 'failed');
  const rows = [
    ['throughput (msg/s)', (r) => formatInt(r.msgPerSec), results.ratio?.msgPerSec],
    ['saturated latency p50', (r) => formatMs(r.latencyMs.p50), results.ratio?.latencyP50],
    ['saturated latency p99', (r) => formatMs(r.latencyMs.p99)],
    ['broker CPU per message', (r) => `${r.brokerCpuUsPerMsg.toFixed(1)} µs`, results.ratio?.brokerCpuUsPerMsg],
    ['lost', (r) => formatInt(r.lost)],
  ];
  const line = (a, b, c, d) => `| ${a.padEnd(24)} | ${b.padStart(12)} | ${c.padStart(12)} | ${d.padStart(13)} |`;
  console.log(line('', 'mqtt', 'mqtts', 'mqtts / mqtt'));
  console.log(`|${'-'.repeat(26)}|${'-'.repeat(13)}:|${'-'.repeat(13)}:|${'-'.repeat(14)}:|`);
  for (const [name, f, ratio] of rows) console.log(line(name, cell(mqtt, f), cell(mqtts, f), ratio === undefined ? '' : `${ratio.toFixed(2)}x`));
}
