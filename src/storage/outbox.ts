import type BetterSqlite3 from 'better-sqlite3';
import type { QoS } from '../broker/types.js';
import type { Logger } from '../log.js';
import type { OutboxMessage } from '../outputs/connector.js';
import type { Effect } from '../outputs/types.js';
import type { WriteBatcher } from './batcher.js';
import { decodeProperties, encodeProperties } from './broker-state.js';

interface OutboxRow {
  seq: number;
  time: number;
  rule_id: string;
  client_id: string;
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  properties: string | null;
  data: string | null;
  attempts: number;
}

/** What one output's outbox holds right now. */
export interface OutboxDepth {
  count: number;
  bytes: number;
}

type Insert = [string, Effect];

/**
 * The durable outboxes of all remote outputs: one FIFO per output in one table. Rows are
 * written through the group-commit batcher, in the same transaction as everything else the
 * message caused, and deleted only after the output confirmed them. Depth (rows, payload
 * bytes) is counted in memory so cap checks cost nothing per message.
 */
export class OutboxStore {
  private readonly insertRow: (a: Insert) => void;
  private readonly deleteUpTo: (a: [string, number]) => void;
  private readonly deleteOne: (a: [string, number]) => void;
  private readonly selectPage: BetterSqlite3.Statement<[string, number, number]>;
  private readonly selectOldest: BetterSqlite3.Statement<[string]>;
  private readonly bumpAttempts: BetterSqlite3.Statement<[string, number, number]>;
  private readonly depths = new Map<string, OutboxDepth>();
  /** Payload bytes of rows in flight towards deletion, so `remove` can keep depth exact. */
  private readonly sizes = new Map<string, Map<number, number>>();

  constructor(
    db: BetterSqlite3.Database,
    private readonly batcher: WriteBatcher,
    private readonly log: Logger,
  ) {
    const insert = db.prepare(
      'INSERT INTO outbox (output, time, rule_id, client_id, topic, payload, qos, retain, properties, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.insertRow = ([output, e]) =>
      insert.run(output, e.source.timestamp, e.ruleId, e.source.clientId, e.topic, e.payload, e.qos, e.retain ? 1 : 0, encodeProperties(e.properties), e.data === undefined ? null : JSON.stringify(e.data));
    const delUpTo = db.prepare('DELETE FROM outbox WHERE output = ? AND seq <= ?');
    this.deleteUpTo = ([output, seq]) => delUpTo.run(output, seq);
    const delOne = db.prepare('DELETE FROM outbox WHERE output = ? AND seq = ?');
    this.deleteOne = ([output, seq]) => delOne.run(output, seq);
    this.selectPage = db.prepare('SELECT seq, time, rule_id, client_id, topic, payload, qos, retain, properties, data, attempts FROM outbox WHERE output = ? AND seq > ? ORDER BY seq LIMIT ?');
    this.selectOldest = db.prepare('SELECT time FROM outbox WHERE output = ? ORDER BY seq LIMIT 1');
    this.bumpAttempts = db.prepare('UPDATE outbox SET attempts = attempts + 1 WHERE output = ? AND seq >= ? AND seq <= ?');
    for (const r of db.prepare('SELECT output, count(*) AS n, coalesce(sum(length(payload)), 0) AS bytes FROM outbox GROUP BY output').all() as { output: string; n: number; bytes: number }[]) {
      this.depths.set(r.output, { count: r.n, bytes: r.bytes });
    }
  }

  /** Rows and payload bytes waiting for `output`. */
  depth(output: string): OutboxDepth {
    let d = this.depths.get(output);
    if (!d) {
      d = { count: 0, bytes: 0 };
      this.depths.set(output, d);
    }
    return d;
  }

  /** When the oldest waiting message of `output` arrived (ms), or undefined when empty. */
  oldestTime(output: string): number | undefined {
    return (this.selectOldest.get(output) as { time: number } | undefined)?.time;
  }

  /** Queues an effect for `output` in the current batch; resolves when committed. */
  enqueue(output: string, effect: Effect): Promise<void> {
    const d = this.depth(output);
    d.count++;
    d.bytes += effect.payload.length;
    return this.batcher.write(this.insertRow, [output, effect]);
  }

  /** Commits what is queued now, so `read` sees it. */
  flush(): void {
    this.batcher.commit();
  }

  /** The oldest committed rows of `output` after `afterSeq`, at most `limit`. */
  read(output: string, afterSeq: number, limit: number): OutboxMessage[] {
    const rows = this.selectPage.all(output, afterSeq, limit) as OutboxRow[];
    let sizes = this.sizes.get(output);
    if (!sizes) this.sizes.set(output, (sizes = new Map()));
    return rows.map((r) => {
      sizes.set(r.seq, r.payload.length);
      return {
        seq: r.seq,
        time: r.time,
        ruleId: r.rule_id,
        clientId: r.client_id,
        topic: r.topic,
        payload: r.payload,
        qos: r.qos as QoS,
        retain: r.retain !== 0,
        properties: decodeProperties(r.properties),
        data: r.data === null ? undefined : (JSON.parse(r.data) as unknown),
        attempts: r.attempts,
      };
    });
  }

  /** Forgets delivered rows of `output` up to and including `seq` (they were read in order). */
  removeUpTo(output: string, seq: number): Promise<void> {
    this.forgetSizes(output, (s) => s <= seq);
    return this.batcher.write(this.deleteUpTo, [output, seq]);
  }

  /** Forgets one row (moved to the dead letters, or dropped). */
  removeOne(output: string, seq: number): Promise<void> {
    this.forgetSizes(output, (s) => s === seq);
    return this.batcher.write(this.deleteOne, [output, seq]);
  }

  private forgetSizes(output: string, which: (seq: number) => boolean): void {
    const d = this.depth(output);
    const sizes = this.sizes.get(output);
    if (!sizes) return;
    for (const [seq, bytes] of sizes) {
      if (!which(seq)) continue;
      sizes.delete(seq);
      d.count = Math.max(0, d.count - 1);
      d.bytes = Math.max(0, d.bytes - bytes);
    }
  }

  /** Counts one more failed attempt for rows `fromSeq..toSeq` (shown in dead letters and status). */
  recordAttempt(output: string, fromSeq: number, toSeq: number): void {
    try {
      this.bumpAttempts.run(output, fromSeq, toSeq);
    } catch (err) {
      this.log.debug({ err, output }, 'could not record a delivery attempt');
    }
  }
}
