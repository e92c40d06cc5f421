// Child process of the influx benchmark: the whole signalbox (broker + SQLite storage + rule
// engine + outputs) from the compiled dist/, started like `signalbox run` and like
// test/helpers/engine.ts: a temp project folder, loadProject, createEngine. Its one output
// is an influx output to VictoriaMetrics, fed by one rule a user would write:
//
//   outputs:
//     tsdb: { type: influx, url: http://127.0.0.1:<vmPort> }      # all else default
//   rules:
//     - id: bench-influx
//       on: bench/+/data
//       to:
//         - influx: { output: tsdb, measurement: bench, tags: { pub: "levels[1]" },
//                     fields: { v: payload.value }, timestamp: "payload.value + <T0>" }
//
// The timestamp is the publisher's sequence number after a fixed epoch, so every point of a
// run is one distinct sample (series pub, time) that VictoriaMetrics can count.
// Started by bench/influx-job.js as `node influx-child.js '{"vmPort":N,"t0":ms}'`.
//
// IPC: the protocol of servers/engine-child.js (ready, counters, close).
//
// BENCH_SIGNALBOX_DIST, BENCH_SIGNALBOX_LIMITS and BENCH_INFLUX_SETTINGS (JSON merged into the
// output's settings) apply (diagnosis only).
import { limitsOverride } from './servers/dist.js';
import { benchConfigHead, closeEngine, serveEngineChild, startProjectEngine } from './servers/engine-child.js';

/** The output's name in signalbox.yaml. */
export const OUTPUT = 'tsdb';

/** The rule file: one influx action, every expression in the synchronous fast path. */
export function influxRule(t0) {
  return [
    'rules:',
    '  - id: bench-influx',
    '    on: bench/+/data',
    '    to:',
    `      - influx: { output: ${OUTPUT}, measurement: bench, tags: { pub: "levels[1]" }, fields: { v: payload.value }, timestamp: "payload.value + ${t0}" }`,
    '',
  ].join('\n');
}

async function start({ vmPort, t0 }) {
  const limits = limitsOverride();
  const extra = process.env.BENCH_INFLUX_SETTINGS ? JSON.parse(process.env.BENCH_INFLUX_SETTINGS) : {};
  const output = { type: 'influx', url: `http://127.0.0.1:${vmPort}`, ...extra };
  const rule = influxRule(t0);
  // YAML flow style is JSON.
  const { engine, dir, config, port } = await startProjectEngine('influx', (dbPath) => [...benchConfigHead(dbPath, limits), 'outputs:', `  ${OUTPUT}: ${JSON.stringify(output)}`, ''].join('\n'), { 'bench.yaml': rule });
  return {
    port,
    info: { config, rule },
    /** The influx output's state (waiting in the outbox, delivered, retries, ...) and the rule engine's counters. */
    counters() {
      const output = engine.outputs.status().find((o) => o.name === OUTPUT);
      const deadLetters = engine.db.prepare('SELECT count(*) FROM dead_letters').pluck().get();
      return { output, rules: { ...engine.processor.stats }, deadLetters };
    },
    close: () => closeEngine(engine, dir),
  };
}

serveEngineChild(start);
