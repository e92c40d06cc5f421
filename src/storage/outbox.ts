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

/** Rows per multi-row INSERT statement. */
const INSERT_ROWS_PER_STATEMENT = 16;
const COLUMNS = 10;

function bind(params: unknown[], o: number, [output, e]: Insert): void {
  params[o] = output;
  params[o + 1] = e.source.timestamp;
  params[o + 2] = e.ruleId;
  params[o + 3] = e.source.clientId;
  params[o + 4] = e.topic;
  params[o + 5] = e.payload;
  params[o + 6] = e.qos;
  params[o + 7] = e.retain ? 1 : 0;
  params[o + 8] = encodeProperties(e.properties);
  params[o + 9] = e.data === undefined ? null : JSON.stringify(e.data);
}

/** An outbox row kept in memory. */
type TailRow = OutboxMessage;

/**
 * The newest committed rows of one output, in memory, so a drain that keeps up reads what
 * was just committed without a SELECT (and without copying every payload back out of
 * SQLite). Every committed row of the output with seq > `floor` is in `rows[head..]`; older
 * ones are read from the database.
 */
interface Tail {
  readonly output: string;
  rows: TailRow[];
  head: number;
  floor: number;
  bytes: number;
  /** Highest seq handed out from `rows` (its rows may be in flight). */
  served: number;
  /** Inserted in the open transaction; become visible when it commits. */
  pending: TailRow[];
}

/** Payload bytes an output's in-memory tail may hold before it falls back to reading SQLite. */
export const TAIL_MAX_BYTES = 2 * 1024 * 1024;
/** Rows an output's in-memory tail may hold. */
export const TAIL_MAX_ROWS = 8192;

/**
 * The durable outboxes of all remote outputs: one FIFO per output in one table. Rows are
 * written through the group-commit batcher, in the same transaction as everything else the
 * message caused, and deleted only after the output confirmed them. Depth (rows, payload
 * bytes) is counted in memory so cap checks cost nothing per message, and the newest
 * committed rows stay in memory (bounded) for the drain to read.
 */
export class OutboxStore {
  private readonly insertRows: (rows: Insert[]) => void;
  /** Each output's DELETE in the open batch, extended while the batch is open. */
  private readonly deletes = new Map<string, { range: [string, number]; commit: Promise<void> }>();
  /** Recounts every output's depth from the table. */
  private readonly countDepths: () => void;
  /** Rows enqueued in the open batch; one batcher write inserts all of them. */
  private rows: Insert[] = [];
  private rowsCommit: Promise<void> | undefined;
  private readonly deleteUpTo: (a: [string, number]) => void;
  private readonly deleteOne: (a: [string, number]) => void;
  private readonly selectPage: BetterSqlite3.Statement<[string, number, number, number]>;
  private readonly selectOldest: BetterSqlite3.Statement<[string]>;
  private readonly bumpAttempts: BetterSqlite3.Statement<[string, number, number]>;
  private readonly depths = new Map<string, OutboxDepth>();
  /** Payload bytes of rows read from SQLite (not in a tail), so `remove` can keep depth exact. */
  private readonly sizes = new Map<string, Map<number, number>>();
  private readonly tails = new Map<string, Tail>();
  /** Tails with rows in the open transaction. */
  private readonly pendingTails = new Set<Tail>();
  /** Rows with seq at or below this were in the table before this store opened. */
  private readonly startFloor: number;

  constructor(
    db: BetterSqlite3.Database,
    private readonly batcher: WriteBatcher,
    private readonly log: Logger,
  ) {
    const sql = (n: number) =>
      `INSERT INTO outbox (output, time, rule_id, client_id, topic, payload, qos, retain, properties, data) VALUES ${Array(n).fill('(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)').join(', ')}`;
    const insertOne = db.prepare(sql(1));
    const insertMany = db.prepare(sql(INSERT_ROWS_PER_STATEMENT));
    const params: unknown[] = new Array(INSERT_ROWS_PER_STATEMENT * COLUMNS);
    // Hot path: the rows of a batch go in with multi-row INSERTs inside the batch's
    // transaction. One statement's rows get consecutive seqs (AUTOINCREMENT, one writer).
    this.insertRows = (rows) => {
      if (this.rows === rows) this.rows = [];
      let i = 0;
      for (; i + INSERT_ROWS_PER_STATEMENT <= rows.length; i += INSERT_ROWS_PER_STATEMENT) {
        for (let k = 0; k < INSERT_ROWS_PER_STATEMENT; k++) bind(params, k * COLUMNS, rows[i + k]!);
        const last = Number(insertMany.run(params).lastInsertRowid);
        for (let k = 0; k < INSERT_ROWS_PER_STATEMENT; k++) this.inserted(rows[i + k]!, last - INSERT_ROWS_PER_STATEMENT + 1 + k);
      }
      const one: unknown[] = new Array(COLUMNS);
      for (; i < rows.length; i++) {
        bind(one, 0, rows[i]!);
        this.inserted(rows[i]!, Number(insertOne.run(one).lastInsertRowid));
      }
    };
    const delUpTo = db.prepare('DELETE FROM outbox WHERE output = ? AND seq <= ?');
    this.deleteUpTo = ([output, seq]) => delUpTo.run(output, seq);
    const delOne = db.prepare('DELETE FROM outbox WHERE output = ? AND seq = ?');
    this.deleteOne = ([output, seq]) => delOne.run(output, seq);
    this.selectPage = db.prepare('SELECT seq, time, rule_id, client_id, topic, payload, qos, retain, properties, data, attempts FROM outbox WHERE output = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?');
    this.selectOldest = db.prepare('SELECT time FROM outbox WHERE output = ? ORDER BY seq LIMIT 1');
    this.bumpAttempts = db.prepare('UPDATE outbox SET attempts = attempts + 1 WHERE output = ? AND seq >= ? AND seq <= ?');
    this.countDepths = () => {
      for (const d of this.depths.values()) d.count = d.bytes = 0;
      for (const r of db.prepare('SELECT output, count(*) AS n, coalesce(sum(length(payload)), 0) AS bytes FROM outbox GROUP BY output').all() as { output: string; n: number; bytes: number }[]) {
        const d = this.depth(r.output);
        d.count = r.n;
        d.bytes = r.bytes;
      }
    };
    this.countDepths();
    this.startFloor = (db.prepare('SELECT coalesce(max(seq), 0) AS seq FROM outbox').get() as { seq: number }).seq;
    batcher.onSettled(this.onSettled);
  }

  /** A row is in the open transaction: it joins its output's tail when that commits. */
  private inserted([output, e]: Insert, seq: number): void {
    const tail = this.tail(output);
    if (tail.pending.length === 0) this.pendingTails.add(tail);
    tail.pending.push({
      seq,
      time: e.source.timestamp,
      ruleId: e.ruleId,
      clientId: e.source.clientId,
      topic: e.topic,
      payload: e.payload,
      qos: e.qos,
      retain: e.retain,
      properties: e.properties,
      // Planned data is plain JSON (it is stored as JSON), so the object itself serves.
      data: e.data,
      attempts: 0,
    });
  }

  /** Moves rows of a committed transaction into their tails; forgets those of a rolled-back one. */
  private readonly onSettled = (committed: boolean): void => {
    // A rolled-back batch took its enqueued rows with it: count again (rare: storage failed).
    if (!committed && (this.rows.length > 0 || this.pendingTails.size > 0)) this.countDepths();
    if (this.pendingTails.size === 0) return;
    for (const tail of this.pendingTails) {
      if (committed) {
        for (const row of tail.pending) this.append(tail, row);
      }
      tail.pending = [];
    }
    this.pendingTails.clear();
  };

  private append(tail: Tail, row: TailRow): void {
    if (tail.rows.length - tail.head >= TAIL_MAX_ROWS || tail.bytes + row.payload.length > TAIL_MAX_BYTES) {
      // The drain is far behind: it reads from SQLite until it catches up with this row.
      // Rows already handed out keep their size for when they are removed; the others are
      // read back from SQLite later, which records it then.
      let sizes = this.sizes.get(tail.output);
      if (!sizes) this.sizes.set(tail.output, (sizes = new Map()));
      for (let i = tail.head; i < tail.rows.length && tail.rows[i]!.seq <= tail.served; i++) sizes.set(tail.rows[i]!.seq, tail.rows[i]!.payload.length);
      tail.rows = [];
      tail.head = 0;
      tail.bytes = 0;
      tail.floor = row.seq;
      return;
    }
    tail.rows.push(row);
    tail.bytes += row.payload.length;
  }

  private tail(output: string): Tail {
    let tail = this.tails.get(output);
    if (!tail) {
      tail = { output, rows: [], head: 0, floor: this.startFloor, bytes: 0, served: 0, pending: [] };
      this.tails.set(output, tail);
    }
    return tail;
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
    // Every waiting row in the tail (the drain keeps up): the answer is in memory.
    const tail = this.tails.get(output);
    if (tail && this.depth(output).count === tail.rows.length - tail.head + tail.pending.length) {
      const first = tail.rows.length > tail.head ? tail.rows[tail.head] : tail.pending[0];
      if (first) return first.time;
    }
    return (this.selectOldest.get(output) as { time: number } | undefined)?.time;
  }

  /** Queues an effect for `output` in the current batch; resolves when committed. */
  enqueue(output: string, effect: Effect): Promise<void> {
    const d = this.depth(output);
    d.count++;
    d.bytes += effect.payload.length;
    const rows = this.rows;
    if (rows.length > 0 && this.batcher.pending() === this.rowsCommit) {
      rows.push([output, effect]);
      return this.rowsCommit!;
    }
    this.rows = [[output, effect]];
    return (this.rowsCommit = this.batcher.write(this.insertRows, this.rows));
  }

  /** Commits what is queued now, so `read` sees it. */
  flush(): void {
    this.batcher.commit();
  }

  /**
   * The oldest committed rows of `output` after `afterSeq`, at most `limit`. Served from
   * memory when the drain keeps up (the usual case); from SQLite otherwise. The caller must
   * treat the messages as read-only.
   */
  read(output: string, afterSeq: number, limit: number): OutboxMessage[] {
    const tail = this.tail(output);
    if (afterSeq >= tail.floor) {
      const rows = tail.rows;
      let i = tail.head;
      // Usually the first row is the one wanted (the drain reads on from what it confirmed).
      while (i < rows.length && rows[i]!.seq <= afterSeq) i++;
      const page = rows.slice(i, Math.min(rows.length, i + limit));
      if (page.length > 0) tail.served = Math.max(tail.served, page[page.length - 1]!.seq);
      return page;
    }
    const stored = this.readStored(output, tail, afterSeq, limit);
    if (stored.length === limit) return stored;
    // Caught up with the floor: the rest of the page comes from the tail.
    return stored.concat(this.read(output, tail.floor, limit - stored.length));
  }

  private readStored(output: string, tail: Tail, afterSeq: number, limit: number): OutboxMessage[] {
    // Only up to the floor: rows above it are read from the tail, which accounts for their bytes.
    const rows = this.selectPage.all(output, afterSeq, tail.floor, limit) as OutboxRow[];
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
    const d = this.depth(output);
    const tail = this.tail(output);
    const rows = tail.rows;
    let i = tail.head;
    while (i < rows.length && rows[i]!.seq <= seq) {
      const bytes = rows[i]!.payload.length;
      tail.bytes -= bytes;
      d.count = Math.max(0, d.count - 1);
      d.bytes = Math.max(0, d.bytes - bytes);
      rows[i] = undefined as unknown as TailRow;
      i++;
    }
    this.compact(tail, i);
    this.forgetSizes(output, (s) => s <= seq);
    // Several confirmations in one batch make one DELETE: the open one just reaches further.
    const open = this.deletes.get(output);
    if (open && this.batcher.pending() === open.commit) {
      open.range[1] = Math.max(open.range[1], seq);
      return open.commit;
    }
    const range: [string, number] = [output, seq];
    const commit = this.batcher.write(this.deleteUpTo, range);
    this.deletes.set(output, { range, commit });
    return commit;
  }

  /** Forgets one row (moved to the dead letters, or dropped). */
  removeOne(output: string, seq: number): Promise<void> {
    const tail = this.tail(output);
    const index = tail.rows.findIndex((r, i) => i >= tail.head && r.seq === seq);
    if (index !== -1) {
      const d = this.depth(output);
      const bytes = tail.rows[index]!.payload.length;
      tail.bytes -= bytes;
      d.count = Math.max(0, d.count - 1);
      d.bytes = Math.max(0, d.bytes - bytes);
      tail.rows.splice(index, 1);
    } else {
      this.forgetSizes(output, (s) => s === seq);
    }
    return this.batcher.write(this.deleteOne, [output, seq]);
  }

  /** Drops delivered rows from the front of a tail, cheaply: the array is cut only now and then. */
  private compact(tail: Tail, head: number): void {
    if (head >= tail.rows.length) {
      tail.rows = [];
      tail.head = 0;
    } else if (head > 1024 && head * 2 > tail.rows.length) {
      tail.rows = tail.rows.slice(head);
      tail.head = 0;
    } else {
      tail.head = head;
    }
  }

  private forgetSizes(output: string, which: (seq: number) => boolean): void {
    const d = this.depth(output);
    const sizes = this.sizes.get(output);
    if (!sizes || sizes.size === 0) return;
    for (const [seq, bytes] of sizes) {
      if (!which(seq)) continue;
      sizes.delete(seq);
      d.count = Math.max(0, d.count - 1);
      d.bytes = Math.max(0, d.bytes - bytes);
    }
  }

  /** Counts one more failed attempt for rows `fromSeq..toSeq` (shown in dead letters and status). */
  recordAttempt(output: string, fromSeq: number, toSeq: number): void {
    const tail = this.tails.get(output);
    if (tail) {
      for (let i = tail.head; i < tail.rows.length; i++) {
        const row = tail.rows[i]!;
        if (row.seq > toSeq) break;
        // A new object: whoever holds the old one (the drain) still sees the count it read.
        if (row.seq >= fromSeq) tail.rows[i] = { ...row, attempts: row.attempts + 1 };
      }
    }
    try {
      this.bumpAttempts.run(output, fromSeq, toSeq);
    } catch (err) {
      this.log.debug({ err, output }, 'could not record a delivery attempt');
    }
  }
}
