// Where the signalbox build under test lives: ../../dist (what `npm run bench` builds), or
// BENCH_SIGNALBOX_DIST to measure another build (A/B a change without touching the tree).
import { pathToFileURL } from 'node:url';

/** The dist/ folder as a file URL ending in `/`; resolve modules against it. */
export function signalboxDist() {
  return process.env.BENCH_SIGNALBOX_DIST
    ? pathToFileURL(`${process.env.BENCH_SIGNALBOX_DIST.replace(/\/$/, '')}/`)
    : new URL('../../dist/', import.meta.url);
}

/** BENCH_SIGNALBOX_LIMITS (JSON), a diagnostic override of broker `limits`; undefined when unset. */
export function limitsOverride() {
  return process.env.BENCH_SIGNALBOX_LIMITS ? JSON.parse(process.env.BENCH_SIGNALBOX_LIMITS) : undefined;
}
