import { fork, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BrokerConfigInput } from '../../src/config/broker.js';
import type { BrokerStats } from '../../src/broker/context.js';
import { ROOT } from './cli.js';

/**
 * The child: the built broker (dist/, built by test/global-setup.ts) alone in its own
 * process, so its memory and file descriptors can be read from /proc without the test's own
 * sockets and clients in them. Talks over IPC: 'ready' with the port; 'stats' (after two
 * forced GCs) with the broker's counters; 'close'.
 */
const CHILD = `
import { createBroker } from ${JSON.stringify(new URL('dist/broker/broker.js', `file://${ROOT}/`).href)};
import { parseBrokerConfig } from ${JSON.stringify(new URL('dist/config/broker.js', `file://${ROOT}/`).href)};
import { silentLogger } from ${JSON.stringify(new URL('dist/log.js', `file://${ROOT}/`).href)};
const config = parseBrokerConfig(JSON.parse(process.argv[2]));
const broker = createBroker(config, { log: silentLogger() });
const [address] = await broker.listen();
process.on('message', async (m) => {
  if (m.type === 'stats') {
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 20));
    globalThis.gc();
    const mem = process.memoryUsage();
    process.send({ type: 'stats', id: m.id, stats: { ...broker.stats }, connections: broker.connectionCount, heapUsed: mem.heapUsed, arrayBuffers: mem.arrayBuffers });
  } else if (m.type === 'close') {
    await broker.close();
    process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
process.send({ type: 'ready', port: address.port });
`;

/** What the broker child reports, and what /proc says about it, at one moment. */
export interface BrokerSample {
  stats: BrokerStats;
  connections: number;
  /** JS heap in use after two GCs, in bytes. */
  heapUsed: number;
  /** Memory of Buffers and ArrayBuffers after two GCs (payloads, socket write queues), in bytes. */
  arrayBuffers: number;
  /** Resident set size from /proc/<pid>/status, in bytes. */
  rss: number;
  /** Open file descriptors, from /proc/<pid>/fd. */
  fds: number;
}

/** A broker running alone in a child process; see {@link startBrokerProcess}. */
export interface BrokerProcess {
  readonly pid: number;
  readonly port: number;
  /** Forces two GCs in the broker, then reads its counters, RSS and open fds. */
  sample(): Promise<BrokerSample>;
  close(): Promise<void>;
}

/** Reads the VmRSS of a process from /proc, in bytes. */
export function rssOf(pid: number): number {
  const line = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!line) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(line[1]) * 1024;
}

/** Counts the open file descriptors of a process from /proc. */
export function fdsOf(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * Starts the built broker in a child process on 127.0.0.1 with an OS-chosen port and the
 * given `broker:` section. Rejects if it is not listening within 10 s.
 */
export async function startBrokerProcess(config: BrokerConfigInput = {}): Promise<BrokerProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-broker-'));
  const script = path.join(dir, 'broker.mjs');
  writeFileSync(script, CHILD);
  const full = { listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }], ...config };
  const child: ChildProcess = fork(script, [JSON.stringify(full)], { execArgv: ['--expose-gc'], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const cleanup = () => rmSync(dir, { recursive: true, force: true });
  let nextId = 0;
  type Reply = { stats: BrokerStats; connections: number; heapUsed: number; arrayBuffers: number };
  const waiting = new Map<number, (m: Reply) => void>();
  child.on('message', (m: Reply & { type: string; id?: number }) => {
    if (m.type === 'stats') waiting.get(m.id!)?.(m);
  });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('broker child not listening within 10 s')), 10_000);
    child.once('exit', (code) => reject(new Error(`broker child exited with ${code} before listening`)));
    child.on('message', (m: { type: string; port?: number }) => {
      if (m.type !== 'ready') return;
      clearTimeout(timer);
      resolve(m.port!);
    });
  }).catch((err: unknown) => {
    child.kill('SIGKILL');
    cleanup();
    throw err;
  });
  const pid = child.pid!;
  return {
    pid,
    port,
    sample() {
      const id = ++nextId;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(id);
          reject(new Error('broker child sent no stats within 5 s'));
        }, 5000);
        waiting.set(id, (m) => {
          clearTimeout(timer);
          waiting.delete(id);
          resolve({ stats: m.stats, connections: m.connections, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, rss: rssOf(pid), fds: fdsOf(pid) });
        });
        child.send({ type: 'stats', id });
      });
    },
    close() {
      return new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          return resolve();
        }
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(timer);
          cleanup();
          resolve();
        });
        child.send({ type: 'close' });
      });
    },
  };
}
