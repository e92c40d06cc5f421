import { matchesFilter } from '../topics/match.js';
import type { Message } from './types.js';

/**
 * Retained messages, one per topic. Held in memory; the storage layer makes them durable
 * by implementing the same three operations.
 */
export class RetainedStore {
  private readonly byTopic = new Map<string, Message>();

  get size(): number {
    return this.byTopic.size;
  }

  /** Stores or replaces the topic's retained message; an empty payload clears it [MQTT-3.3.1-10, MQTT-3.3.1-11]. */
  set(message: Message): void {
    if (message.payload.length === 0) this.byTopic.delete(message.topic);
    else this.byTopic.set(message.topic, message);
  }

  /** Retained messages whose topic matches `filter`, skipping expired ones. */
  *match(filter: string, now: number): Iterable<Message> {
    for (const [topic, message] of this.byTopic) {
      if (message.expiresAt !== undefined && message.expiresAt <= now) {
        this.byTopic.delete(topic);
        continue;
      }
      if (matchesFilter(filter, topic)) yield message;
    }
  }
}
