import { matchesFilter } from '../topics/match.js';
import type { Message } from './types.js';

/**
 * Retained messages, one per topic. Held in memory; the storage layer makes them durable
 * by implementing the same three operations.
 */
export class RetainedStore {
  private readonly byTopic = new Map<string, Message>();
  /**
   * Retained messages accepted but not yet committed to storage. A subscriber arriving in
   * between sees them (so it misses neither the live copy nor the retained one); they
   * become the stored value on commit and vanish if the commit fails.
   */
  private readonly pending = new Map<string, Message>();

  /** Holds `message` as the topic's retained message until {@link settle}. */
  hold(message: Message): void {
    this.pending.set(message.topic, message);
  }

  /** The commit of a held message finished: it becomes the retained value (ok) or is forgotten. */
  settle(message: Message, ok: boolean): void {
    if (this.pending.get(message.topic) === message) this.pending.delete(message.topic);
    if (ok) this.set(message);
  }

  get size(): number {
    return this.byTopic.size;
  }

  /** Stores or replaces the topic's retained message; an empty payload clears it [MQTT-3.3.1-10, MQTT-3.3.1-11]. */
  set(message: Message): void {
    if (message.payload.length === 0) this.byTopic.delete(message.topic);
    else this.byTopic.set(message.topic, message);
  }

  /** Retained messages whose topic matches `filter`, skipping expired ones; held ones win. */
  *match(filter: string, now: number): Iterable<Message> {
    for (const [topic, message] of this.byTopic) {
      if (message.expiresAt !== undefined && message.expiresAt <= now) {
        this.byTopic.delete(topic);
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
