import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import mqtt, { type IClientOptions, type IConnackPacket, type IPublishPacket, type MqttClient } from 'mqtt';
import { pino } from 'pino';
import { onTestFinished } from 'vitest';
import type { Clock } from '../../src/clock.js';
import { loadProject } from '../../src/config/load.js';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { writeProject, type ProjectFiles } from './engine.js';
import { startProcess, type Child, type ExitResult } from './peers.js';
import type { RawClient } from './raw-client.js';

/**
 * Helpers for durability tests: a project folder that outlives its signalbox, so the same
 * database can be opened by the next one (in this process, or as the built CLI in a child
 * process), on a fixed loopback port the clients can come back to.
 */

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The built CLI (test/global-setup.ts builds dist/ once per test run). */
export const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

/** A free TCP port on 127.0.0.1: bound with port 0, read, released. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** A project on disk whose folder (and database) survives restarts; removed when the test finishes. */
export interface DurableProject {
  dir: string;
  configFile: string;
  /** The SQLite database (`storage.path`), `<dir>/data/signalbox.db`. */
  dbPath: string;
  port: number;
  url: string;
}

export interface DurableProjectOptions {
  /** Rule files by name → YAML. */
  rules?: ProjectFiles['rules'];
  /** YAML lines added under `broker:` (indented two spaces), e.g. `limits: { maxQueued: 20000 }`. */
  broker?: string;
  /** Extra top-level YAML appended to signalbox.yaml. */
  extra?: string;
  /** The listener port; default a free one. */
  port?: number;
}

/** Writes signalbox.yaml (listener on 127.0.0.1:`port`, storage under data/) and the rules into a temp dir. */
export async function durableProject(options: DurableProjectOptions = {}): Promise<DurableProject> {
  const port = options.port ?? (await freePort());
  const config = [
    'broker:',
    `  listeners: [{ type: mqtt, host: 127.0.0.1, port: ${port} }]`,
    ...(options.broker ? [`  ${options.broker}`] : []),
    'storage: { path: data/signalbox.db }',
    options.extra ?? '',
    '',
  ].join('\n');
  const { dir, configFile, cleanup } = writeProject({ config, rules: options.rules ?? {} });
  onTestFinished(cleanup);
  return { dir, configFile, dbPath: path.join(dir, 'data', 'signalbox.db'), port, url: `mqtt://127.0.0.1:${port}` };
}

/** A signalbox running in this process on a {@link DurableProject}. */
export interface InProcessSignalbox {
  engine: Engine;
  /** Closes the engine (graceful, like SIGTERM); the folder and database stay. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts a whole signalbox in this process on `project` (its config and database as they are
 * on disk). Closed when the test finishes if the test did not close it.
 */
export async function startInProcess(project: DurableProject, deps: { log?: Logger; clock?: Clock } = {}): Promise<InProcessSignalbox> {
  const registry = createOutputRegistry();
  const loaded = loadProject(project.configFile, { explicit: true, registry, env: process.env });
  const engine = createEngine(loaded.config, loaded.compiled.rules, { log: deps.log ?? silentLogger(), registry, clock: deps.clock });
  let closed: Promise<void> | undefined;
  const close = () => (closed ??= engine.close());
  onTestFinished(close);
  try {
    await engine.broker.listen();
  } catch (err) {
    await close();
    throw err;
  }
  return { engine, close };
}

/** The built CLI running `signalbox run` on a project, as a child process. */
export interface CliSignalbox {
  child: Child;
  /** Sends `signal` to the process (by PID) and resolves with how it ended; rejects if it outlives `within` ms. */
  stop(signal: 'SIGTERM' | 'SIGKILL', options?: { within?: number }): Promise<ExitResult>;
}

/** Options of {@link launchCli} and {@link startCli}. */
export interface CliOptions {
  /** The child is killed (by PID) after this many ms at the latest. Default 30000. */
  deadlineMs?: number;
  /** How long to wait for it to listen (or exit). Default 10000. */
  within?: number;
  /**
   * Run as an unprivileged user (uid/gid 65534 through `setpriv`) when the tests run as root,
   * so file permissions apply (root writes read-only files). As a normal user it runs as is.
   */
  unprivileged?: boolean;
}

/** The command line for the built CLI with `args`; see {@link CliOptions.unprivileged}. */
export function cliCommand(args: string[], { unprivileged = false }: { unprivileged?: boolean } = {}): [string, string[]] {
  const node = [CLI, ...args];
  if (!unprivileged || process.getuid?.() !== 0) return [process.execPath, node];
  return ['setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...node]];
}

/**
 * Starts `node dist/cli/main.js run --config <dir>/signalbox.yaml --log-format json` and
 * resolves once it logs that it is listening (`cli`), or once it exits without doing so
 * (`exit`: a refusal to start). Killed by PID when the test ends at the latest.
 */
export async function launchCli(project: DurableProject, options: CliOptions = {}): Promise<{ cli: CliSignalbox; exit?: undefined } | { cli?: undefined; exit: ExitResult }> {
  const [command, args] = cliCommand(['run', '--config', project.configFile, '--log-format', 'json'], options);
  const child = startProcess(command, args, { deadlineMs: options.deadlineMs ?? 30_000 });
  let exit: ExitResult | undefined;
  // Registered before waitForLine's own handler, so `exit` is set when that one rejects.
  void child.exited.then((result) => (exit = result));
  try {
    await child.waitForLine(/"msg":"listening"/, { within: options.within ?? 10_000 });
  } catch (err) {
    if (exit) return { exit };
    throw err;
  }
  return { cli: cliHandle(child) };
}

/** Like {@link launchCli}, but a CLI that exits instead of listening is an error quoting its output. */
export async function startCli(project: DurableProject, options: CliOptions = {}): Promise<CliSignalbox> {
  const launched = await launchCli(project, options);
  if (launched.exit) {
    const { code, signal, stdout, stderr } = launched.exit;
    throw new Error(`signalbox exited (${code ?? signal}) instead of listening\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`);
  }
  return launched.cli;
}

function cliHandle(child: Child): CliSignalbox {
  return {
    child,
    stop(signal, { within = 10_000 } = {}) {
      return child.stop(signal, { within, name: 'signalbox' });
    },
  };
}

/** A logger whose JSON lines are kept (parsed) for assertions. */
export function recordingLogger(level = 'info'): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { log, lines };
}

/**
 * Resolves once `check()` returns a value other than undefined/false; rejects with `what`
 * after `within` ms. For state with no event to wait on (a row another process writes).
 */
export async function eventually<T>(check: () => T | undefined | false, what: string, { within = 5000, everyMs = 20 } = {}): Promise<T> {
  const deadline = Date.now() + within;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() >= deadline) throw new Error(`${what}: not within ${within} ms`);
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

/**
 * Runs `fn` on the project's database through a separate connection (read-only unless
 * `write`), then closes it. Works while signalbox runs (WAL readers) and after it was killed.
 */
export function withDb<T>(dbPath: string, fn: (db: BetterSqlite3.Database) => T, { write = false } = {}): T {
  const db = new BetterSqlite3(dbPath, { readonly: !write, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    return fn(db);
  } finally {
    db.close();
  }
}

/** What a file looks like, to prove it was not touched: size, mtime and SHA-256. */
export function fingerprint(file: string): { size: number; mtimeMs: number; sha256: string; sidecars: string[] } {
  const st = statSync(file);
  return {
    size: st.size,
    mtimeMs: st.mtimeMs,
    sha256: createHash('sha256').update(readFileSync(file)).digest('hex'),
    sidecars: ['-wal', '-shm', '-journal'].filter((s) => existsSync(file + s)),
  };
}

/** A message an {@link Recorder} received, with when it arrived. */
export interface Arrival {
  topic: string;
  payload: string;
  packet: IPublishPacket;
  at: number;
}

/** An MQTT.js client that records every message from its first byte on. */
export interface Recorder {
  client: MqttClient;
  connack: IConnackPacket;
  received: Arrival[];
  /** Resolves once `count` messages (in total, since connect) have arrived; rejects after `within` ms. */
  waitForCount(count: number, options?: { within?: number }): Promise<Arrival[]>;
  /** Resolves when no further message arrives for `forMs` ms; rejects if one does. */
  nothingMore(options?: { forMs?: number }): Promise<void>;
  /** A QoS 1 round trip on this connection: everything the broker did for its earlier packets is committed. */
  barrier(): Promise<void>;
  /** DISCONNECT and wait for the socket to close. */
  end(): Promise<void>;
}

/**
 * Connects an MQTT.js client (no automatic reconnect, 3.1.1 unless given) that records
 * messages from the start, so a resumed session's queue, sent right after CONNACK, is seen.
 */
export async function recorder(url: string, options: IClientOptions): Promise<Recorder> {
  const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, keepalive: 0, ...options });
  onTestFinished(() => void client.end(true));
  const received: Arrival[] = [];
  const listeners = new Set<() => void>();
  client.on('message', (topic, payload, packet) => {
    received.push({ topic, payload: payload.toString(), packet, at: Date.now() });
    for (const l of listeners) l();
  });
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve);
    // Kept for the client's life: a later reset (signalbox killed) must not be an unhandled 'error'.
    client.on('error', reject);
    client.once('close', () => reject(new Error(`connection to ${url} closed before CONNACK`)));
  });
  const waitUntil = (ready: () => boolean, within: number) =>
    new Promise<boolean>((resolve) => {
      if (ready()) return resolve(true);
      const check = () => {
        if (!ready()) return;
        listeners.delete(check);
        clearTimeout(timer);
        resolve(true);
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        resolve(ready());
      }, within);
      listeners.add(check);
    });
  let barrierId = 0;
  const describe = () => received.map((m) => `${m.topic}=${m.payload}`).join(', ');
  return {
    client,
    connack,
    received,
    async waitForCount(count, { within = 5000 } = {}) {
      if (!(await waitUntil(() => received.length >= count, within))) {
        throw new Error(`expected ${count} message(s) within ${within} ms, got ${received.length}: ${describe()}`);
      }
      return received.slice(0, count);
    },
    async nothingMore({ forMs = 300 } = {}) {
      const before = received.length;
      if (await waitUntil(() => received.length > before, forMs)) {
        throw new Error(`expected no further message, got ${received.slice(before).map((m) => `${m.topic}=${m.payload}`).join(', ')}`);
      }
    },
    async barrier() {
      await client.publishAsync(`sb-test/barrier/${++barrierId}`, '', { qos: 1 });
    },
    async end() {
      await client.endAsync();
    },
  };
}

/**
 * A QoS 1 round trip on a raw connection (to a topic nothing subscribes to): once PUBACK is
 * back, everything the broker queued for storage on this connection's earlier packets has
 * committed. Other packets that arrive meanwhile are returned, in order.
 */
export async function rawBarrier(r: RawClient, messageId = 65_000): Promise<void> {
  r.send({ cmd: 'publish', topic: 'sb-test/barrier', payload: Buffer.alloc(0), qos: 1, messageId, retain: false, dup: false });
  const ack = await r.expectPacket('puback', { within: 5000 });
  if (ack.messageId !== messageId) throw new Error(`barrier: PUBACK for ${ack.messageId}, expected ${messageId}`);
}
