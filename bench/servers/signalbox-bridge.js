// Child process of the bridge benchmark: the whole signalbox (broker + SQLite storage + rule
// engine + outputs) from the compiled dist/, started like `signalbox run` and like
// test/helpers/engine.ts: a temp project folder, loadProject, createEngine. Its only output
// is a bridge to the remote Mosquitto, with the out mapping a user would write:
//
//   outputs:
//     remote:
//       type: bridge
//       url: mqtt://127.0.0.1:<remotePort>
//       out: [{ local: "bench/#", remote: "bench/#", qos: 1 }]
//
// Everything else is default (storage durability normal, outbox batchSize 100, MQTT 5 to
// the remote); the output is written in YAML flow style (JSON). Started by
// bench/bridge-procs.js as `node signalbox-bridge.js '{"remotePort":N}'`.
//
// IPC: the protocol of servers/engine-child.js (ready, counters, close).
//
// BENCH_SIGNALBOX_DIST and BENCH_SIGNALBOX_LIMITS apply (diagnosis only).
import { limitsOverride } from './dist.js';
import { benchConfigHead, closeEngine, serveEngineChild, startProjectEngine } from './engine-child.js';

/** The output's name in signalbox.yaml. */
export const OUTPUT = 'remote';

async function start({ remotePort }) {
  const limits = limitsOverride();
  // BENCH_BRIDGE_SETTINGS (JSON) is merged into the output's settings: diagnosis only, e.g.
  // '{"protocolVersion":4}' or '{"outbox":{"batchSize":1000}}'.
  const extra = process.env.BENCH_BRIDGE_SETTINGS ? JSON.parse(process.env.BENCH_BRIDGE_SETTINGS) : {};
  const output = { type: 'bridge', url: `mqtt://127.0.0.1:${remotePort}`, out: [{ local: 'bench/#', remote: 'bench/#', qos: 1 }], ...extra };
  // YAML flow style is JSON.
  const { engine, dir, config, project, port } = await startProjectEngine('bridge', (dbPath) => [...benchConfigHead(dbPath, limits), 'outputs:', `  ${OUTPUT}: ${JSON.stringify(output)}`, ''].join('\n'));
  return {
    port,
    info: { config, rules: project.compiled.rules.map((r) => r.id) },
    /** The bridge output's state (waiting in the outbox, delivered, retries, ...) and the broker's counters. */
    counters() {
      const output = engine.outputs.status().find((o) => o.name === OUTPUT);
      const deadLetters = engine.db.prepare('SELECT count(*) FROM dead_letters').pluck().get();
      return { output, broker: { ...engine.broker.stats }, rules: { ...engine.processor.stats }, deadLetters };
    },
    close: () => closeEngine(engine, dir),
  };
}

serveEngineChild(start);
