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
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { limitsOverride, signalboxDist } from './servers/dist.js';
import { closeEngine, serveEngineChild } from './servers/engine-child.js';

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
  const dist = signalboxDist();
  const { loadProject } = await import(new URL('config/load.js', dist).href);
  const { createEngine } = await import(new URL('engine/engine.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const { createOutputRegistry } = await import(new URL('outputs/registry.js', dist).href);

  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-influx-'));
  const limits = limitsOverride();
  const extra = process.env.BENCH_INFLUX_SETTINGS ? JSON.parse(process.env.BENCH_INFLUX_SETTINGS) : {};
  const output = { type: 'influx', url: `http://127.0.0.1:${vmPort}`, ...extra };
  const config = [
    'broker:',
    '  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]',
    ...(limits ? [`  limits: ${JSON.stringify(limits)}`] : []),
    'storage:',
    `  path: ${JSON.stringify(path.join(dir, 'signalbox.db'))}`,
    'outputs:',
    // YAML flow style is JSON.
    `  ${OUTPUT}: ${JSON.stringify(output)}`,
    '',
  ].join('\n');
  const configFile = path.join(dir, 'signalbox.yaml');
  writeFileSync(configFile, config);
  mkdirSync(path.join(dir, 'rules'));
  const rule = influxRule(t0);
  writeFileSync(path.join(dir, 'rules', 'bench.yaml'), rule);

  let engine;
  try {
    const registry = createOutputRegistry();
    const project = loadProject(configFile, { explicit: true, registry });
    engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    const [address] = await engine.broker.listen();
    return {
      port: address.port,
      info: { config, rule },
      /** The influx output's state (waiting in the outbox, delivered, retries, ...) and the rule engine's counters. */
      counters() {
        const output = engine.outputs.status().find((o) => o.name === OUTPUT);
        const deadLetters = engine.db.prepare('SELECT count(*) FROM dead_letters').pluck().get();
        return { output, rules: { ...engine.processor.stats }, deadLetters };
      },
      close: () => closeEngine(engine, dir),
    };
  } catch (err) {
    await closeEngine(engine, dir).catch(() => {});
    throw err;
  }
}

serveEngineChild(start);
