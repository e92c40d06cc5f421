// The processes of the influx benchmark: a VictoriaMetrics (the target, not under test) and
// the signalbox child whose influx output writes to it. Both on free 127.0.0.1 ports, each
// stopped by its PID; VictoriaMetrics keeps its data in a temp folder removed at the end.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { forkEngineChild, freePort } from './bridge-procs.js';
import { delay, withTimeout } from './stats.js';

/** Debian's VictoriaMetrics; BENCH_VICTORIA names another binary. */
export const VICTORIA = process.env.BENCH_VICTORIA || '/usr/bin/victoria-metrics';
const SIGNALBOX_CHILD = fileURLToPath(new URL('./influx-child.js', import.meta.url));
const STOP_TIMEOUT_MS = 15_000;

/** Why VictoriaMetrics cannot be used here, or undefined when it can. */
export function victoriaMissing() {
  try {
    accessSync(VICTORIA, constants.X_OK);
    return undefined;
  } catch {
    return `${VICTORIA} not found (Debian/Ubuntu: apt-get install -y victoria-metrics; or set BENCH_VICTORIA)`;
  }
}

function signal(pid, sig) {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if (err.code !== 'ESRCH') throw err;
  }
}

function firstLine(text) {
  return String(text).split('\n')[0];
}

/**
 * Starts VictoriaMetrics on a free port with a temp data folder; resolves once /health says
 * OK. `count(match)` flushes its in-memory buffers (/internal/force_flush) and returns how
 * many samples the series matching `match` hold, at `at` (ms) looking back `windowS`.
 */
export async function startVictoriaBench({ startTimeoutMs = 15_000 } = {}) {
  const port = await freePort();
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-victoria-'));
  const args = [`-httpListenAddr=127.0.0.1:${port}`, `-storageDataPath=${dir}`, '-retentionPeriod=100y', '-search.disableCache', '-search.latencyOffset=0', '-loggerLevel=ERROR'];
  const child = spawn(VICTORIA, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  let exitInfo;
  let stopping = false;
  const exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve((exitInfo = { code, signal: sig }))));
  const base = `http://127.0.0.1:${port}`;
  const crashed = () => (exitInfo && !stopping ? `victoria-metrics exited (code ${exitInfo.code}, signal ${exitInfo.signal}): ${firstLine(stderr)}` : undefined);
  const stop = async () => {
    stopping = true;
    if (!exitInfo) {
      signal(child.pid, 'SIGTERM');
      try {
        await withTimeout(exited, STOP_TIMEOUT_MS, 'stopping victoria-metrics');
      } catch {
        signal(child.pid, 'SIGKILL');
        await exited;
      }
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await withTimeout(
      (async () => {
        for (;;) {
          const dead = crashed();
          if (dead) throw new Error(dead);
          const ok = await fetch(`${base}/health`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
          if (ok) return;
          await delay(25);
        }
      })(),
      startTimeoutMs,
      'starting victoria-metrics',
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    name: 'victoria-metrics',
    pid: child.pid,
    port,
    url: base,
    crashed,
    stop,
    async count(match, at, windowS) {
      await (await fetch(`${base}/internal/force_flush`, { signal: AbortSignal.timeout(10_000) })).arrayBuffer();
      const query = new URLSearchParams({ query: `sum(count_over_time(${match}[${windowS}s]))`, time: String(at / 1000) });
      const res = await fetch(`${base}/api/v1/query?${query}`, { signal: AbortSignal.timeout(30_000) });
      const body = await res.json();
      if (body.status !== 'success') throw new Error(`victoria-metrics query failed: ${JSON.stringify(body)}`);
      return Number(body.data.result[0]?.value[1] ?? 0);
    },
  };
}

/**
 * Forks bench/influx-child.js (the whole signalbox with one influx output to `vmPort`) and
 * resolves once it listens. BENCH_CPU_PROF=<dir> writes its V8 CPU profile there.
 */
export function startSignalboxInflux(vmPort, t0, { startTimeoutMs = 15_000 } = {}) {
  return forkEngineChild(SIGNALBOX_CHILD, { vmPort, t0 }, { kind: 'influx', what: 'an influx output', startTimeoutMs, stopTimeoutMs: STOP_TIMEOUT_MS });
}
