import { existsSync } from 'node:fs';
import { TextDecoder } from 'node:util';
import { systemClock, type Clock } from '../clock.js';
import { parseDuration } from '../config/units.js';
import { describePayload } from '../http/payload.js';
import { silentLogger, type Logger } from '../log.js';
import { openDatabase, type Database } from '../storage/database.js';
import { StorageError } from '../storage/errors.js';
import { DEFAULT_QUERY_LIMIT, HistoryStore, MAX_QUERY_LIMIT, type HistoryRow } from '../storage/history.js';
import { validateTopicFilter } from '../topics/validate.js';

/** Arguments of `signalbox history`, as the command line gave them. */
export interface HistoryCommandOptions {
  /** The signalbox database (`storage.path`). */
  dbPath: string;
  /** MQTT topic filter. */
  filter: string;
  /** A duration ago (`1h`, `30m`, `7d`) or an ISO-8601 timestamp; inclusive. */
  since?: string;
  /** A duration ago or an ISO-8601 timestamp; exclusive. */
  until?: string;
  /** Show the latest this many messages, 1 to 10000. Default 100. */
  limit?: number;
  /** One JSON object per line instead of text. */
  json?: boolean;
}

/** What `signalbox history` needs besides its arguments; defaults are the real ones. */
export interface HistoryCommandDeps {
  /** Where problems and notes go. Default process.stderr. */
  err?: NodeJS.WritableStream;
  /** Reads "now" for relative `--since`/`--until`. Default the system clock. */
  clock?: Clock;
  log?: Logger;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/**
 * Parses a `--since`/`--until` value: a duration (`30m`, `1h`, `7d`) meaning that long before
 * `now`, or an ISO-8601 date or timestamp. Returns ms since the epoch, or undefined when the
 * text is neither (the caller reports it with what is accepted).
 */
export function parseTimeBound(value: string, now: number): number | undefined {
  const ago = parseDuration(value);
  if (ago !== undefined) return now - ago;
  if (!ISO_8601.test(value.trim())) return undefined;
  const time = Date.parse(value.trim());
  return Number.isNaN(time) ? undefined : time;
}

const CONTROL = /[\u0000-\u001f\u007f]/g;

function escapeControl(c: string): string {
  return c === '\u007f' ? '\\u007f' : JSON.stringify(c).slice(1, -1);
}

/** The payload as text when it is valid UTF-8, else undefined. */
function utf8(payload: Buffer, decoder: TextDecoder): string | undefined {
  try {
    return decoder.decode(payload);
  } catch {
    return undefined;
  }
}

/** `time  topic  qN rN  rule=id  payload`: one line per message, control characters escaped. */
function textLine(row: HistoryRow, decoder: TextDecoder): string {
  const text = utf8(row.payload, decoder);
  const payload = text === undefined ? `base64:${row.payload.toString('base64')}` : text.replace(CONTROL, escapeControl);
  return `${new Date(row.time).toISOString()}  ${row.topic}  q${row.qos} r${row.retain ? 1 : 0}  rule=${row.ruleId}  ${payload}\n`;
}

/**
 * One JSON object per line. `payloadEncoding` says how to read `payload`: `json` (parsed),
 * `utf8` (a string), or `base64` (bytes that are not UTF-8).
 */
function jsonLine(row: HistoryRow, decoder: TextDecoder): string {
  const { payload, payloadEncoding } = describePayload(row.payload, decoder);
  const { topic, qos, retain, ruleId, clientId } = row;
  return `${JSON.stringify({ time: new Date(row.time).toISOString(), topic, qos, retain, ruleId, clientId, payload, payloadEncoding })}\n`;
}

/**
 * `signalbox history <filter>`: prints the latest stored messages matching `filter`, oldest
 * first, as text or JSON lines on `out`. Reads the database read-only, so it is safe while
 * signalbox runs. Returns the exit code: 0 on success, 1 when there is no history or the
 * database cannot be read, 2 for bad arguments (each reported on `deps.err`, naming the
 * option and what it accepts).
 */
export function historyCommand(options: HistoryCommandOptions, out: NodeJS.WritableStream, deps: HistoryCommandDeps = {}): number {
  const err = deps.err ?? process.stderr;
  const fail = (code: number, message: string): number => {
    err.write(`signalbox history: ${message}\n`);
    return code;
  };

  const problem = validateTopicFilter(options.filter);
  if (problem !== undefined) return fail(2, `invalid topic filter '${options.filter}': ${problem}`);
  const now = (deps.clock ?? systemClock).now();
  const bounds: { since?: number; until?: number } = {};
  for (const name of ['since', 'until'] as const) {
    const value = options[name];
    if (value === undefined) continue;
    const time = parseTimeBound(value, now);
    if (time === undefined) {
      return fail(2, `--${name} must be a duration ago (such as 30m, 1h, 7d) or an ISO-8601 time (such as 2026-11-25T18:00:00Z), got '${value}'`);
    }
    bounds[name] = time;
  }
  if (bounds.since !== undefined && bounds.until !== undefined && bounds.since >= bounds.until) {
    return fail(2, `--since (${new Date(bounds.since).toISOString()}) must be before --until (${new Date(bounds.until).toISOString()})`);
  }
  const limit = options.limit ?? DEFAULT_QUERY_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_QUERY_LIMIT) {
    return fail(2, `--limit must be a whole number from 1 to ${MAX_QUERY_LIMIT}, got ${options.limit}`);
  }

  const noHistory = `no history stored yet at ${options.dbPath} (it is created when a rule with a history output runs)`;
  if (!existsSync(options.dbPath)) return fail(1, noHistory);
  let db: Database | undefined;
  try {
    // Read-only and without the full-file check: a query tool must not write to (or stall
    // on) the database the server is using.
    db = openDatabase(options.dbPath, { durability: 'normal', log: deps.log ?? silentLogger(), readonly: true, quickCheck: false });
    const table = db.prepare(`SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'history'`).get();
    if (table === undefined) return fail(1, noHistory);
    const store = new HistoryStore(db, { clock: deps.clock ?? systemClock, log: deps.log ?? silentLogger() });
    // Newest first to get the latest `limit`, printed oldest first like a log.
    const rows = store.query({ filter: options.filter, ...bounds, limit, order: 'desc' }).reverse();
    const decoder = new TextDecoder('utf-8', { fatal: true });
    const line = options.json === true ? jsonLine : textLine;
    for (const row of rows) out.write(line(row, decoder));
    if (rows.length === 0) err.write(`(no stored messages match '${options.filter}'${options.since || options.until ? ' in that time range' : ''})\n`);
    if (rows.length === limit) err.write(`(showing the latest ${limit}; use --limit up to ${MAX_QUERY_LIMIT} or --since/--until for others)\n`);
    return 0;
  } catch (e) {
    if (e instanceof StorageError) return fail(1, e.message);
    throw e;
  } finally {
    db?.close();
  }
}
