import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';
import { freePort } from './durable.js';
import { requireCommand, startProcess, type Child, type Peer } from './peers.js';

/**
 * A real VictoriaMetrics (Debian's `victoria-metrics`) for the influx output's tests: it
 * speaks the InfluxDB v2 write API, and names a field's series `<measurement>_<field>` with
 * the tags as labels. Started on a loopback port with its own data folder, stopped by PID,
 * restarted on the same port and folder.
 *
 * Reading back: VictoriaMetrics keeps fresh samples in memory for a few seconds before they
 * are searchable; `/internal/force_flush` makes them searchable at once, so {@link
 * Victoria.series} calls it first. `-search.disableCache` keeps an earlier empty answer from
 * being served again, and `-search.latencyOffset=0` lets queries see samples just written.
 */

/** What to tell a developer whose machine lacks VictoriaMetrics. */
export const VICTORIA_INSTALL_HINT = 'apt-get install -y victoria-metrics';

export const VICTORIA_BIN = existsSync('/usr/bin/victoria-metrics') ? '/usr/bin/victoria-metrics' : 'victoria-metrics';

/** VictoriaMetrics; `victoriaPeer.require(ctx)` skips (or, in CI, fails) a test without it. */
export const victoriaPeer: Peer = requireCommand(VICTORIA_BIN, VICTORIA_INSTALL_HINT);

/** How long VictoriaMetrics may take to answer /health, or to exit after SIGTERM (it flushes to disk first). */
const START_WITHIN_MS = 15_000;
const STOP_WITHIN_MS = 15_000;
/** No VictoriaMetrics child outlives its test by more than this (it is killed by PID when the test ends anyway). */
const DEADLINE_MS = 300_000;

/** One series as `/api/v1/export` gives it. */
export interface Series {
  metric: Record<string, string> & { __name__: string };
  values: number[];
  timestamps: number[];
}

/** A running VictoriaMetrics. */
export interface Victoria {
  readonly port: number;
  /** http://127.0.0.1:<port>: the `url` of an influx output. */
  readonly url: string;
  /** PID of the current process (a new one after restart). */
  readonly pid: number;
  readonly dir: string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Every series matching the series selector `match` (e.g. `{__name__=~"temp_.*"}`), after a flush. */
  series(match: string): Promise<Series[]>;
  /** Samples of every series matching `match`, after a flush. */
  count(match: string): Promise<number>;
  /** SIGTERM by PID and wait for the exit. No-op when stopped. */
  stop(): Promise<void>;
  /** SIGKILL by PID and wait for the exit. No-op when stopped. */
  kill(): Promise<void>;
  /** Stops the process if it runs, then starts a new one on the same port and folder. */
  restart(): Promise<void>;
  /** Stops it and removes its folder. */
  close(): Promise<void>;
}

/**
 * Starts VictoriaMetrics on 127.0.0.1 and resolves once `/health` answers OK. Inside a test
 * it is killed and its folder removed when the test finishes; outside one (beforeAll) the
 * caller calls `close()`. Call `victoriaPeer.require(ctx)` first.
 */
export async function startVictoria(options: { port?: number } = {}): Promise<Victoria> {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-victoria-'));
  let port = options.port ?? 0;
  let child: Child | undefined;
  let running = false;

  const launch = async () => {
    const c = startProcess(
      VICTORIA_BIN,
      [
        `-httpListenAddr=127.0.0.1:${port}`,
        `-storageDataPath=${dir}`,
        '-retentionPeriod=100y',
        '-search.disableCache',
        '-search.latencyOffset=0',
        '-loggerLevel=WARN',
        // Tests write a handful of series; a small cache budget keeps several instances light.
        '-memory.allowedBytes=256MiB',
      ],
      { deadlineMs: DEADLINE_MS },
    );
    child = c;
    running = true;
    void c.exited.then(() => {
      if (child === c) running = false;
    });
    try {
      await waitForHealth(port, dir, c, START_WITHIN_MS);
    } catch (err) {
      c.kill();
      await c.exited;
      throw err;
    }
  };
  const end = async (signal: 'SIGTERM' | 'SIGKILL') => {
    const c = child;
    if (!c || !running) return;
    await c.stop(signal, { within: STOP_WITHIN_MS, name: 'victoria-metrics' });
  };
  const close = async () => {
    child?.kill();
    await child?.exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    onTestFinished(close);
  } catch {
    // outside a test (beforeAll): the process deadline still bounds it; the caller closes it
  }

  for (let attempt = 1; ; attempt++) {
    if (options.port === undefined) port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      // A port found free can be taken by another test file before VictoriaMetrics binds it.
      if (options.port !== undefined || attempt >= 3 || !/address already in use/i.test(String(err))) {
        await close();
        throw err;
      }
    }
  }

  const base = `http://127.0.0.1:${port}`;
  const series = async (match: string): Promise<Series[]> => {
    const flushed = await fetch(`${base}/internal/force_flush`, { signal: AbortSignal.timeout(10_000) });
    await flushed.arrayBuffer();
    const res = await fetch(`${base}/api/v1/export`, {
      method: 'POST',
      body: new URLSearchParams({ 'match[]': match }),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`export of ${match}: HTTP ${res.status}: ${text}`);
    return text
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => JSON.parse(line) as Series);
  };
  return {
    port,
    url: base,
    get pid() {
      return child!.pid;
    },
    dir,
    get running() {
      return running;
    },
    series,
    count: async (match) => (await series(match)).reduce((n, s) => n + s.values.length, 0),
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    async restart() {
      await end('SIGTERM');
      await launch();
    },
    close,
  };
}

/**
 * Resolves once GET /health answers OK and /metrics shows our data folder (so the answer is
 * from our process, not another test's server that took the port); rejects with the process
 * output when it exits first or `within` passes.
 */
async function waitForHealth(port: number, dir: string, c: Child, within: number): Promise<void> {
  const deadline = Date.now() + within;
  let exited = false;
  void c.exited.then(() => {
    exited = true;
  });
  for (;;) {
    if (exited) throw new Error(`victoria-metrics exited before it was healthy; output:\n${c.lines().join('\n')}`);
    try {
      const res = await fetch(`http://127.0.0.1:${port}/health`, { signal: AbortSignal.timeout(1000) });
      const body = await res.text();
      if (res.ok && body.trim() === 'OK') {
        const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1000) })).text();
        if (metrics.includes(`flag{name="storageDataPath", value="${dir}"`)) return;
        if (!exited) throw new Error(`another server answers on 127.0.0.1:${port}: address already in use`);
      }
    } catch (err) {
      if (err instanceof Error && err.message.startsWith('another server')) throw err;
      // not listening yet
    }
    if (Date.now() >= deadline) throw new Error(`victoria-metrics not healthy on 127.0.0.1:${port} within ${within} ms; output:\n${c.lines().join('\n')}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
