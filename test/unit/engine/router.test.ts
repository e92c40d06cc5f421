import { describe, expect, it } from 'vitest';
import { MATCH_CACHE_TOPICS, RuleRouter } from '../../../src/engine/router.js';
import type { CompiledRule } from '../../../src/rules/compile.js';

/** Just what the router reads of a rule. */
function rule(id: string, filters: string[], enabled = true): CompiledRule {
  return { id, filters, enabled } as unknown as CompiledRule;
}

const ids = (rules: readonly CompiledRule[]) => rules.map((r) => r.id);

describe('the rule router', () => {
  const rules = [rule('all', ['#']), rule('temps', ['sensors/+/temp', 'sensors/#']), rule('off', ['sensors/#'], false), rule('sys', ['$SYS/#'])];

  it('finds each matching enabled rule once, in load order, and the same answer for a topic seen before', () => {
    const router = new RuleRouter(rules);
    for (let round = 0; round < 3; round++) {
      expect(ids(router.match('sensors/a/temp'))).toEqual(['all', 'temps']);
      expect(ids(router.match('lights/1'))).toEqual(['all']);
      expect(ids(router.match('$SYS/broker/uptime'))).toEqual(['sys']);
      expect(router.match('$other/x')).toEqual([]);
    }
  });

  it('stays right past its cache bound, and for topics too long to cache', () => {
    const router = new RuleRouter([rule('temps', ['sensors/+/temp'])]);
    for (let i = 0; i < MATCH_CACHE_TOPICS + 10; i++) expect(router.match(`sensors/${i}/temp`)).toHaveLength(1);
    expect(router.match('sensors/9/hum')).toHaveLength(0);
    const long = `sensors/${'x'.repeat(1000)}/temp`;
    expect(router.match(long)).toHaveLength(1);
    expect(router.match(long)).toHaveLength(1);
  });
});
