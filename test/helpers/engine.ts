import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { systemClock, type Clock } from '../../src/clock.js';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { loadProject, type Project } from '../../src/config/load.js';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { HttpApi } from '../../src/http/api.js';
import { silentLogger, type Logger } from '../../src/log.js';
import type { ConnectorType } from '../../src/outputs/connector.js';
import { createConnectorRegistry } from '../../src/outputs/connectors.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import type { OutputType } from '../../src/outputs/types.js';

export interface ProjectFiles {
  /** signalbox.yaml text; the broker listener defaults to 127.0.0.1 port 0 when `broker:` is absent. */
  config?: string;
  /** Rule files by name (`greenhouse.yaml`) → YAML text, written to `<dir>/rules/`. */
  rules?: Record<string, string>;
}

/** Writes a project (config + rules folder) into a fresh temp dir; returns the dir and the config path. */
export function writeProject(files: ProjectFiles): { dir: string; configFile: string; cleanup(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-test-'));
  mkdirSync(path.join(dir, 'rules'));
  const config = files.config ?? 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n';
  const configFile = path.join(dir, 'signalbox.yaml');
  writeFileSync(configFile, config);
  for (const [name, text] of Object.entries(files.rules ?? {})) writeFileSync(path.join(dir, 'rules', name), text);
  return { dir, configFile, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface TestEngine {
  engine: Engine;
  project: Project;
  dir: string;
  configFile: string;
  port: number;
  url: string;
  /** The HTTP API, started when the config has `http:` (use `http: { port: 0 }`). */
  http?: { api: HttpApi; url: string; setListening(listening: boolean): void };
  /** Reloads rules from disk into the running engine (throws ConfigError on problems). */
  reload(): void;
  /** Stops signalbox and starts it again on the same files and database. */
  restart(): Promise<TestEngine>;
  close(): Promise<void>;
}

type EngineDepsOption = { log?: Logger; clock?: Clock; env?: NodeJS.ProcessEnv; actions?: OutputType[]; connectors?: ConnectorType[] };

/**
 * Starts a whole signalbox (broker + storage + rules) from files written to a temp dir, on
 * 127.0.0.1 with an OS-chosen port. Throws the loader's ConfigError when the files are bad.
 */
export async function startEngine(files: ProjectFiles, deps: EngineDepsOption = {}): Promise<TestEngine> {
  const { dir, configFile, cleanup } = writeProject(files);
  return startFrom(dir, configFile, cleanup, deps);
}

async function startFrom(dir: string, configFile: string, cleanup: () => void, deps: EngineDepsOption): Promise<TestEngine> {
  const registry = createOutputRegistry(deps.actions ?? []);
  const connectors = createConnectorRegistry(deps.connectors ?? []);
  let project: Project;
  try {
    project = loadProject(configFile, { explicit: true, registry, connectors, env: deps.env ?? process.env });
  } catch (err) {
    cleanup();
    throw err;
  }
  const log = deps.log ?? silentLogger();
  const engine = createEngine(project.config, project.compiled.rules, { log, registry, connectors, clock: deps.clock });
  const [address] = await engine.broker.listen();
  let listening = true;
  let http: TestEngine['http'];
  if (project.config.http) {
    const api = new HttpApi(project.config.http, engine, { clock: deps.clock ?? systemClock, log, listening: () => listening });
    const bound = await api.listen();
    http = { api, url: `http://127.0.0.1:${bound.port}`, setListening: (on) => (listening = on) };
  }
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await http?.api.close();
    await engine.close();
  };
  return {
    engine,
    project,
    dir,
    configFile,
    port: address!.port,
    url: `mqtt://127.0.0.1:${address!.port}`,
    http,
    reload() {
      engine.setRules(loadProject(configFile, { explicit: true, registry, connectors, env: deps.env ?? process.env }).compiled.rules);
    },
    async restart() {
      await stop();
      return startFrom(dir, configFile, cleanup, deps);
    },
    async close() {
      await stop();
      cleanup();
    },
  };
}

/** The issues `loadProject` reports for the project at `configFile`; [] when it loads. */
export function loadIssues(configFile: string): ConfigIssue[] {
  try {
    loadProject(configFile, { explicit: true, registry: createOutputRegistry() });
  } catch (err) {
    if (err instanceof ConfigError) return err.issues;
    throw err;
  }
  return [];
}
