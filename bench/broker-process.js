// Starts a broker under test in its own Node process (bench/servers/child.js) and talks to
// it over IPC: its port, its memory/CPU on request, and a bounded shutdown.
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { withTimeout } from './stats.js';

const CHILD = fileURLToPath(new URL('./servers/child.js', import.meta.url));
const START_TIMEOUT_MS = 15_000;
const STATS_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 10_000;

/**
 * @typedef {object} BrokerStats
 * @property {number} rss bytes
 * @property {number} heapUsed bytes
 * @property {number} external bytes
 * @property {number} cpuUserUs CPU time in user mode since the child started, µs
 * @property {number} cpuSystemUs CPU time in the kernel since the child started, µs
 * @property {number} maxRss peak RSS since the child started, bytes
 * @property {object} [counters] the server's own counters (drops, rule errors, rows), when asked
 */

/**
 * @typedef {object} BrokerProcess
 * @property {string} kind 'aedes' | 'signalbox' | 'null' | 'aedes-rules' | 'signalbox-rules'
 * @property {number} pid
 * @property {number} port where it listens on 127.0.0.1
 * @property {object} [info] what the server reported at start (e.g. rules loaded, load time)
 * @property {(options?: { gc?: boolean, counters?: boolean }) => Promise<BrokerStats>} stats
 * @property {() => Promise<void>} stop closes the broker; kills the child if it does not exit in time
 * @property {() => string | undefined} crashed the child's crash message, if it died
 */

/**
 * Forks a child hosting broker `kind` and resolves once it listens.
 * Rejects with the child's own error when it cannot start (e.g. signalbox's "not yet").
 * @param {string} kind
 * @param {{ options?: object, startTimeoutMs?: number }} [how] `options` go to the server's
 *   start() (JSON); `startTimeoutMs` bounds the start (loading 10,000 rules takes a while)
 * @returns {Promise<BrokerProcess>}
 */
export async function startBroker(kind, { options, startTimeoutMs = START_TIMEOUT_MS } = {}) {
  // BENCH_CPU_PROF=<dir> writes a V8 CPU profile of every broker child there (open it in
  // Chrome DevTools); for finding why a broker is slow, not for the reported figures.
  const execArgv = ['--expose-gc'];
  // The name is literal (Node expands no placeholders in it): kind + start time keeps one file per child.
  if (process.env.BENCH_CPU_PROF) execArgv.push('--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=${kind}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
  const child = fork(CHILD, options ? [kind, JSON.stringify(options)] : [kind], {
    execArgv,
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let crashMessage;
  let nextId = 0;
  const waiting = new Map();
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const ready = new Promise((resolve, reject) => {
    child.on('message', (message) => {
      if (message.type === 'ready') resolve(message);
      else if (message.type === 'failed') reject(new Error(`${kind} broker failed to start: ${firstLine(message.message)}`));
      else if (message.type === 'crashed') crashMessage = message.message;
      else if (message.type === 'stats') {
        const pending = waiting.get(message.id);
        waiting.delete(message.id);
        if (message.error) pending?.reject(new Error(message.error));
        else pending?.resolve(message);
      }
    });
    child.once('error', reject);
    exited.then(({ code, signal }) => {
      const why = crashMessage ? `: ${firstLine(crashMessage)}` : '';
      const err = new Error(`${kind} broker process exited (code ${code}, signal ${signal})${why}`);
      reject(err);
      for (const pending of waiting.values()) pending.reject(err);
      waiting.clear();
    });
  });

  let port;
  let info;
  try {
    ({ port, info } = await withTimeout(ready, startTimeoutMs, `starting the ${kind} broker`));
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }

  return {
    kind,
    pid: child.pid,
    port,
    info,
    crashed: () => crashMessage,
    stats({ gc = false, counters = false } = {}) {
      const id = ++nextId;
      const reply = new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
      child.send({ type: 'stats', id, gc, counters });
      return withTimeout(reply, STATS_TIMEOUT_MS, `reading ${kind} broker stats`);
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      if (child.connected) child.send({ type: 'close' });
      try {
        await withTimeout(exited, STOP_TIMEOUT_MS, `closing the ${kind} broker`);
      } catch {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

function firstLine(text) {
  return String(text).split('\n')[0];
}
