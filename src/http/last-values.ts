import type { Logger } from '../log.js';
import type { HistoryRow } from '../storage/history.js';
import { matchesFilter } from '../topics/match.js';

/**
 * Bytes an entry costs beyond its topic and payload (the row object, the Map entry), so
 * `maxBytes` bounds the memory of many tiny messages too. An estimate.
 */
const ENTRY_OVERHEAD_BYTES = 160;
/** Topics read from the database per event-loop turn while seeding. */
const SEED_CHUNK_TOPICS = 500;

/** Options of {@link LastValueCache}. */
export interface LastValueCacheOptions {
  /** Most topics kept. */
  maxTopics: number;
  /** Most bytes kept (topics, payloads and a per-entry overhead). */
  maxBytes: number;
}

/** Counters of a {@link LastValueCache}. */
export interface LastValueStats {
  /** Topics evicted (least recently updated first) to stay within maxTopics and maxBytes. */
  evicted: number;
  /** Topics read from the database at start. */
  seeded: number;
}

/** Where {@link LastValueCache.seed} reads the newest row of each topic. */
export interface LatestRowSource {
  latestPerTopic(afterTopic: string, limit: number): HistoryRow[];
}

function entryBytes(row: HistoryRow): number {
  return ENTRY_OVERHEAD_BYTES + row.topic.length + row.payload.length;
}

/**
 * A buffer that owns its memory. Small payloads are slices of Node's shared 8 KiB pool;
 * keeping such a slice for a long time would keep the whole pool block alive with it.
 */
function ownBytes(payload: Buffer): Buffer {
  if (payload.byteOffset === 0 && payload.buffer.byteLength === payload.length) return payload;
  const copy = Buffer.allocUnsafeSlow(payload.length);
  payload.copy(copy);
  return copy;
}

/**
 * The newest stored message of each topic, in memory, for `GET /api/last`: fed by the
 * history store after each commit (so it holds what rules stored with `history`, and only
 * once it is on disk), seeded from the database at start. Bounded by topics and bytes; the
 * least recently updated topic is evicted first, and evictions are counted.
 */
export class LastValueCache {
  private readonly entries = new Map<string, HistoryRow>();
  private bytes = 0;
  private closed = false;
  /** Reused by {@link storedRows} for each commit. */
  private readonly seenInBatch = new Set<string>();
  private readonly newestInBatch: HistoryRow[] = [];
  readonly stats: LastValueStats = { evicted: 0, seeded: 0 };

  constructor(private readonly options: LastValueCacheOptions) {
    if (!(options.maxTopics >= 1) || !(options.maxBytes >= 1)) throw new RangeError(`last-value cache limits must be positive, got ${options.maxTopics} topics and ${options.maxBytes} bytes`);
  }

  /** Topics held now. */
  get size(): number {
    return this.entries.size;
  }

  /** Approximate bytes held now. */
  get heldBytes(): number {
    return this.bytes;
  }

  /**
   * Records the rows of one commit (the history store's `onStored`). Hot path: O(1) per row.
   * The rows are walked newest first and only each topic's newest is kept (one Set lookup per
   * row), so a topic written many times in one commit costs one Map update and at most one
   * payload copy, not one per row.
   */
  readonly storedRows = (rows: readonly HistoryRow[]): void => {
    if (rows.length === 1) {
      this.set(rows[0]!);
      return;
    }
    const seen = this.seenInBatch;
    const newest = this.newestInBatch;
    for (let i = rows.length - 1; i >= 0; i--) {
      const row = rows[i]!;
      if (seen.has(row.topic)) continue;
      seen.add(row.topic);
      newest.push(row);
    }
    // Set in commit order, so the least recently updated is still evicted first.
    for (let i = newest.length - 1; i >= 0; i--) this.set(newest[i]!);
    seen.clear();
    newest.length = 0;
  };

  /** Keeps `row` as its topic's last value unless a newer one is held. */
  set(row: HistoryRow): void {
    const old = this.entries.get(row.topic);
    if (old !== undefined) {
      // A replayed or bridged message can carry an older time than the one held.
      if (row.time < old.time) return;
      this.bytes -= entryBytes(old);
      // Delete and set again: the Map's order is then least recently updated first.
      this.entries.delete(row.topic);
    }
    const kept = row.payload.byteOffset === 0 && row.payload.buffer.byteLength === row.payload.length ? row : { ...row, payload: ownBytes(row.payload) };
    this.entries.set(row.topic, kept);
    this.bytes += entryBytes(kept);
    if (this.entries.size > this.options.maxTopics || this.bytes > this.options.maxBytes) this.evict();
  }

  /** The last value of one topic. */
  get(topic: string): HistoryRow | undefined {
    return this.entries.get(topic);
  }

  /**
   * The last values of the topics matching `filter`, sorted by topic, at most `limit`, and how
   * many matched in all. An exact topic is one lookup; a wildcard filter checks every topic
   * held (at most maxTopics).
   */
  match(filter: string, limit: number): { rows: HistoryRow[]; matched: number } {
    if (!filter.includes('+') && !filter.includes('#')) {
      const row = this.entries.get(filter);
      return { rows: row ? [row] : [], matched: row ? 1 : 0 };
    }
    const rows: HistoryRow[] = [];
    for (const row of this.entries.values()) if (matchesFilter(filter, row.topic)) rows.push(row);
    rows.sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0));
    return { rows: rows.length > limit ? rows.slice(0, limit) : rows, matched: rows.length };
  }

  /**
   * Fills the cache with the newest stored row of each topic, a chunk of topics per
   * event-loop turn so the broker keeps running. Topics already held (stored since start) keep
   * their newer value. Stops when the cache is full (topics beyond it are not read: they would
   * evict each other) or closed. Resolves with the topics read; logs and resolves on a
   * storage error.
   */
  async seed(source: LatestRowSource, log: Logger): Promise<number> {
    let after = '';
    try {
      for (;;) {
        if (this.closed) return this.stats.seeded;
        // '' sorts before every topic but is itself not one (topics are never empty).
        const rows = source.latestPerTopic(after, SEED_CHUNK_TOPICS);
        for (const row of rows) {
          if (this.entries.size >= this.options.maxTopics || this.bytes + entryBytes(row) > this.options.maxBytes) {
            log.warn({ topics: this.entries.size, maxTopics: this.options.maxTopics, maxBytes: this.options.maxBytes }, 'last values: the cache is full; the remaining stored topics were not loaded');
            return this.stats.seeded;
          }
          if (!this.entries.has(row.topic)) {
            this.set(row);
            this.stats.seeded++;
          }
        }
        if (rows.length < SEED_CHUNK_TOPICS) return this.stats.seeded;
        after = rows[rows.length - 1]!.topic;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (err) {
      log.error({ err, seeded: this.stats.seeded }, 'last values: could not load the stored ones; serving what arrives from now on');
      return this.stats.seeded;
    }
  }

  /** Stops a seed in progress and forgets everything. */
  close(): void {
    this.closed = true;
    this.entries.clear();
    this.bytes = 0;
  }

  private evict(): void {
    while (this.entries.size > 0 && (this.entries.size > this.options.maxTopics || this.bytes > this.options.maxBytes)) {
      const oldest = this.entries.keys().next().value as string;
      this.bytes -= entryBytes(this.entries.get(oldest)!);
      this.entries.delete(oldest);
      this.stats.evicted++;
    }
  }
}
