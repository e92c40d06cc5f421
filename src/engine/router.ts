import { TopicTrie } from '../topics/trie.js';
import type { CompiledRule } from '../rules/compile.js';

/** Topics whose matching rules a router remembers; past this it starts over. */
export const MATCH_CACHE_TOPICS = 10_000;
/** Longer topics are matched every time, so the cache stays within a few MiB. */
const MATCH_CACHE_TOPIC_LENGTH = 256;

/**
 * Routes a topic to the enabled rules whose filters match, through one topic trie: the cost
 * per message depends on the topic, not on how many rules do not match. Immutable; a reload
 * builds a new router and swaps it in. Devices publish on the same topics again and again,
 * so the answer for each recent topic is kept (bounded) and the trie walked once per topic.
 */
export class RuleRouter {
  private readonly trie = new TopicTrie<CompiledRule>();
  private readonly order = new Map<CompiledRule, number>();
  // Hot path: one visitor for all calls, collecting into `found`, instead of a closure per message.
  private found: CompiledRule[] = [];
  private readonly cache = new Map<string, readonly CompiledRule[]>();
  private readonly visit = (rule: CompiledRule): void => {
    // A rule with several matching filters is visited once per filter; rules per topic are few.
    if (!this.found.includes(rule)) this.found.push(rule);
  };

  constructor(readonly rules: readonly CompiledRule[]) {
    rules.forEach((rule, i) => {
      if (!rule.enabled) return;
      this.order.set(rule, i);
      for (const filter of rule.filters) this.trie.add(filter, rule);
    });
  }

  /** The matching rules, each once, in the order they were loaded. Callers must not change the array. */
  match(topic: string): readonly CompiledRule[] {
    const known = this.cache.get(topic);
    if (known !== undefined) return known;
    const found: CompiledRule[] = (this.found = []);
    this.trie.match(topic, this.visit);
    if (found.length > 1) found.sort((a, b) => this.order.get(a)! - this.order.get(b)!);
    if (topic.length <= MATCH_CACHE_TOPIC_LENGTH) {
      if (this.cache.size >= MATCH_CACHE_TOPICS) this.cache.clear();
      this.cache.set(topic, found);
    }
    return found;
  }
}
