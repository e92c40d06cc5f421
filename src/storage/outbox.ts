import type BetterSqlite3 from 'better-sqlite3';
import type { Logger } from '../log.js';
import type { OutboxMessage } from '../outputs/connector.js';
import type { Effect } from '../outputs/types.js';
import type { WriteBatcher } from './batcher.js';
import { BATCH_COLUMNS, decodeBatch, encodeBatch, prepareInsert, storedDepths, waitingIn, type BatchRow } from './outbox-codec.js';

/** What one output's outbox holds right now. */
export interface OutboxDepth {
  count: number;
  bytes: number;
}

type Insert = [string, Effect];

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
 * The durable outboxes of all remote outputs: one FIFO per output in one table, each row
 * the messages one transaction enqueued for one output (src/storage/outbox-codec.ts). Rows
 * are written through the group-commit batcher, in the same transaction as everything else
 * the message caused, and deleted only after the output confirmed all their messages. Depth (rows, payload
 * bytes) is counted in memory so cap checks cost nothing per message, and the newest
 * committed rows stay in memory (bounded) for the drain to read.
 */
export class OutboxStore {
  private readonly insertRows: (rows: Insert[]) => void;
  /** Each output's delivered range in the open batch, extended while the batch is open. */
  private readonly deletes = new Map<string, { range: [string, number]; commit: Promise<void> }>();
  /** Rows enqueued in the open batch; one batcher write inserts all of them. */
  private rows: Insert[] = [];
  private rowsCommit: Promise<void> | undefined;
  /** Single messages to take out of their batches in the open batch, by output. */
  private removals = new Map<string, Set<number>>();
  private removalsCommit: Promise<void> | undefined;
  private readonly deleteUpTo: (a: [string, number]) => void;
  private readonly applyRemovals: () => void;
  private readonly selectFrom: BetterSqlite3.Statement<[string, number, number]>;
  private readonly selectFirst: BetterSqlite3.Statement<[string]>;
  private readonly bumpAttempts: (output: string, fromSeq: number, toSeq: number) => void;
  private readonly depths = new Map<string, OutboxDepth>();
  /** Payload bytes of rows read from SQLite (not in a tail), so `remove` can keep depth exact. */
  private readonly sizes = new Map<string, Map<number, number>>();
  private readonly tails = new Map<string, Tail>();
  /** Tails with rows in the open transaction. */
  private readonly pendingTails = new Set<Tail>();
  /** Rows with seq at or below this were in the table before this store opened. */
  private readonly startFloor: number;
  /** The seq the next enqueued message gets. */
  private nextSeq: number;

  constructor(
    private readonly db: BetterSqlite3.Database,
    private readonly batcher: WriteBatcher,
    private readonly log: Logger,
  ) {
    const insertBatch = prepareInsert(db);
    // Hot path: the messages of a transaction go in as one row per output, with consecutive
    // seqs in the order they were enqueued.
    this.insertRows = (rows) => {
      if (this.rows === rows) this.rows = [];
      if (rows.length === 0) return;
      let groups: Insert[][] = [rows];
      if (!rows.every((r) => r[0] === rows[0]![0])) {
        const byOutput = new Map<string, Insert[]>();
        for (const r of rows) {
          const group = byOutput.get(r[0]);
          if (group) group.push(r);
          else byOutput.set(r[0], [r]);
        }
        groups = [...byOutput.values()];
      }
      for (const group of groups) {
        const output = group[0]![0];
        const tail = this.tail(output);
        if (tail.pending.length === 0) this.pendingTails.add(tail);
        const messages: TailRow[] = new Array(group.length);
        for (let i = 0; i < group.length; i++) {
          const e = group[i]![1];
          // The row the tail keeps is also what gets encoded. Planned data is plain JSON (it
          // is stored as JSON), so the object itself serves.
          messages[i] = { seq: this.nextSeq++, time: e.source.timestamp, ruleId: e.ruleId, clientId: e.source.clientId, topic: e.topic, payload: e.payload, qos: e.qos, retain: e.retain, properties: e.properties, data: e.data, attempts: 0 };
        }
        tail.pending.push(...messages);
        insertBatch(output, messages);
      }
    };
    // Batches wholly delivered go; the one delivered partway remembers how far.
    const delUpTo = db.prepare('DELETE FROM outbox_batches WHERE output = ? AND last_seq <= ?');
    const markDone = db.prepare(
      'UPDATE outbox_batches SET done_seq = ? WHERE first_seq = (SELECT first_seq FROM outbox_batches WHERE output = ? AND last_seq > ? ORDER BY last_seq LIMIT 1) AND first_seq <= ?',
    );
    this.deleteUpTo = ([output, seq]) => {
      delUpTo.run(output, seq);
      markDone.run(seq, output, seq, seq);
    };
    const containing = db.prepare(`SELECT ${BATCH_COLUMNS} FROM outbox_batches WHERE output = ? AND last_seq >= ? ORDER BY last_seq LIMIT 1`);
    const rewrite = db.prepare('UPDATE outbox_batches SET count = ?, bytes = ?, oldest = ?, messages = ? WHERE first_seq = ?');
    const deleteBatch = db.prepare('DELETE FROM outbox_batches WHERE first_seq = ?');
    this.applyRemovals = () => {
      const removals = this.removals;
      this.removals = new Map();
      for (const [output, set] of removals) {
        const seqs = [...set].sort((a, b) => a - b);
        for (let i = 0; i < seqs.length; ) {
          const row = containing.get(output, seqs[i]!) as BatchRow | undefined;
          if (!row) break;
          while (i < seqs.length && seqs[i]! <= row.last_seq) i++;
          const all = decodeBatch(row.messages, row.first_seq, row.attempts);
          const kept = all.filter((m) => !set.has(m.seq));
          if (kept.length === all.length) continue;
          if (kept.every((m) => m.seq <= row.done_seq)) {
            deleteBatch.run(row.first_seq);
            continue;
          }
          let bytes = 0;
          for (const m of kept) bytes += m.payload.length;
          rewrite.run(kept.length, bytes, kept[0]!.time, encodeBatch(kept, row.first_seq), row.first_seq);
        }
      }
    };
    this.selectFrom = db.prepare(`SELECT ${BATCH_COLUMNS} FROM outbox_batches WHERE output = ? AND last_seq > ? AND first_seq <= ? ORDER BY last_seq`);
    this.selectFirst = db.prepare(`SELECT ${BATCH_COLUMNS} FROM outbox_batches WHERE output = ? ORDER BY last_seq LIMIT 1`);
    // Attempts are counted per batch; the batches a range touches lie between the first
    // one reaching it and its end (first_seq is the rowid, so that is a short range scan).
    const bump = db.prepare(
      'UPDATE outbox_batches SET attempts = attempts + 1 WHERE output = ? AND first_seq <= ? AND first_seq >= (SELECT first_seq FROM outbox_batches WHERE output = ? AND last_seq >= ? ORDER BY last_seq LIMIT 1)',
    );
    this.bumpAttempts = (output, fromSeq, toSeq) => bump.run(output, toSeq, output, fromSeq);
    this.countDepths();
    const newest = db.prepare('SELECT last_seq FROM outbox_batches ORDER BY first_seq DESC LIMIT 1').get() as { last_seq: number } | undefined;
    this.startFloor = newest?.last_seq ?? 0;
    this.nextSeq = this.startFloor + 1;
    batcher.onSettled(this.onSettled);
  }

  /** Recounts every output's depth from the table. */
  private countDepths(): void {
    for (const d of this.depths.values()) d.count = d.bytes = 0;
    for (const [output, stored] of storedDepths(this.db)) {
      const d = this.depth(output);
      d.count = stored.count;
      d.bytes = stored.bytes;
    }
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
    const first = this.selectFirst.get(output) as BatchRow | undefined;
    return first ? waitingIn(first)[0]?.time : undefined;
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
    const page: OutboxMessage[] = [];
    for (const row of this.selectFrom.iterate(output, afterSeq, tail.floor) as IterableIterator<BatchRow>) {
      const from = Math.max(afterSeq, row.done_seq);
      for (const m of decodeBatch(row.messages, row.first_seq, row.attempts)) {
        if (m.seq <= from || m.seq > tail.floor) continue;
        page.push(m);
        if (page.length === limit) break;
      }
      if (page.length === limit) break;
    }
    let sizes = this.sizes.get(output);
    if (!sizes) this.sizes.set(output, (sizes = new Map()));
    for (const m of page) sizes.set(m.seq, m.payload.length);
    return page;
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
    this.forgetSizes(output, seq);
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
      this.forgetSizes(output, seq, seq);
    }
    // Every removal of one batch rewrites each batch it touches once.
    let set = this.removals.get(output);
    if (!set) this.removals.set(output, (set = new Set()));
    set.add(seq);
    if (this.removalsCommit !== undefined && this.batcher.pending() === this.removalsCommit) return this.removalsCommit;
    return (this.removalsCommit = this.batcher.write(this.applyRemovals, undefined));
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

  /**
   * Forgets the recorded sizes of `output`'s rows up to `upTo` (`only`: just that one) and
   * takes them off its depth. Sizes are recorded as rows are read, in seq order, so the
   * walk stops at the first one beyond `upTo`.
   */
  private forgetSizes(output: string, upTo: number, only?: number): void {
    const d = this.depth(output);
    const sizes = this.sizes.get(output);
    if (!sizes || sizes.size === 0) return;
    const forget = (seq: number, bytes: number) => {
      sizes.delete(seq);
      d.count = Math.max(0, d.count - 1);
      d.bytes = Math.max(0, d.bytes - bytes);
    };
    if (only !== undefined) {
      const bytes = sizes.get(only);
      if (bytes !== undefined) forget(only, bytes);
      return;
    }
    for (const [seq, bytes] of sizes) {
      if (seq > upTo) break;
      forget(seq, bytes);
    }
  }


  /**
   * Counts one more failed attempt for rows `fromSeq..toSeq` (shown in dead letters and
   * status). On disk the count is kept per batch: a message read back from SQLite shows its
   * batch's.
   */
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
      this.bumpAttempts(output, fromSeq, toSeq);
    } catch (err) {
      this.log.debug({ err, output }, 'could not record a delivery attempt');
    }
  }
}
