// Small helpers shared by the benchmark phases: percentiles, deadlines, number formatting.
import os from 'node:os';

/**
 * Percentiles of the first `count` values of `samples` (sorted in place).
 * @param {Float64Array} samples latencies in ms
 * @param {number} count how many of them are filled in
 * @returns {{ p50: number, p99: number, max: number, count: number } | undefined}
 */
export function percentiles(samples, count) {
  if (count === 0) return undefined;
  const sorted = samples.subarray(0, count).sort();
  const at = (q) => sorted[Math.min(count - 1, Math.floor(q * count))];
  return { p50: at(0.5), p99: at(0.99), max: sorted[count - 1], count };
}

/** Error thrown when a phase runs past its deadline; its message says what was still missing. */
export class PhaseTimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = 'PhaseTimeoutError';
    this.code = 'BENCH_PHASE_TIMEOUT';
  }
}

/** `err`'s message, with why a child process died (`crash`, when any) unless it says so already. */
export function errorText(err, crash) {
  return crash && !err.message.includes(crash) ? `${err.message} (${crash})` : err.message;
}

/**
 * Races `promise` against a deadline. On timeout rejects with a {@link PhaseTimeoutError}
 * whose message is `what` plus whatever `progress()` says (e.g. "received 812 of 50000").
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @param {() => string} [progress]
 * @returns {Promise<T>}
 */
export function withTimeout(promise, ms, what, progress) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => {
      const detail = progress ? `: ${progress()}` : '';
      reject(new PhaseTimeoutError(`${what} did not finish within ${ms < 10_000 ? (ms / 1000).toFixed(1) : (ms / 1000).toFixed(0)} s${detail}`));
    }, ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Resolves after `ms`; used only to let a child settle after GC, never to wait for an event. */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** 12345.6 → "12,346". */
export function formatInt(n) {
  return Math.round(n).toLocaleString('en-US');
}

/** Milliseconds with a precision that suits their size. */
export function formatMs(ms) {
  if (ms < 1) return `${ms.toFixed(3)} ms`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  return `${formatInt(ms)} ms`;
}

/** Bytes as KiB / MiB. */
export function formatBytes(bytes) {
  if (Math.abs(bytes) < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * CPU time the whole machine has spent busy (all processes, all CPUs) so far, in ms, from
 * os.cpus(). Compared with the broker's and the bench's own CPU time, it shows whether
 * something else on the machine was competing during a measurement.
 */
export function machineBusyMs() {
  let busy = 0;
  for (const cpu of os.cpus()) busy += cpu.times.user + cpu.times.nice + cpu.times.sys + cpu.times.irq;
  return busy;
}
