// The whole signalbox (broker + SQLite storage + rule engine) from the compiled dist/, started
// the way `signalbox run` starts it: a project folder with signalbox.yaml and rule files,
// loaded and compiled by loadProject, wired by createEngine. Used by the rules job.
//
// Options (from the parent, see bench/rules-job.js):
//   fillerRules  rules on filters no bench topic matches, besides the bench rule
//   history      add `- history: {}` to the bench rule's outputs
//
// BENCH_SIGNALBOX_DIST and BENCH_SIGNALBOX_LIMITS apply here too (diagnosis only).
import { statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { RULES_LIMITS, ruleFiles } from '../rules-spec.js';
import { limitsOverride } from './dist.js';
import { benchConfigHead, closeEngine, startProjectEngine } from './engine-child.js';

/**
 * Writes the project into a fresh temp folder, starts signalbox from it on 127.0.0.1 with an
 * OS-chosen port; close() stops it and removes the folder.
 * @param {{ fillerRules?: number, history?: boolean }} options
 */
export async function start({ fillerRules = 9, history = false } = {}) {
  const limits = { ...RULES_LIMITS, ...limitsOverride() };
  const configFor = (dbPath) => [...benchConfigHead(dbPath, limits), '  durability: normal', 'rules: rules', ''].join('\n');
  const { engine, dir, dbPath, project, port, loadMs, startMs } = await startProjectEngine('rules', configFor, ruleFiles({ fillerRules, history }));
  const info = {
    walBytesAtStart: walBytes(dbPath),
    rules: project.compiled.rules.length,
    ruleFiles: project.ruleFiles.length,
    loadMs,
    startMs,
    limits,
    storage: { path: dbPath, durability: 'normal' },
  };
  return {
    port,
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
