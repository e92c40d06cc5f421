import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import mqtt from 'mqtt';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';
import { freePort } from './durable.js';
import { requireCommand, startProcess, type Child, type Peer } from './peers.js';

/**
 * Real Mosquitto brokers for bridge tests: each runs from a config file in its own temp dir,
 * on a loopback port, and is stopped (or killed) by PID. Plus throwaway certificates made
 * with openssl, and password files made with mosquitto_passwd.
 */

/** What to tell a developer whose machine lacks Mosquitto (Debian/Ubuntu; mosquitto_passwd ships with it). */
export const MOSQUITTO_INSTALL_HINT = 'apt-get install -y mosquitto';

/** Debian installs the broker in /usr/sbin, which is not on every user's PATH. */
export const MOSQUITTO_BIN = existsSync('/usr/sbin/mosquitto') ? '/usr/sbin/mosquitto' : 'mosquitto';

/** The Mosquitto broker; `mosquitto.require(ctx)` skips (or, in CI, fails) a test without it. */
export const mosquittoPeer: Peer = requireCommand(MOSQUITTO_BIN, MOSQUITTO_INSTALL_HINT);
/** mosquitto_passwd, for brokers that refuse anonymous clients. */
export const mosquittoPasswdPeer: Peer = requireCommand('mosquitto_passwd', MOSQUITTO_INSTALL_HINT);
// Certificates moved to certs.ts; re-exported for the bridge tests.
export { makeCertificates, opensslPeer, type Certificates } from './certs.js';

/** How long Mosquitto may take to start listening, or to exit after SIGTERM. */
const START_WITHIN_MS = 5000;
const STOP_WITHIN_MS = 5000;
/** A Mosquitto child outlives no test by more than this (it is killed by PID when its test ends anyway). */
const DEADLINE_MS = 120_000;

export interface MosquittoOptions {
  /** Listener port on 127.0.0.1. Default: a free one (bound with port 0, read, released). */
  port?: number;
  /** Serve TLS with this server certificate and key (PEM files); `ca` goes to Mosquitto's cafile. */
  tls?: { cert: string; key: string; ca: string };
  /** Extra mosquitto.conf lines, e.g. `persistence true` or `allow_anonymous false`. */
  extra?: string;
}

/** A running Mosquitto; `restart()` starts a new process on the same port with the same config and folder. */
export interface Mosquitto {
  readonly port: number;
  /** mqtt://127.0.0.1:<port>, or mqtts:// with `tls`. */
  readonly url: string;
  /** The PID of the current process (a new one after restart). */
  readonly pid: number;
  /** The temp folder holding mosquitto.conf; `persistence_location` when persistence is on. */
  readonly dir: string;
  /** Mosquitto's log lines so far (current process). */
  lines(): string[];
  /** Resolves with the first log line (of the current process) matching `match`; rejects after `within` ms. */
  waitForLine(match: RegExp, options?: { within?: number }): Promise<string>;
  /** SIGTERM by PID and wait for the exit (Mosquitto saves its persistence file on the way). No-op when stopped. */
  stop(): Promise<void>;
  /** SIGKILL by PID and wait for the exit. No-op when stopped. */
  kill(): Promise<void>;
  /** Stops the current process if it runs, then starts a new one on the same port and folder. */
  restart(): Promise<void>;
}

/**
 * Starts Mosquitto on 127.0.0.1 and resolves once it accepts TCP connections (bounded by
 * {@link START_WITHIN_MS}). Stopped by PID and its folder removed when the test finishes.
 * Logs go to stderr (`log_type` error, warning, notice, information; add `log_type debug`
 * through `extra` to see PUBACKs). Call `mosquittoPeer.require(ctx)` first.
 */
export async function startMosquitto(options: MosquittoOptions = {}): Promise<Mosquitto> {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-mosquitto-'));
  const configFile = path.join(dir, 'mosquitto.conf');
  const writeConfig = (port: number) => {
    const lines = [
      `listener ${port} 127.0.0.1`,
      'allow_anonymous true',
      // stderr: Mosquitto buffers stdout when it is a pipe, so lines would arrive late.
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      'log_type notice',
      'log_type information',
      'connection_messages true',
      'log_timestamp false',
      // Only applies to saved state; harmless without `persistence true`.
      `persistence_location ${dir}${path.sep}`,
      // As root, Mosquitto would drop to user "mosquitto", who cannot read our temp dir.
      ...(process.getuid?.() === 0 ? ['user root'] : []),
      ...(options.tls ? [`cafile ${options.tls.ca}`, `certfile ${options.tls.cert}`, `keyfile ${options.tls.key}`] : []),
      options.extra ?? '',
      '',
    ];
    writeFileSync(configFile, lines.join('\n'));
  };

  let child: Child | undefined;
  let running = false;
  const launch = async () => {
    const c = startProcess(MOSQUITTO_BIN, ['-c', configFile], { deadlineMs: DEADLINE_MS });
    child = c;
    running = true;
    void c.exited.then(() => {
      if (child === c) running = false;
    });
    try {
      await c.waitForLine(/mosquitto version \S+ running/, { within: START_WITHIN_MS });
      await waitForAccept(port, START_WITHIN_MS);
    } catch (err) {
      c.kill();
      throw err;
    }
  };
  const end = async (signal: 'SIGTERM' | 'SIGKILL') => {
    const c = child;
    if (!c || !running) return;
    await c.stop(signal, { within: STOP_WITHIN_MS, name: 'mosquitto' });
  };

  const cleanup = async () => {
    child?.kill();
    await child?.exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    onTestFinished(cleanup);
  } catch {
    // outside a test (beforeAll): the process deadline still bounds it; the caller stops it
  }
  let port = options.port ?? 0;
  for (let attempt = 1; ; attempt++) {
    if (options.port === undefined) port = await freePort();
    writeConfig(port);
    try {
      await launch();
      break;
    } catch (err) {
      // A free port found by binding port 0 can be taken by another test file before Mosquitto binds it.
      const taken = options.port === undefined && attempt < 3 && /Address already in use/.test(String(err));
      if (!taken) {
        await cleanup();
        throw err;
      }
    }
  }

  return {
    port,
    url: `${options.tls ? 'mqtts' : 'mqtt'}://127.0.0.1:${port}`,
    get pid() {
      return child!.pid;
    },
    dir,
    lines: () => child!.lines(),
    waitForLine: (match, opts) => child!.waitForLine(match, opts),
    stop: () => end('SIGTERM'),
    kill: () => end('SIGKILL'),
    async restart() {
      await end('SIGTERM');
      await launch();
    },
  };
}

/** Resolves once a TCP connection to 127.0.0.1:`port` succeeds; rejects after `within` ms. */
function waitForAccept(port: number, within: number): Promise<void> {
  const deadline = Date.now() + within;
  return new Promise((resolve, reject) => {
    const attempt = () => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve();
      });
      socket.once('error', (err) => {
        socket.destroy();
        if (Date.now() >= deadline) reject(new Error(`nothing accepts connections on 127.0.0.1:${port} within ${within} ms: ${err.message}`));
        else setTimeout(attempt, 20);
      });
    };
    attempt();
  });
}

/** mosquitto_passwd hashes one password; it is done in well under a second. */
const PASSWD_TIMEOUT_MS = 10_000;

/**
 * Writes a Mosquitto password file with one user (`mosquitto_passwd -b -c`) into a fresh temp
 * dir (removed when the test finishes); use it with
 * `extra: 'allow_anonymous false\npassword_file <file>'`. Call `mosquittoPasswdPeer.require(ctx)` first.
 */
export function makePasswordFile(username: string, password: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-passwd-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'passwords');
  execFileSync('mosquitto_passwd', ['-b', '-c', file, username, password], { timeout: PASSWD_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
  return file;
}

/**
 * Resolves once the retained `$SYS/signalbox/bridges/<name>/state` at the signalbox at `url`
 * reads `state`; rejects, naming the states seen, after `within` ms. It subscribes again every
 * 250 ms: the bridge changes state exactly while tests subscribe, and a SUBSCRIBE the broker
 * handles between accepting a retained message and committing it gets neither the live copy
 * nor the retained one (a broker race, reported separately).
 */
export async function bridgeState(url: string, state: string, { name = 'cloud', within = 5000 } = {}): Promise<void> {
  const c = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4 });
  const topic = `$SYS/signalbox/bridges/${name}/state`;
  const seen: string[] = [];
  let again: NodeJS.Timeout | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`bridge ${name} not ${state} within ${within} ms; states seen: ${seen.join(', ') || 'none'}`)), within);
      c.on('message', (_topic, payload) => {
        seen.push(payload.toString());
        if (payload.toString() === state) resolve();
      });
      const subscribe = () => {
        c.subscribe(topic, { qos: 0 });
        again = setTimeout(subscribe, 250);
      };
      subscribe();
    });
  } finally {
    clearTimeout(timer);
    clearTimeout(again);
    c.end(true);
  }
}
