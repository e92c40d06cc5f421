import type { Effect } from '../outputs/types.js';
import type { CompiledRule } from '../rules/compile.js';
import { FALLBACK } from '../rules/expression.js';
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
 * replaces the payload), then plans every output. Never throws or rejects: an error is an
 * outcome, so one bad rule cannot stop the others.
 *
 * Hot path: as long as every expression and action stays in the synchronous fast path the
 * outcome is returned directly, with no promise; the first one that needs JSONata's
 * interpreter (or plans asynchronously) hands the rest of the rule to the async path.
 */
export function runRule(rule: CompiledRule, input: RuleInput): RuleOutcome | Promise<RuleOutcome> {
  let doc = input;
  let i = 0;
  try {
    for (; i < rule.steps.length; i++) {
      const step = rule.steps[i]!;
      if (!step.expression.evaluateSync) break;
      const value = step.expression.evaluateSync(doc);
      if (value === FALLBACK) break;
      const next = applyStep(step.kind, doc, value);
      if (next === undefined) return { rule, status: 'skipped', step: i, reason: skipReason(step.expression.source, value) };
      doc = next;
    }
    if (i < rule.steps.length) return runFrom(rule, doc, i, 0, []);
    const effects: Effect[] = [];
    for (let a = 0; a < rule.actions.length; a++) {
      const planned = rule.actions[a]!.plan(doc, rule.id);
      if (planned instanceof Promise) return planned.then((p) => runFrom(rule, doc, rule.steps.length, a + 1, [...effects, ...p]), (err: unknown) => failed(rule, `to[${a}] ${rule.actions[a]!.type}`, err));
      for (const e of planned) effects.push(e);
    }
    return { rule, status: 'ok', effects };
  } catch (err) {
    return failed(rule, i < rule.steps.length ? `${rule.steps[i]!.kind} (step ${i + 1})` : 'to', err);
  }
}

/** The doc after a step, or undefined when a `when` is false. */
function applyStep(kind: 'when' | 'transform', doc: RuleInput, value: unknown): RuleInput | undefined {
  if (kind === 'when') return isTruthy(value) ? doc : undefined;
  return withPayload(doc, value);
}

function skipReason(source: string, value: unknown): string {
  return `when \`${source.trim()}\` is ${JSON.stringify(value) ?? 'undefined'}`;
}

function failed(rule: CompiledRule, stage: string, err: unknown): RuleOutcome {
  return { rule, status: 'error', stage, error: err instanceof Error ? err : new Error(String(err)) };
}

/** The rest of a rule from step `fromStep` and action `fromAction`, through JSONata where needed. */
async function runFrom(rule: CompiledRule, start: RuleInput, fromStep: number, fromAction: number, effects: Effect[]): Promise<RuleOutcome> {
  let doc = start;
  let stage = 'when';
  try {
    for (let i = fromStep; i < rule.steps.length; i++) {
      const step = rule.steps[i]!;
      stage = `${step.kind} (step ${i + 1})`;
      const value = await step.expression.evaluate(doc);
      const next = applyStep(step.kind, doc, value);
      if (next === undefined) return { rule, status: 'skipped', step: i, reason: skipReason(step.expression.source, value) };
      doc = next;
    }
    for (let a = fromAction; a < rule.actions.length; a++) {
      const action = rule.actions[a]!;
      stage = `to[${a}] ${action.type}`;
      const planned = await action.plan(doc, rule.id);
      for (const e of planned) effects.push(e);
    }
    return { rule, status: 'ok', effects };
  } catch (err) {
    return failed(rule, stage, err);
  }
}
