import type { Effect } from '../outputs/types.js';
import type { CompiledRule } from '../rules/compile.js';
import { withPayload, type RuleInput } from './message.js';

/** What one rule did with one message. */
export type RuleOutcome =
  | { readonly rule: CompiledRule; readonly status: 'ok'; readonly effects: Effect[] }
  | { readonly rule: CompiledRule; readonly status: 'skipped'; readonly step: number; readonly reason: string }
  | { readonly rule: CompiledRule; readonly status: 'error'; readonly stage: string; readonly error: Error };

/** JSONata's truthiness (as `$boolean`): false, 0, '', null, undefined, empty arrays and objects are false. */
export function isTruthy(value: unknown): boolean {
  if (value === undefined || value === null || value === false || value === 0 || value === '') return false;
  if (Array.isArray(value)) return value.some(isTruthy);
  if (typeof value === 'object') return Object.keys(value).length > 0;
  if (typeof value === 'function') return false;
  return true;
}

/**
 * Runs one rule on one message: its steps in order (`when` may skip it, `transform`
 * replaces the payload), then plans every output. Never throws: an error is an outcome, so
 * one bad rule cannot stop the others.
 */
export async function runRule(rule: CompiledRule, input: RuleInput): Promise<RuleOutcome> {
  let doc = input;
  let stage = 'when';
  try {
    for (let i = 0; i < rule.steps.length; i++) {
      const step = rule.steps[i]!;
      stage = `${step.kind} (step ${i + 1})`;
      const value = await step.expression.evaluate(doc);
      if (step.kind === 'when') {
        if (!isTruthy(value)) return { rule, status: 'skipped', step: i, reason: `when \`${step.expression.source.trim()}\` is ${JSON.stringify(value) ?? 'undefined'}` };
      } else {
        doc = withPayload(doc, value);
      }
    }
    const effects: Effect[] = [];
    for (let i = 0; i < rule.actions.length; i++) {
      const action = rule.actions[i]!;
      stage = `to[${i}] ${action.type}`;
      const planned = await action.plan(doc, rule.id);
      for (const e of planned) effects.push(e);
    }
    return { rule, status: 'ok', effects };
  } catch (err) {
    return { rule, status: 'error', stage, error: err instanceof Error ? err : new Error(String(err)) };
  }
}
