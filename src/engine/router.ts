import { TopicTrie } from '../topics/trie.js';
import type { CompiledRule } from '../rules/compile.js';

/**
 * Routes a topic to the enabled rules whose filters match, through one topic trie: the cost
 * per message depends on the topic, not on how many rules do not match. Immutable; a reload
 * builds a new router and swaps it in.
 */
export class RuleRouter {
  private readonly trie = new TopicTrie<CompiledRule>();
  private readonly order = new Map<CompiledRule, number>();
  // Hot path: one visitor for all calls, collecting into `found`, instead of a closure per message.
  private found: CompiledRule[] = [];
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

  /** The matching rules, each once, in the order they were loaded. */
  match(topic: string): CompiledRule[] {
    const found: CompiledRule[] = (this.found = []);
    this.trie.match(topic, this.visit);
    if (found.length > 1) found.sort((a, b) => this.order.get(a)! - this.order.get(b)!);
    return found;
  }
}
