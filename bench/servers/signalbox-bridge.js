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
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { limitsOverride, signalboxDist } from './dist.js';
import { closeEngine, serveEngineChild } from './engine-child.js';

/** The output's name in signalbox.yaml. */
export const OUTPUT = 'remote';

async function start({ remotePort }) {
  const dist = signalboxDist();
  const { loadProject } = await import(new URL('config/load.js', dist).href);
  const { createEngine } = await import(new URL('engine/engine.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const { createOutputRegistry } = await import(new URL('outputs/registry.js', dist).href);

  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-bridge-'));
  const limits = limitsOverride();
  // BENCH_BRIDGE_SETTINGS (JSON) is merged into the output's settings: diagnosis only, e.g.
  // '{"protocolVersion":4}' or '{"outbox":{"batchSize":1000}}'.
  const extra = process.env.BENCH_BRIDGE_SETTINGS ? JSON.parse(process.env.BENCH_BRIDGE_SETTINGS) : {};
  const output = { type: 'bridge', url: `mqtt://127.0.0.1:${remotePort}`, out: [{ local: 'bench/#', remote: 'bench/#', qos: 1 }], ...extra };
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

  let engine;
  try {
    const registry = createOutputRegistry();
    const project = loadProject(configFile, { explicit: true, registry });
    engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    const [address] = await engine.broker.listen();
    return {
      port: address.port,
      info: { config, rules: project.compiled.rules.map((r) => r.id) },
      /** The bridge output's state (waiting in the outbox, delivered, retries, ...) and the broker's counters. */
      counters() {
        const output = engine.outputs.status().find((o) => o.name === OUTPUT);
        const deadLetters = engine.db.prepare('SELECT count(*) FROM dead_letters').pluck().get();
        return { output, broker: { ...engine.broker.stats }, rules: { ...engine.processor.stats }, deadLetters };
      },
      close: () => closeEngine(engine, dir),
    };
  } catch (err) {
    await closeEngine(engine, dir).catch(() => {});
    throw err;
  }
}

serveEngineChild(start);
