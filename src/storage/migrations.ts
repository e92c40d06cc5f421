import type BetterSqlite3 from 'better-sqlite3';
import type { Logger } from '../log.js';
import { StorageError, toStorageError } from './errors.js';
import { moveLegacyOutbox } from './outbox-codec.js';

/**
 * One schema step. `id` is the `PRAGMA user_version` the database has once `sql` ran; ids
 * start at 1 and go up by one. A released migration is never edited: change the schema by
 * appending a new one.
 */
export interface Migration {
  readonly id: number;
  /** What it does, for the log. */
  readonly name: string;
  /** One or more SQL statements, run inside the migration's transaction. */
  readonly sql: string;
  /** Runs after `sql`, in the same transaction: for data SQL alone cannot move. */
  readonly run?: (db: BetterSqlite3.Database) => void;
}

/**
 * The signalbox schema, in order. Broker state (retained messages, sessions) and the durable
 * outboxes join as further entries; everything shares one database so one transaction can
 * cover all a message caused.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    id: 1,
    name: 'history and dead letters',
    sql: `
      -- Messages a rule's history output stored. time is milliseconds since the epoch.
      -- No AUTOINCREMENT: ids only need to be unique and increasing for the newest rows,
      -- and retention deletes the oldest, so the cheaper rowid allocation is enough.
      CREATE TABLE history (
        id INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        rule_id TEXT NOT NULL,
        client_id TEXT NOT NULL
      );
      -- "this topic (or topic prefix) over this time range", newest first.
      CREATE INDEX history_topic_time ON history (topic, time);
      -- "everything over this time range", and retention deleting the oldest rows.
      CREATE INDEX history_time ON history (time);

      -- Poison messages: the rule and output that failed, the error, and the message.
      -- AUTOINCREMENT so an id an operator listed never names a different letter later.
      CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        rule_id TEXT NOT NULL,
        output TEXT,
        error TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        client_id TEXT NOT NULL,
        attempts INTEGER NOT NULL
      );
      CREATE INDEX dead_letters_rule ON dead_letters (rule_id, id);
    `,
  },
  {
    id: 2,
    name: 'broker state: retained messages and persistent sessions',
    sql: `
      -- One retained message per topic. properties is MQTT 5 properties as JSON.
      CREATE TABLE retained (
        topic TEXT PRIMARY KEY,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        properties TEXT,
        client_id TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        expires_at INTEGER
      );
      -- Persistent sessions (clean sessions are never stored). disconnected_at is NULL while
      -- connected; the session ends expiry_s seconds after it.
      CREATE TABLE sessions (
        client_id TEXT PRIMARY KEY,
        expiry_s INTEGER NOT NULL,
        disconnected_at INTEGER
      );
      CREATE TABLE subscriptions (
        client_id TEXT NOT NULL REFERENCES sessions (client_id) ON DELETE CASCADE,
        filter TEXT NOT NULL,
        qos INTEGER NOT NULL,
        no_local INTEGER NOT NULL,
        retain_as_published INTEGER NOT NULL,
        retain_handling INTEGER NOT NULL,
        subscription_id INTEGER,
        PRIMARY KEY (client_id, filter)
      );
      -- QoS 1/2 messages owed to a session: queued, or sent and not yet acknowledged.
      CREATE TABLE session_messages (
        client_id TEXT NOT NULL REFERENCES sessions (client_id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        packet_id INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        subscription_ids TEXT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        message_qos INTEGER NOT NULL,
        message_retain INTEGER NOT NULL,
        properties TEXT,
        origin_client_id TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        expires_at INTEGER,
        hops INTEGER NOT NULL,
        PRIMARY KEY (client_id, seq)
      );
      -- Inbound QoS 2 packet ids acknowledged with PUBREC, waiting for PUBREL.
      CREATE TABLE inbound_qos2 (
        client_id TEXT NOT NULL REFERENCES sessions (client_id) ON DELETE CASCADE,
        packet_id INTEGER NOT NULL,
        PRIMARY KEY (client_id, packet_id)
      );
      -- A will waiting for its Will Delay Interval.
      CREATE TABLE wills (
        client_id TEXT PRIMARY KEY REFERENCES sessions (client_id) ON DELETE CASCADE,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties TEXT,
        username TEXT,
        protocol_version INTEGER NOT NULL,
        publish_at INTEGER NOT NULL
      );
    `,
  },
  {
    id: 3,
    name: 'durable outboxes and dead-letter replay',
    sql: `
      -- One FIFO per named remote output. Rows leave only when the output confirmed them.
      -- AUTOINCREMENT keeps seq increasing even after the newest rows were deleted, which
      -- the FIFO order depends on.
      CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        output TEXT NOT NULL,
        time INTEGER NOT NULL,
        rule_id TEXT NOT NULL,
        client_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        properties TEXT,
        data TEXT,
        attempts INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX outbox_output_seq ON outbox (output, seq);
      -- Set by \`signalbox dead-letters replay\`; the running server redrives the letter.
      ALTER TABLE dead_letters ADD COLUMN replay_at INTEGER;
      ALTER TABLE dead_letters ADD COLUMN data TEXT;
      CREATE INDEX dead_letters_replay ON dead_letters (replay_at) WHERE replay_at IS NOT NULL;
    `,
  },
  {
    id: 4,
    name: 'sessions remember their user',
    sql: `
      -- Only the user who owns a session may resume or take it over. username is NULL for an
      -- anonymous client; owner_known is 0 for sessions stored before owners were recorded,
      -- which are discarded rather than handed to an authenticated user.
      ALTER TABLE sessions ADD COLUMN username TEXT;
      ALTER TABLE sessions ADD COLUMN owner_known INTEGER NOT NULL DEFAULT 0;
    `,
  },
  {
    id: 5,
    name: 'outbox messages stored in batches',
    sql: `
      -- The messages one transaction enqueued for one output, encoded together (see
      -- src/storage/outbox-codec.ts): a b-tree insert and delete per batch, not per message.
      -- Seqs are unique across outputs; first_seq..last_seq is the batch's range.
      CREATE TABLE outbox_batches (
        first_seq INTEGER PRIMARY KEY,
        output TEXT NOT NULL,
        last_seq INTEGER NOT NULL,
        -- The batch's messages at or below done_seq were delivered (set while it is partly
        -- delivered; 0 before).
        done_seq INTEGER NOT NULL DEFAULT 0,
        -- Messages in the batch, their payload bytes, and when the first arrived (ms).
        count INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        oldest INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        messages BLOB NOT NULL
      );
      CREATE INDEX outbox_batches_output ON outbox_batches (output, last_seq);
    `,
    // The rows of the per-message table move into batches, seqs kept; then it goes.
    run: moveLegacyOutbox,
  },
];

/** The schema version this code writes: the id of the last migration. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.id;

/** Where a {@link migrate} call started and ended. */
export interface MigrationResult {
  from: number;
  to: number;
}

/** Throws unless ids are 1, 2, 3, …: a gap or a duplicate is a programming error. */
function checkOrder(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.id !== i + 1) throw new Error(`migration ${i} has id ${m.id}; ids must be 1, 2, 3, … in order`);
  });
}

/**
 * Brings `db` to the last of `migrations`, each in its own `BEGIN IMMEDIATE` transaction that
 * also sets `user_version`, so a failed step leaves the previous version intact and a second
 * process migrating at the same time waits instead of applying a step twice.
 *
 * Called by `openDatabase`. Throws a {@link StorageError}: `SB_ERR_STORAGE_VERSION` when the
 * database is newer than `migrations` (the caller must not use it), or the mapped SQLite
 * error when a step fails (the database stays at the last good version).
 */
export function migrate(
  db: BetterSqlite3.Database,
  options: { file: string; log: Logger; migrations?: readonly Migration[] },
): MigrationResult {
  const { file, log } = options;
  const migrations = options.migrations ?? MIGRATIONS;
  checkOrder(migrations);
  const latest = migrations.length;
  const readVersion = (): number => db.pragma('user_version', { simple: true }) as number;

  const from = readVersion();
  if (from > latest) {
    throw new StorageError(
      'SB_ERR_STORAGE_VERSION',
      `${file}: database schema version ${from} is newer than this signalbox supports (${latest}); ` +
        'upgrade signalbox, or restore a backup made with this version',
      { file, retryable: false },
    );
  }
  let version = from;
  for (const m of migrations.slice(from)) {
    const step = db.transaction(() => {
      // Re-read under the write lock: another process may have migrated meanwhile.
      if (readVersion() >= m.id) return false;
      db.exec(m.sql);
      m.run?.(db);
      // user_version lives in the database header, so it commits or rolls back with the step.
      db.pragma(`user_version = ${m.id}`);
      return true;
    });
    let applied: boolean;
    try {
      applied = step.immediate();
    } catch (err) {
      const e = toStorageError(err, file);
      log.error({ err: e, file, migration: m.id }, `schema migration ${m.id} (${m.name}) failed`);
      throw e;
    }
    version = m.id;
    if (applied) log.info({ file, migration: m.id }, `applied schema migration ${m.id}: ${m.name}`);
  }
  return { from, to: version };
}
