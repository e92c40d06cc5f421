// The IPC loop of a bench child that hosts a whole signalbox engine (the bridge job's and the
// influx job's children): started with its options as JSON in argv[2], it reports when ready
// and answers counter requests until told to close.
//
//   child → parent  { type: 'ready', port, info }           listening on 127.0.0.1:port
//   child → parent  { type: 'failed', message }             could not start (then exits 1)
//   child → parent  { type: 'crashed', message }            uncaught error (then exits 1)
//   parent → child  { type: 'counters', id }                → { type: 'counters', id, counters }
//   parent → child  { type: 'close' }                       → exits 0 after server.close()

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { signalboxDist } from './dist.js';

/**
 * Closes a bench child's engine (when it got that far) and then removes its temp project
 * folder, whatever the close did.
 */
export async function closeEngine(engine, dir) {
  try {
    await engine?.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Starts a whole signalbox from the compiled dist/ the way `signalbox run` does: a fresh temp
 * project folder (`signalbox-bench-<name>-…`) with signalbox.yaml (the text `configFor(dbPath)`
 * returns) and `ruleFiles` (file name → YAML) in rules/, loadProject, createEngine, listen.
 * Resolves once it listens; on failure the engine is closed and the folder removed.
 * @returns {Promise<{ engine, dir: string, dbPath: string, config: string, project, port: number, loadMs: number, startMs: number }>}
 */
export async function startProjectEngine(name, configFor, ruleFiles = {}) {
  const dist = signalboxDist();
  const { loadProject } = await import(new URL('config/load.js', dist).href);
  const { createEngine } = await import(new URL('engine/engine.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const { createOutputRegistry } = await import(new URL('outputs/registry.js', dist).href);

  const dir = mkdtempSync(path.join(tmpdir(), `signalbox-bench-${name}-`));
  const dbPath = path.join(dir, 'signalbox.db');
  const config = configFor(dbPath);
  const configFile = path.join(dir, 'signalbox.yaml');
  writeFileSync(configFile, config);
  mkdirSync(path.join(dir, 'rules'));
  for (const [file, text] of Object.entries(ruleFiles)) writeFileSync(path.join(dir, 'rules', file), text);

  let engine;
  try {
    const registry = createOutputRegistry();
    const t0 = performance.now();
    const project = loadProject(configFile, { explicit: true, registry });
    const t1 = performance.now();
    engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    const [address] = await engine.broker.listen();
    return { engine, dir, dbPath, config, project, port: address.port, loadMs: Math.round(t1 - t0), startMs: Math.round(performance.now() - t1) };
  } catch (err) {
    await closeEngine(engine, dir).catch(() => {});
    throw err;
  }
}

/** The `broker:` and `storage:` sections every bench child's signalbox.yaml starts with. */
export function benchConfigHead(dbPath, limits) {
  return [
    'broker:',
    '  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]',
    ...(limits ? [`  limits: ${JSON.stringify(limits)}`] : []),
    'storage:',
    `  path: ${JSON.stringify(dbPath)}`,
  ];
}

export function send(message) {
  if (process.connected) process.send(message);
}

/**
 * Starts `start(options)` (resolving to { port, info, counters(), close() }) and serves the
 * protocol above. Does nothing when the process was not forked with an IPC channel.
 */
export function serveEngineChild(start) {
  if (!process.send) return;
  run(start).catch((err) => {
    send({ type: 'failed', message: err?.stack ?? String(err) });
    process.exitCode = 1;
    process.disconnect?.();
  });
}

async function run(start) {
  const server = await start(JSON.parse(process.argv[2] ?? '{}'));
  process.on('message', (message) => {
    if (message.type === 'counters') {
      try {
        send({ type: 'counters', id: message.id, counters: server.counters() });
      } catch (err) {
        send({ type: 'counters', id: message.id, error: err.message });
      }
    } else if (message.type === 'close') {
      server.close().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    }
  });
  process.on('uncaughtException', (err) => {
    send({ type: 'crashed', message: err.stack ?? String(err) });
    process.exit(1);
  });
  process.on('disconnect', () => process.exit(0));
  send({ type: 'ready', port: server.port, info: server.info });
}
