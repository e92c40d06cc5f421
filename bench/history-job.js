// The history job: how many history rows per second signalbox stores through its rules.
//
//   N publishers ──QoS 1──▶ signalbox ──rule `bench-history` (history: {})──▶ SQLite history
//   sensors/<i>/temp         (history-server.js, its own child process)
//
// QoS 1 publishers keep at most `historyWindow` messages unacknowledged each. signalbox sends
// a PUBACK only once the message's history row is committed, so the last PUBACK of a round
// is the moment its last row is on disk: rows/s = rows of the round / (last PUBACK − start).
// Each message causes exactly one row (no transform returns many rows), so rows/s is also
// messages/s through the rule into SQLite.
import { fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { connectClient, Publisher } from './load.js';
import { inputTopic, jsonPayload } from './rules-spec.js';
import { formatBytes, formatInt, machineBusyMs, withTimeout } from './stats.js';

const SERVER = fileURLToPath(new URL('./history-server.js', import.meta.url));
const START_TIMEOUT_MS = 15_000;
const STATS_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;
/** A round in which other processes used more than this share of a core is repeated. */
const NOISY_CPU_SHARE = 0.2;
/** The target: rows stored per second. */
export const HISTORY_TARGET_ROWS_PER_SEC = 100_000;

/**
 * Variants, each in a fresh child: the bare rule; the same with the HTTP API's last-value cache
 * fed by every commit (its cost on the history path); the rule with the rules job's transform.
 */
const VARIANTS = { plain: { transform: false }, 'last-values': { transform: false, lastValues: true }, transform: { transform: true } };

/** Forks the signalbox child and resolves once it listens; `stats()` and `stop()` talk to it over IPC. */
async function startServer(options) {
  const execArgv = [];
  if (process.env.BENCH_CPU_PROF) execArgv.push('--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=signalbox-history-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
  const child = fork(SERVER, [JSON.stringify(options)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const waiting = new Map();
  let nextId = 0;
  let crash;
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const ready = new Promise((resolve, reject) => {
    child.on('message', (m) => {
      if (m.type === 'ready') resolve(m);
      else if (m.type === 'failed') reject(new Error(`signalbox failed to start: ${String(m.message).split('\n')[0]}`));
      else if (m.type === 'crashed') crash = m.message;
      else if (m.type === 'stats') {
        waiting.get(m.id)?.(m);
        waiting.delete(m.id);
      }
    });
    exited.then(({ code, signal }) => reject(new Error(`signalbox exited (code ${code}, signal ${signal})${crash ? `: ${crash.split('\n')[0]}` : ''}`)));
  });
  let started;
  try {
    started = await withTimeout(ready, START_TIMEOUT_MS, 'starting signalbox');
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    port: started.port,
    info: started.info,
    crashed: () => crash,
    stats(count = false) {
      const id = ++nextId;
      const reply = new Promise((resolve) => waiting.set(id, resolve));
      child.send({ type: 'stats', id, count });
      return withTimeout(reply, STATS_TIMEOUT_MS, 'reading signalbox stats');
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) child.send({ type: 'close' });
      try {
        await withTimeout(exited, STOP_TIMEOUT_MS, 'closing signalbox');
      } catch {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** Every publisher sends its share of `messages` at QoS 1 and waits for all its PUBACKs. */
function floodAll(publishers, messages, stopped) {
  const each = Math.floor(messages / publishers.length);
  return Promise.all(publishers.map((p, i) => p.flood(i === 0 ? messages - each * (publishers.length - 1) : each, { stopped })));
}

/** One measured round: rows/s, and the CPU signalbox and the rest of the machine used. */
async function measureRound(server, publishers, messages, stopped) {
  const before = await server.stats();
  const busy0 = machineBusyMs();
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  await floodAll(publishers, messages, stopped);
  const ms = performance.now() - t0;
  const after = await server.stats();
  const self = process.cpuUsage(self0);
  const serverCpuMs = (after.cpuUs - before.cpuUs) / 1000;
  const otherMs = machineBusyMs() - busy0 - serverCpuMs - (self.user + self.system) / 1000;
  return {
    rows: messages,
    ms,
    rowsPerSec: (messages / ms) * 1000,
    serverCpuUsPerRow: (serverCpuMs * 1000) / messages,
    serverCpuShare: serverCpuMs / ms,
    otherCpuShare: Math.max(0, otherMs / ms),
    commits: (after.counters.commits ?? 0) - (before.counters.commits ?? 0),
  };
}

/** Runs one variant in a fresh child. Never throws: a failure becomes `{ error }`. */
async function runVariant(name, options) {
  let server;
  let clients = [];
  let stopped = false;
  const state = { stage: 'starting' };
  try {
    server = await startServer(VARIANTS[name]);
    const work = (async () => {
      state.stage = 'connecting';
      for (let i = 0; i < options.publishers; i++) clients.push(await connectClient(server.port, { clientId: `bench-history-${i}` }));
      const publishers = clients.map((c, i) => new Publisher(c, { index: i, topic: inputTopic(i), qos: 1, payloadBytes: 0, window: options.historyWindow, format: jsonPayload }));
      state.stage = 'warm-up';
      await floodAll(publishers, options.historyWarmupMessages, () => stopped);
      const wanted = Math.max(1, options.rounds);
      const rounds = [];
      let quiet = 0;
      for (let r = 1; quiet < wanted && r <= wanted * 2; r++) {
        state.stage = `measured round ${r}`;
        const round = await measureRound(server, publishers, options.historyMessages, () => stopped);
        round.noisy = round.otherCpuShare > NOISY_CPU_SHARE;
        if (!round.noisy) quiet++;
        rounds.push(round);
      }
      const final = await server.stats(true);
      const sent = options.historyWarmupMessages + options.historyMessages * rounds.length;
      const candidates = quiet > 0 ? rounds.filter((r) => !r.noisy) : rounds;
      const median = [...candidates].sort((a, b) => a.rowsPerSec - b.rowsPerSec)[Math.floor((candidates.length - 1) / 2)];
      return {
        variant: name,
        ...median,
        roundsRowsPerSec: rounds.map((r) => r.rowsPerSec),
        noisyRounds: rounds.filter((r) => r.noisy).length,
        sent,
        stored: final.counters.historyRows,
        missing: sent - final.counters.historyRows,
        deadLetters: final.counters.deadLetters,
        ruleErrors: final.counters.rules.ruleErrors,
        peakRss: final.maxRss,
        rss: final.rss,
        info: server.info,
      };
    })();
    return await withTimeout(work, options.phaseTimeoutMs, `history ${name}`, () => state.stage);
  } catch (err) {
    const crash = server?.crashed();
    return { variant: name, error: crash ? `${err.message} (signalbox crashed: ${crash.split('\n')[0]})` : err.message };
  } finally {
    stopped = true;
    for (const c of clients) c.socket.destroy();
    clients = [];
    await server?.stop();
  }
}

/** One line per variant, for the progress output. */
function summarize(r) {
  if (r.error) return `FAILED: ${r.error}`;
  return `${formatInt(r.rowsPerSec)} rows/s (rounds ${r.roundsRowsPerSec.map(formatInt).join(' / ')}${r.noisyRounds ? `, ${r.noisyRounds} disturbed` : ''}), ${r.serverCpuUsPerRow.toFixed(1)} µs CPU per row, peak RSS ${formatBytes(r.peakRss)}, ${formatInt(r.stored)} of ${formatInt(r.sent)} rows stored`;
}

/**
 * Runs the history job: each variant in a fresh child, one after the other. Returns the
 * results for `history.json`; prints progress lines and the summary as it goes.
 */
export async function runHistory(options, meta) {
  const results = {
    meta: { ...meta },
    settings: { publishers: options.publishers, window: options.historyWindow, messages: options.historyMessages, warmupMessages: options.historyWarmupMessages, rounds: options.rounds, variants: VARIANTS },
    target: HISTORY_TARGET_ROWS_PER_SEC,
    variants: {},
  };
  const t0 = Date.now();
  for (const name of Object.keys(VARIANTS)) {
    process.stdout.write(`${'signalbox'.padEnd(15)} ${`history-${name}`.padEnd(20)} `);
    const started = Date.now();
    const r = await runVariant(name, options);
    r.elapsedMs = Date.now() - started;
    console.log(`${summarize(r)}  [${(r.elapsedMs / 1000).toFixed(1)} s]`);
    results.variants[name] = r;
  }
  results.meta.elapsedMs = Date.now() - t0;
  printHistory(results);
  return results;
}

/** The summary table and its notes. */
export function printHistory(results) {
  console.log(`\nhistory job: ${results.settings.publishers} QoS 1 publishers (window ${results.settings.window} each) → rule with history: {} → SQLite (durability normal), node ${process.version}\n`);
  console.log(`${'variant'.padEnd(12)} ${'rows/s'.padStart(10)} ${'CPU/row'.padStart(10)} ${'rows/commit'.padStart(12)} ${'peak RSS'.padStart(10)}  target`);
  for (const r of Object.values(results.variants)) {
    if (r.error) {
      console.log(`${r.variant.padEnd(12)} FAILED: ${r.error}`);
      continue;
    }
    const perCommit = r.commits > 0 ? formatInt(r.rows / r.commits) : '-';
    const met = r.rowsPerSec >= results.target ? 'met' : 'MISSED';
    console.log(`${r.variant.padEnd(12)} ${formatInt(r.rowsPerSec).padStart(10)} ${`${r.serverCpuUsPerRow.toFixed(1)} µs`.padStart(10)} ${perCommit.padStart(12)} ${formatBytes(r.peakRss).padStart(10)}  ≥ ${formatInt(results.target)} rows/s  ${met}`);
  }
  console.log('');
  for (const r of Object.values(results.variants)) {
    if (r.error) continue;
    if (r.missing !== 0) console.log(`- !!! ${r.variant}: ${formatInt(r.missing)} acknowledged rows NOT in history !!!`);
    if (r.deadLetters || r.ruleErrors) console.log(`- ${r.variant}: ${r.ruleErrors} rule errors, ${r.deadLetters} dead letters`);
    console.log(`- ${r.variant}: signalbox at ${Math.round(r.serverCpuShare * 100)}% of a core; other processes used ${Math.round(r.otherCpuShare * 100)}% of a core${r.otherCpuShare > NOISY_CPU_SHARE ? ' (DISTURBED: rerun before believing the figure)' : ''}`);
  }
}

/** True when a variant failed or lost an acknowledged row. */
export function historyFailed(results) {
  return Object.values(results.variants).some((r) => r.error || r.missing !== 0);
}
