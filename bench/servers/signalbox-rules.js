// The whole signalbox (broker + SQLite storage + rule engine) from the compiled dist/, started
// the way `signalbox run` starts it: a project folder with signalbox.yaml and rule files,
// loaded and compiled by loadProject, wired by createEngine. Used by the rules job.
//
// Options (from the parent, see bench/rules-job.js):
//   fillerRules  rules on filters no bench topic matches, besides the bench rule
//   history      add `- history: {}` to the bench rule's outputs
//
// BENCH_SIGNALBOX_DIST and BENCH_SIGNALBOX_LIMITS apply here too (diagnosis only).
import { mkdirSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import Database from 'better-sqlite3';
import { RULES_LIMITS, ruleFiles } from '../rules-spec.js';
import { limitsOverride, signalboxDist } from './dist.js';
import { closeEngine } from './engine-child.js';

/**
 * Writes the project into a fresh temp folder, starts signalbox from it on 127.0.0.1 with an
 * OS-chosen port; close() stops it and removes the folder.
 * @param {{ fillerRules?: number, history?: boolean }} options
 */
export async function start({ fillerRules = 9, history = false } = {}) {
  const dist = signalboxDist();
  const { loadProject } = await import(new URL('config/load.js', dist).href);
  const { createEngine } = await import(new URL('engine/engine.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const { createOutputRegistry } = await import(new URL('outputs/registry.js', dist).href);

  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-'));
  const dbPath = path.join(dir, 'signalbox.db');
  const limits = { ...RULES_LIMITS, ...limitsOverride() };
  const config = [
    'broker:',
    '  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]',
    `  limits: ${JSON.stringify(limits)}`,
    'storage:',
    `  path: ${JSON.stringify(dbPath)}`,
    '  durability: normal',
    'rules: rules',
    '',
  ].join('\n');
  const configFile = path.join(dir, 'signalbox.yaml');
  writeFileSync(configFile, config);
  mkdirSync(path.join(dir, 'rules'));
  for (const [name, text] of Object.entries(ruleFiles({ fillerRules, history }))) writeFileSync(path.join(dir, 'rules', name), text);

  let engine;
  try {
    const registry = createOutputRegistry();
    const t0 = performance.now();
    const project = loadProject(configFile, { explicit: true, registry });
    const t1 = performance.now();
    engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    const [address] = await engine.broker.listen();
    const info = {
      walBytesAtStart: walBytes(dbPath),
      rules: project.compiled.rules.length,
      ruleFiles: project.ruleFiles.length,
      loadMs: Math.round(t1 - t0),
      startMs: Math.round(performance.now() - t1),
      limits,
      storage: { path: dbPath, durability: 'normal' },
    };
    return {
      port: address.port,
      info,
      /**
       * Drops, rule errors and stored rows: what says whether messages went missing; and for
       * telling a busy broker from a lost message: `pending`, messages accepted and not yet
       * through the rules (every bench message matches one rule, so matched − settled
       * outcomes), and `progress`, a count that moves while messages come in or go through.
       */
      counters() {
        const broker = { ...engine.broker.stats };
        const rules = { ...engine.processor.stats };
        const settled = rules.rulesRun + rules.rulesSkipped + rules.ruleErrors - rules.effectErrors;
        return {
          broker,
          rules,
          pending: Math.max(0, rules.messagesMatched - settled),
          progress: broker.messagesReceived + broker.messagesRouted + settled,
          ...countRows(dbPath),
        };
      },
      close: () => closeEngine(engine, dir),
    };
  } catch (err) {
    await closeEngine(engine, dir).catch(() => {});
    throw err;
  }
}

/** Size of the database's write-ahead log: grows with every commit until a checkpoint. */
function walBytes(dbPath) {
  try {
    return statSync(`${dbPath}-wal`).size;
  } catch {
    return 0;
  }
}

/** History and dead-letter rows (and why messages went to the dead letters), read over a second, read-only connection. */
function countRows(dbPath) {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  try {
    const count = (table) => db.prepare(`SELECT count(*) FROM ${table}`).pluck().get();
    const deadLetterErrors = db.prepare('SELECT substr(error, 1, 160) AS error, count(*) AS count FROM dead_letters GROUP BY 1 ORDER BY 2 DESC LIMIT 5').all();
    // Broker state (persistent sessions, owed messages, retained): stays empty with the bench's
    // clean sessions, which is what makes the no-history case "storage off".
    const brokerStateRows = count('sessions') + count('session_messages') + count('retained');
    return { historyRows: count('history'), deadLetters: count('dead_letters'), deadLetterErrors, brokerStateRows, walBytes: walBytes(dbPath) };
  } finally {
    db.close();
  }
}
