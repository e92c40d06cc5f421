import { existsSync } from 'node:fs';
import { silentLogger } from '../log.js';
import { systemClock } from '../clock.js';
import { openDatabase } from '../storage/database.js';
import { DeadLetterStore, type DeadLetter } from '../storage/dead-letters.js';
import { StorageError } from '../storage/errors.js';

export interface DeadLettersOptions {
  dbPath: string;
  action: 'list' | 'replay' | 'purge';
  ids: number[];
  rule?: string;
  all?: boolean;
  limit?: number;
  json?: boolean;
}

/**
 * `signalbox dead-letters list|replay|purge`. `replay` marks letters; the running server
 * (or the next one to start) redrives them: a rule's letter through that rule again, an
 * output's letter back into its outbox. Returns the exit code.
 */
export function deadLettersCommand(options: DeadLettersOptions, out: NodeJS.WritableStream, err: NodeJS.WritableStream = process.stderr): number {
  const selectors = (options.ids.length > 0 ? 1 : 0) + (options.rule !== undefined ? 1 : 0) + (options.all ? 1 : 0);
  if (options.action !== 'list' && selectors !== 1) {
    err.write(`dead-letters ${options.action}: name the letters: ids, --rule <id>, or --all (exactly one)\n`);
    return 2;
  }
  if (!existsSync(options.dbPath)) {
    err.write(`no dead letters: no database at ${options.dbPath} yet\n`);
    return options.action === 'list' ? 0 : 1;
  }
  let db;
  try {
    db = openDatabase(options.dbPath, { durability: 'normal', log: silentLogger(), quickCheck: false });
  } catch (e) {
    err.write(`${e instanceof StorageError ? `${e.code}: ` : ''}${(e as Error).message}\n`);
    return 1;
  }
  try {
    const store = new DeadLetterStore(db, { clock: systemClock, log: silentLogger() });
    if (options.action === 'list') {
      const letters = store.list({ limit: options.limit ?? 100, ruleId: options.rule, order: 'asc' });
      for (const l of letters) out.write(options.json ? `${JSON.stringify(toJson(l))}\n` : `${formatLetter(l)}\n`);
      if (!options.json) err.write(`${letters.length} of ${store.count()} dead letter(s)\n`);
      return 0;
    }
    if (options.action === 'replay') {
      const n = store.requestReplay({ ids: options.ids, ruleId: options.rule, all: options.all });
      out.write(`${n} dead letter(s) marked for replay; the running signalbox redrives them within a second (or at its next start)\n`);
      return 0;
    }
    const n = options.all ? store.purge() : options.rule !== undefined ? store.purgeRule(options.rule) : store.remove(options.ids);
    out.write(`${n} dead letter(s) deleted\n`);
    return 0;
  } catch (e) {
    err.write(`${e instanceof StorageError ? `${e.code}: ` : ''}${(e as Error).message}\n`);
    return 1;
  } finally {
    db.close();
  }
}

function payloadText(payload: Buffer): string {
  const text = payload.toString('utf8');
  return Buffer.from(text, 'utf8').equals(payload) ? JSON.stringify(text).slice(1, -1) : `base64:${payload.toString('base64')}`;
}

function formatLetter(l: DeadLetter): string {
  const where = l.output ? `rule=${l.ruleId} output=${l.output}` : `rule=${l.ruleId}`;
  const replay = l.replayAt !== undefined ? '  (replay pending)' : '';
  return `#${l.id}  ${new Date(l.time).toISOString()}  ${l.topic}  q${l.qos}  ${where}  attempts=${l.attempts}${replay}\n    error: ${l.error}\n    payload: ${payloadText(l.payload)}`;
}

function toJson(l: DeadLetter): Record<string, unknown> {
  return { ...l, time: new Date(l.time).toISOString(), payload: payloadText(l.payload) };
}
