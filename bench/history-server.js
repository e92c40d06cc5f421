// The history job's signalbox child: the whole signalbox (broker + SQLite + rules) from dist/,
// started like `signalbox run` (a temp project folder, loadProject + createEngine), with one
// rule that stores every message it matches and does nothing else:
//
//   rules:
//     - id: bench-history
//       on: sensors/+/temp
//       to: [ { history: {} } ]            (transform: the rules job's, when asked)
//   and with `lastValues`, an `http:` section, so the last-value cache is fed too.
//
// Run as `node bench/history-server.js '<options JSON>'` by bench/history-job.js, with IPC:
//   child → parent  { type: 'ready', port, info }  |  { type: 'failed', message }
//   parent → child  { type: 'stats', id }           → { type: 'stats', id, rss, maxRss, cpu…, counters }
//   parent → child  { type: 'close' }               → { type: 'closed' } and exit 0
import Database from 'better-sqlite3';
import { INPUT_FILTER, RULES_LIMITS, TRANSFORM } from './rules-spec.js';
import { limitsOverride } from './servers/dist.js';
import { benchConfigHead, closeEngine, startProjectEngine } from './servers/engine-child.js';

/** The rule id of the history job. */
const HISTORY_RULE_ID = 'bench-history';

/**
 * Starts signalbox from a fresh project folder; close() stops it and removes the folder.
 * @param {{ transform?: boolean }} options
 */
async function start({ transform = false, lastValues = false } = {}) {
  const limits = { ...RULES_LIMITS, ...limitsOverride() };
  const rule = ['rules:', `  - id: ${HISTORY_RULE_ID}`, `    on: ${INPUT_FILTER}`];
  if (transform) rule.push(`    transform: '${TRANSFORM}'`);
  rule.push('    to:', '      - history: {}', '');
  const configFor = (dbPath) => {
    const config = [...benchConfigHead(dbPath, limits), '  durability: normal', 'rules: rules'];
    // `http:` makes the engine keep the last-value cache, fed by every history commit (the
    // HTTP server itself is not started: nothing asks it anything during the run).
    if (lastValues) config.push('http: { port: 0 }');
    config.push('');
    return config.join('\n');
  };
  const { engine, dir, dbPath, port } = await startProjectEngine('history', configFor, { 'bench.yaml': rule.join('\n') });
  return {
    port,
    info: { limits, transform, lastValues, storage: { path: dbPath, durability: 'normal' } },
    /** Rows committed so far (cheap, read at every poll), and with `count` the table's own count. */
    counters(count) {
      const stored = engine.history.stats?.rowsWritten;
      const out = { rowsWritten: stored, commits: engine.history.stats?.commits, rules: { ...engine.processor.stats }, broker: { ...engine.broker.stats } };
      if (count) {
        const db = new Database(dbPath, { readonly: true, fileMustExist: true });
        try {
          out.historyRows = db.prepare('SELECT count(*) FROM history').pluck().get();
          out.deadLetters = db.prepare('SELECT count(*) FROM dead_letters').pluck().get();
        } finally {
          db.close();
        }
      }
      return out;
    },
    close: () => closeEngine(engine, dir),
  };
}

function send(message) {
  if (process.connected) process.send(message);
}

async function main() {
  const server = await start(process.argv[2] ? JSON.parse(process.argv[2]) : {});
  process.on('message', (message) => {
    if (message.type === 'stats') {
      const mem = process.memoryUsage();
      const cpu = process.cpuUsage();
      send({
        type: 'stats',
        id: message.id,
        rss: mem.rss,
        // Peak RSS since the process started (ru_maxrss, KiB on Linux).
        maxRss: process.resourceUsage().maxRSS * 1024,
        cpuUs: cpu.user + cpu.system,
        counters: server.counters(message.count === true),
      });
    } else if (message.type === 'close') {
      server.close().then(
        () => {
          send({ type: 'closed' });
          process.exit(0);
        },
        (err) => {
          send({ type: 'closed', error: err.message });
          process.exit(1);
        },
      );
    }
  });
  process.on('uncaughtException', (err) => {
    send({ type: 'crashed', message: err.stack ?? String(err) });
    process.exit(1);
  });
  send({ type: 'ready', port: server.port, info: server.info });
}

main().catch((err) => {
  send({ type: 'failed', message: err.stack ?? String(err) });
  process.exit(1);
});
