// The processes of the bridge benchmark: Mosquitto brokers (the remote sink, and the
// contender whose own `connection` bridge forwards to it) and the signalbox child whose
// bridge output does the same; plus what /proc says about any of them (RSS, CPU time).
// Everything listens on 127.0.0.1 only, on free ports, and is stopped by its PID.
import { fork, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { delay, withTimeout } from './stats.js';

/** Debian's Mosquitto; BENCH_MOSQUITTO names another binary. */
export const MOSQUITTO = process.env.BENCH_MOSQUITTO || '/usr/sbin/mosquitto';
const SIGNALBOX_CHILD = fileURLToPath(new URL('./servers/signalbox-bridge.js', import.meta.url));
const STOP_TIMEOUT_MS = 10_000;
const IPC_TIMEOUT_MS = 10_000;
/** Linux clock ticks per second (utime / stime in /proc/<pid>/stat); 100 on every common kernel config. */
const CLK_TCK = 100;

/** Why Mosquitto cannot be used here, or undefined when it can. */
export function mosquittoMissing() {
  try {
    accessSync(MOSQUITTO, constants.X_OK);
    return undefined;
  } catch {
    return `${MOSQUITTO} not found (Debian/Ubuntu: apt-get install -y mosquitto; or set BENCH_MOSQUITTO)`;
  }
}

/** "2.0.11", from `mosquitto -h` (which exits 3, so read whatever it printed). */
export async function mosquittoVersion() {
  const child = spawn(MOSQUITTO, ['-h'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (c) => (out += c));
  child.stderr.on('data', (c) => (out += c));
  await withTimeout(new Promise((resolve) => child.once('close', resolve)), 5_000, 'mosquitto -h').catch(() => child.kill('SIGKILL'));
  return out.match(/mosquitto version (\S+)/)?.[1];
}

/** A port on 127.0.0.1 nobody listens on right now (the OS picks it; a race with other processes is possible but rare). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port; polls every 20 ms. */
async function waitListening(port, isDead) {
  for (;;) {
    const dead = isDead();
    if (dead) throw new Error(dead);
    const ok = await new Promise((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await delay(20);
  }
}

/**
 * @typedef {object} BenchProcess
 * @property {string} name
 * @property {number} pid
 * @property {number} port where its MQTT listener is, on 127.0.0.1
 * @property {() => string | undefined} crashed why it died, if it did before stop()
 * @property {() => Promise<void>} stop SIGTERM by PID (signalbox: an IPC close first), SIGKILL after a bounded wait
 */

/**
 * Starts `mosquitto -c <temp config>` listening on a free 127.0.0.1 port. `extra` lines go
 * after the listener (limits, a bridge `connection`). Resolves once the port accepts.
 * @param {string} name for messages
 * @param {string[]} extra config lines
 * @param {{ startTimeoutMs?: number }} [how]
 * @returns {Promise<BenchProcess & { config: string }>}
 */
export async function startMosquitto(name, extra, { startTimeoutMs = 10_000 } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-mosquitto-'));
  const config = [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'log_dest stderr', 'log_type error', 'log_type warning', ...extra, ''].join('\n');
  const file = path.join(dir, 'mosquitto.conf');
  writeFileSync(file, config);
  const child = spawn(MOSQUITTO, ['-c', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  let stopping = false;
  let exitedWith;
  const exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      exitedWith = { code, signal };
      resolve();
    }),
  );
  child.once('error', (err) => {
    exitedWith ??= { error: err.message };
  });
  const crashed = () => {
    if (!exitedWith || stopping) return undefined;
    const last = stderr.trim().split('\n').slice(-3).join(' | ');
    return `mosquitto (${name}) exited (${exitedWith.error ?? `code ${exitedWith.code}, signal ${exitedWith.signal}`})${last ? `: ${last}` : ''}`;
  };
  const stop = async () => {
    stopping = true;
    if (!exitedWith && child.pid !== undefined) {
      signal(child.pid, 'SIGTERM');
      try {
        await withTimeout(exited, STOP_TIMEOUT_MS, `stopping mosquitto (${name})`);
      } catch {
        signal(child.pid, 'SIGKILL');
        await exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await withTimeout(waitListening(port, crashed), startTimeoutMs, `starting mosquitto (${name}) on port ${port}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { name, pid: child.pid, port, config, crashed, stop, stderr: () => stderr };
}

/**
 * Forks bench/servers/signalbox-bridge.js: the whole signalbox (loadProject + createEngine
 * from dist/) with a bridge output to 127.0.0.1:remotePort. Resolves once it listens.
 * BENCH_CPU_PROF=<dir> writes its V8 CPU profile there.
 * @returns {Promise<BenchProcess & { counters: () => Promise<object>, info: object }>}
 */
export function startSignalboxBridge(remotePort, { startTimeoutMs = 15_000 } = {}) {
  return forkEngineChild(SIGNALBOX_CHILD, { remotePort }, { kind: 'bridge', what: 'a bridge output', startTimeoutMs, stopTimeoutMs: STOP_TIMEOUT_MS });
}

/**
 * Forks a whole-signalbox bench child that speaks servers/engine-child.js's protocol, with
 * `options` as its argument, and resolves once it listens. `kind` names it in messages and
 * in its CPU profile's file name (BENCH_CPU_PROF=<dir>).
 * @returns {Promise<BenchProcess & { counters: () => Promise<object>, info: object }>}
 */
export async function forkEngineChild(file, options, { kind, what, startTimeoutMs, stopTimeoutMs }) {
  const execArgv = [];
  if (process.env.BENCH_CPU_PROF) execArgv.push('--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, `--cpu-prof-name=signalbox-${kind}-${new Date().toISOString().replace(/[:.]/g, '-')}.cpuprofile`);
  const child = fork(file, [JSON.stringify(options)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  let crashMessage;
  let stopping = false;
  let nextId = 0;
  const waiting = new Map();
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const why = () => (crashMessage ? `: ${firstLine(crashMessage)}` : '');
  let exitInfo;
  exited.then((info) => {
    exitInfo = info;
    const err = new Error(`signalbox ${kind} child exited (code ${info.code}, signal ${info.signal})${why()}`);
    for (const w of waiting.values()) w.reject(err);
    waiting.clear();
  });
  const ready = new Promise((resolve, reject) => {
    child.on('message', (m) => {
      if (m.type === 'ready') resolve(m);
      else if (m.type === 'failed') reject(new Error(`signalbox (${kind}) failed to start: ${firstLine(m.message)}`));
      else if (m.type === 'crashed') crashMessage = m.message;
      else if (m.type === 'counters') {
        const w = waiting.get(m.id);
        waiting.delete(m.id);
        if (m.error) w?.reject(new Error(m.error));
        else w?.resolve(m.counters);
      }
    });
    child.once('error', reject);
    exited.then(({ code, signal }) => reject(new Error(`signalbox ${kind} child exited during start (code ${code}, signal ${signal})${why()}`)));
  });
  let started;
  try {
    started = await withTimeout(ready, startTimeoutMs, `starting signalbox with ${what}`);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    name: 'signalbox',
    pid: child.pid,
    port: started.port,
    info: started.info,
    crashed: () => (exitInfo && !stopping ? `signalbox ${kind} child exited (code ${exitInfo.code}, signal ${exitInfo.signal})${why()}` : undefined),
    counters() {
      const id = ++nextId;
      const reply = new Promise((resolve, reject) => waiting.set(id, { resolve, reject }));
      if (child.connected) child.send({ type: 'counters', id });
      return withTimeout(reply, IPC_TIMEOUT_MS, 'reading signalbox counters');
    },
    async stop() {
      stopping = true;
      if (exitInfo) return;
      if (child.connected) child.send({ type: 'close' });
      try {
        await withTimeout(exited, stopTimeoutMs, `closing signalbox (${kind})`);
      } catch {
        signal(child.pid, 'SIGKILL');
        await exited;
      }
    },
  };
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if (err.code !== 'ESRCH') throw err;
  }
}

/**
 * RSS, peak RSS and CPU time of any process, from /proc: the same reading for a Node child
 * and for Mosquitto.
 * @returns {{ rss: number, peakRss: number, cpuUs: number }} bytes, bytes, µs (user + system)
 */
export function procStats(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field) => Number(status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'))?.[1] ?? NaN) * 1024;
  // /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, so split after the last ')'.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rss: kib('VmRSS'), peakRss: kib('VmHWM'), cpuUs: (ticks * 1_000_000) / CLK_TCK };
}

function firstLine(text) {
  return String(text).split('\n')[0];
}
