import type BetterSqlite3 from 'better-sqlite3';
import type { QoS } from '../broker/types.js';
import type { OutboxMessage } from '../outputs/connector.js';
import { decodeProperties, encodeProperties, type MessageColumns } from './broker-state.js';

// The outbox stores the messages one transaction enqueued for one output together, in one
// row of `outbox_batches` whose `messages` column is the encoding below: one b-tree insert
// and one delete per batch instead of per message, which is most of what the outbox costs
// per message under load. Every message is, back to back, little-endian:
//   u32 seq - first_seq   f64 time   u8 flags (qos | retain << 2 | properties << 3 | data << 4)
//   u32 length + UTF-8 rule id, client id, topic   u32 length + payload
//   [u32 length + properties as JSON]   [u32 length + data as JSON]

const FIXED_BYTES = 4 + 8 + 1 + 4 * 4;
const RETAIN = 4;
const HAS_PROPERTIES = 8;
const HAS_DATA = 16;

/** Encodes `messages` (one output's, in seq order, none below `first`) as one batch. */
export function encodeBatch(messages: readonly OutboxMessage[], first: number): Buffer {
  let size = 0;
  // Properties and planned data as JSON, two per message, made only when a message has any.
  let json: (string | null)[] | undefined;
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    size += FIXED_BYTES + Buffer.byteLength(m.ruleId) + Buffer.byteLength(m.clientId) + Buffer.byteLength(m.topic) + m.payload.length;
    if (m.properties === undefined && m.data === undefined) continue;
    json ??= new Array<string | null>(messages.length * 2).fill(null);
    const properties = (json[2 * i] = encodeProperties(m.properties));
    const data = (json[2 * i + 1] = m.data === undefined ? null : JSON.stringify(m.data));
    if (properties !== null) size += 4 + Buffer.byteLength(properties);
    if (data !== null) size += 4 + Buffer.byteLength(data);
  }
  const buf = Buffer.allocUnsafe(size);
  let o = 0;
  const text = (s: string) => {
    const n = buf.write(s, o + 4);
    buf.writeUInt32LE(n, o);
    o += 4 + n;
  };
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i]!;
    const properties = json?.[2 * i] ?? null;
    const data = json?.[2 * i + 1] ?? null;
    o = buf.writeUInt32LE(m.seq - first, o);
    o = buf.writeDoubleLE(m.time, o);
    o = buf.writeUInt8(m.qos | (m.retain ? RETAIN : 0) | (properties !== null ? HAS_PROPERTIES : 0) | (data !== null ? HAS_DATA : 0), o);
    text(m.ruleId);
    text(m.clientId);
    text(m.topic);
    o = buf.writeUInt32LE(m.payload.length, o);
    o += m.payload.copy(buf, o);
    if (properties !== null) text(properties);
    if (data !== null) text(data);
  }
  return buf;
}

/** A stored batch's messages, decoded, with `attempts` as the batch recorded them. */
export function decodeBatch(buf: Buffer, first: number, attempts: number): OutboxMessage[] {
  const out: OutboxMessage[] = [];
  let o = 0;
  const text = () => {
    const n = buf.readUInt32LE(o);
    o += 4 + n;
    return buf.toString('utf8', o - n, o);
  };
  while (o < buf.length) {
    const seq = first + buf.readUInt32LE(o);
    const time = buf.readDoubleLE(o + 4);
    const flags = buf[o + 12]!;
    o += 13;
    const ruleId = text();
    const clientId = text();
    const topic = text();
    const length = buf.readUInt32LE(o);
    // A copy: the message outlives the row's buffer, which may be large.
    const payload = Buffer.from(buf.subarray(o + 4, o + 4 + length));
    o += 4 + length;
    const properties = flags & HAS_PROPERTIES ? decodeProperties(text()) : undefined;
    const data = flags & HAS_DATA ? (JSON.parse(text()) as unknown) : undefined;
    out.push({ seq, time, ruleId, clientId, topic, payload, qos: (flags & 3) as QoS, retain: (flags & RETAIN) !== 0, properties, data, attempts });
  }
  return out;
}

/** The columns of a {@link BatchRow}, for SELECTs. */
export const BATCH_COLUMNS = 'output, first_seq, last_seq, done_seq, attempts, messages';

/** A row of `outbox_batches`. */
export interface BatchRow {
  output: string;
  first_seq: number;
  last_seq: number;
  /** Messages of the batch at or below this seq were delivered (0: none). */
  done_seq: number;
  attempts: number;
  messages: Buffer;
}

/** The messages of `row` still waiting (those after `done_seq`). */
export function waitingIn(row: BatchRow): OutboxMessage[] {
  const all = decodeBatch(row.messages, row.first_seq, row.attempts);
  return row.done_seq < row.first_seq ? all : all.filter((m) => m.seq > row.done_seq);
}

/** What waits in one output's outbox on disk. */
export interface StoredDepth {
  count: number;
  bytes: number;
  /** When the oldest waiting message arrived (ms), or null when none waits. */
  oldest: number | null;
}

/**
 * Every output's waiting messages, payload bytes and oldest message, read from the table
 * (for `signalbox status` and for the store at startup). Sums the batches' counts; only a
 * batch that was partly delivered is decoded.
 */
export function storedDepths(db: BetterSqlite3.Database): Map<string, StoredDepth> {
  const depths = new Map<string, StoredDepth>();
  const whole = db.prepare('SELECT output, sum(count) AS n, sum(bytes) AS bytes, min(oldest) AS oldest FROM outbox_batches WHERE done_seq < first_seq GROUP BY output').all() as { output: string; n: number; bytes: number; oldest: number }[];
  for (const r of whole) depths.set(r.output, { count: r.n, bytes: r.bytes, oldest: r.oldest });
  const partial = db.prepare(`SELECT ${BATCH_COLUMNS} FROM outbox_batches WHERE done_seq >= first_seq`).all() as BatchRow[];
  for (const row of partial) {
    const waiting = waitingIn(row);
    if (waiting.length === 0) continue;
    let d = depths.get(row.output);
    if (!d) depths.set(row.output, (d = { count: 0, bytes: 0, oldest: null }));
    d.count += waiting.length;
    for (const m of waiting) d.bytes += m.payload.length;
    d.oldest = d.oldest === null ? waiting[0]!.time : Math.min(d.oldest, waiting[0]!.time);
  }
  return depths;
}

/** Every message waiting for `output` in the table, in order (for tools and tests). */
export function storedMessages(db: BetterSqlite3.Database, output: string): OutboxMessage[] {
  const rows = db.prepare(`SELECT ${BATCH_COLUMNS} FROM outbox_batches WHERE output = ? ORDER BY last_seq`).all(output) as BatchRow[];
  return rows.flatMap(waitingIn);
}

/** Messages per batch when rows of the per-message outbox table are moved into batches. */
const LEGACY_BATCH = 1000;

interface LegacyRow extends MessageColumns {
  seq: number;
  output: string;
  time: number;
  rule_id: string;
  client_id: string;
  data: string | null;
  attempts: number;
}

/**
 * Moves every row of the per-message `outbox` table (schema 3 and 4) into `outbox_batches`,
 * keeping seqs and order, then drops that table. Runs inside the migration's transaction.
 */
export function moveLegacyOutbox(db: BetterSqlite3.Database): void {
  const page = db.prepare('SELECT * FROM outbox WHERE seq > ? ORDER BY seq LIMIT 5000');
  const insert = prepareInsert(db);
  const open = new Map<string, { messages: OutboxMessage[]; attempts: number }>();
  const flush = (output: string) => {
    const b = open.get(output);
    if (!b || b.messages.length === 0) return;
    insert(output, b.messages, b.attempts);
    open.delete(output);
  };
  let after = 0;
  for (let rows = page.all(after) as LegacyRow[]; rows.length > 0; rows = page.all(after) as LegacyRow[]) {
    for (const r of rows) {
      let b = open.get(r.output);
      if (!b) open.set(r.output, (b = { messages: [], attempts: 0 }));
      b.messages.push({
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
      });
      b.attempts = Math.max(b.attempts, r.attempts);
      if (b.messages.length >= LEGACY_BATCH) flush(r.output);
      after = r.seq;
    }
  }
  for (const output of [...open.keys()]) flush(output);
  db.exec('DROP TABLE outbox');
}

/** A function that stores one batch of `output`'s messages (in seq order) as one row. */
export function prepareInsert(db: BetterSqlite3.Database): (output: string, messages: readonly OutboxMessage[], attempts?: number) => void {
  const insert = db.prepare('INSERT INTO outbox_batches (first_seq, output, last_seq, count, bytes, oldest, attempts, messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
  return (output, messages, attempts = 0) => {
    let bytes = 0;
    for (const m of messages) bytes += m.payload.length;
    const first = messages[0]!.seq;
    insert.run(first, output, messages[messages.length - 1]!.seq, messages.length, bytes, messages[0]!.time, attempts, encodeBatch(messages, first));
  };
}
