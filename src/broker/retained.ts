import { matchesFilter } from '../topics/match.js';
import type { Message } from './types.js';

/** What one retained message counts against `maxRetainedBytes`: payload plus topic, in bytes. */
function sizeOf(message: Message): number {
  return message.payload.length + Buffer.byteLength(message.topic);
}

/**
 * Retained messages, one per topic. Held in memory; the storage layer makes them durable
 * by implementing the same three operations. Bounded by a count and a byte total: a new topic
 * beyond them is refused (see {@link admits}); replacing or clearing a topic always works.
 */
export class RetainedStore {
  private readonly byTopic = new Map<string, Message>();
  /** Bytes (see sizeOf) of the messages in byTopic. */
  private bytes = 0;
  /** Bytes of the messages in pending. */
  private pendingBytes = 0;
  /**
   * Retained messages accepted but not yet committed to storage. A subscriber arriving in
   * between sees them (so it misses neither the live copy nor the retained one); they
   * become the stored value on commit and vanish if the commit fails.
   */
  private readonly pending = new Map<string, Message>();

  constructor(
    private readonly maxCount = Number.POSITIVE_INFINITY,
    private readonly maxBytes = Number.POSITIVE_INFINITY,
  ) {}

  /**
   * Whether `message` may be retained: always when it replaces or clears a topic already
   * retained (or on its way), otherwise only when one more message of its size stays within
   * the count and byte caps. Messages still waiting for their commit count as held.
   */
  admits(message: Message): boolean {
    if (message.payload.length === 0 || this.byTopic.has(message.topic) || this.pending.has(message.topic)) return true;
    return this.byTopic.size + this.pending.size < this.maxCount && this.bytes + this.pendingBytes + sizeOf(message) <= this.maxBytes;
  }

  /** Holds `message` as the topic's retained message until {@link settle}. */
  hold(message: Message): void {
    const before = this.pending.get(message.topic);
    if (before !== undefined) this.pendingBytes -= sizeOf(before);
    this.pending.set(message.topic, message);
    this.pendingBytes += sizeOf(message);
  }

  /** The commit of a held message finished: it becomes the retained value (ok) or is forgotten. */
  settle(message: Message, ok: boolean): void {
    if (this.pending.get(message.topic) === message) {
      this.pending.delete(message.topic);
      this.pendingBytes -= sizeOf(message);
    }
    if (ok) this.set(message);
  }

  /** Topics retained (committed ones). */
  get size(): number {
    return this.byTopic.size;
  }

  /** Bytes retained (payload plus topic of the committed ones). */
  get byteSize(): number {
    return this.bytes;
  }

  /** Stores or replaces the topic's retained message; an empty payload clears it [MQTT-3.3.1-10, MQTT-3.3.1-11]. */
  set(message: Message): void {
    this.delete(message.topic);
    if (message.payload.length === 0) return;
    this.byTopic.set(message.topic, message);
    this.bytes += sizeOf(message);
  }

  private delete(topic: string): void {
    const old = this.byTopic.get(topic);
    if (old === undefined) return;
    this.byTopic.delete(topic);
    this.bytes -= sizeOf(old);
  }

  /** Retained messages whose topic matches `filter`, skipping expired ones; held ones win. */
  *match(filter: string, now: number): Iterable<Message> {
    for (const [topic, message] of this.byTopic) {
      if (message.expiresAt !== undefined && message.expiresAt <= now) {
        this.delete(topic);
        continue;
      }
      if (this.pending.has(topic)) continue;
      if (matchesFilter(filter, topic)) yield message;
    }
    for (const [topic, message] of this.pending) {
      if (message.payload.length === 0) continue; // a clear on its way
      if (message.expiresAt !== undefined && message.expiresAt <= now) continue;
      if (matchesFilter(filter, topic)) yield message;
    }
  }
}
