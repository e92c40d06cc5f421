/**
 * Exponential backoff with full jitter: after the n-th failure in a row, a delay between
 * `minMs` and min(maxMs, minMs * 2^(n-1)). Jitter spreads reconnects and retries of many
 * outputs (or many signalbox instances) so they do not hit a recovering target at once.
 */
export function backoffDelay(failures: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures, 1) - 1, 30));
  return Math.round(minMs + (Math.max(ceiling, minMs) - minMs) * random());
}
