import { isScalar } from 'yaml';
import type { ConfigIssue } from '../config/issues.js';
import type { Path, YamlSource } from '../config/source.js';
import type { OutputRegistry } from '../outputs/registry.js';
import { ActionConfigError, type CompileContext, type CompiledAction } from '../outputs/types.js';
import { validateTopicFilter } from '../topics/validate.js';
import { compileExpression, ExpressionError, type CompiledExpression } from './expression.js';
import { filtersOverlap, templateToFilter } from './loops.js';
import { ruleFileSchema, ruleSchema, ruleTestSchema, type RuleTestSpec } from './schema.js';

/** One step of a rule's pipeline, compiled. */
export interface CompiledStep {
  readonly kind: 'when' | 'transform';
  readonly expression: CompiledExpression;
}

/** A rule ready to run: filters validated, every expression compiled once. */
export interface CompiledRule {
  readonly id: string;
  readonly description: string | undefined;
  readonly enabled: boolean;
  readonly filters: readonly string[];
  readonly steps: readonly CompiledStep[];
  readonly actions: readonly CompiledAction[];
  readonly file: string;
  readonly line: number;
  /**
   * True when its steps and actions read only the message's topic, QoS, retain flag, client
   * id, timestamp, hops, properties and raw bytes, never the parsed payload or the levels
   * (a bridge's out mapping): the input document is then built without parsing the payload.
   */
  readonly rawOnly?: boolean;
}

/** A `tests:` case with the file it came from. */
export interface RuleTestCase {
  readonly file: string;
  readonly line: number;
  readonly spec: RuleTestSpec;
}

export interface CompiledRules {
  readonly rules: CompiledRule[];
  readonly tests: RuleTestCase[];
}

const STEP_KINDS = new Set(['when', 'transform']);

/**
 * Compiles rule files. Every problem in every file is appended to `issues` (duplicate ids
 * across files, bad filters, JSONata syntax with its position, unknown outputs, loops); a
 * rule with a problem is left out of the result, and callers refuse to run when `issues`
 * is non-empty.
 */
export function compileRuleFiles(sources: readonly YamlSource[], registry: OutputRegistry, ctx: CompileContext, issues: ConfigIssue[]): CompiledRules {
  const rules: CompiledRule[] = [];
  const tests: RuleTestCase[] = [];
  const seen = new Map<string, string>();
  for (const source of sources) {
    const data = source.toData(issues);
    if (data === undefined) continue;
    const file = source.validate(ruleFileSchema, data, issues);
    if (!file) continue;
    file.rules.forEach((raw, index) => {
      const path = ['rules', index];
      const spec = source.validate(ruleSchema, raw, issues, path);
      if (!spec) return;
      const where = source.positionOf(path);
      const firstSeen = seen.get(spec.id);
      if (firstSeen) {
        issues.push(source.issue([...path, 'id'], 'SB_RULE_DUPLICATE_ID', `rule "${spec.id}": id already used at ${firstSeen}`, 'rule ids must be unique across all rule files'));
        return;
      }
      seen.set(spec.id, `${source.file}:${where.line}:${where.col}`);
      const before = issues.length;
      const rule = compileRule(source, path, spec, registry, ctx, issues);
      if (rule && issues.length === before) rules.push({ ...rule, file: source.file, line: where.line });
    });
    file.tests.forEach((raw, index) => {
      const path = ['tests', index];
      const spec = source.validate(ruleTestSchema, raw, issues, path, 'SB_RULE_TEST');
      if (spec) tests.push({ file: source.file, line: source.positionOf(path).line, spec });
    });
  }
  return { rules, tests };
}

function compileRule(
  source: YamlSource,
  path: Path,
  spec: ReturnType<typeof ruleSchema.parse>,
  registry: OutputRegistry,
  ctx: CompileContext,
  issues: ConfigIssue[],
): Omit<CompiledRule, 'file' | 'line'> | undefined {
  const label = `rule "${spec.id}"`;
  const filters = typeof spec.on === 'string' ? [spec.on] : spec.on;
  filters.forEach((filter, i) => {
    const problem = validateTopicFilter(filter);
    if (problem) {
      const at = typeof spec.on === 'string' ? [...path, 'on'] : [...path, 'on', i];
      issues.push(source.issue(at, 'SB_RULE_FILTER', `${label}: invalid topic filter "${filter}": ${problem}`, 'use + for one level and # for the rest, e.g. sensors/+/temperature'));
    }
  });

  const steps: CompiledStep[] = [];
  const addStep = (kind: 'when' | 'transform', text: string, at: Path) => {
    try {
      steps.push({ kind, expression: compileExpression(text, ctx.limits) });
    } catch (err) {
      if (!(err instanceof ExpressionError)) throw err;
      issues.push(expressionIssue(source, at, label, kind, err.message, err.position));
    }
  };
  if (spec.when !== undefined) addStep('when', spec.when, [...path, 'when']);
  if (spec.transform !== undefined) addStep('transform', spec.transform, [...path, 'transform']);
  spec.steps?.forEach((step, i) => {
    const [kind, value] = Object.entries(step)[0]!;
    const at = [...path, 'steps', i, kind];
    if (!STEP_KINDS.has(kind)) {
      issues.push(source.issue([...path, 'steps', i], 'SB_CONFIG_SCHEMA', `${label}: unknown step "${kind}"`, `steps are: ${[...STEP_KINDS].join(', ')}`));
    } else if (typeof value !== 'string') {
      issues.push(source.issue(at, 'SB_CONFIG_SCHEMA', `${label}: step "${kind}" takes a JSONata expression string`));
    } else {
      addStep(kind as 'when' | 'transform', value, at);
    }
  });

  const actions: CompiledAction[] = [];
  spec.to.forEach((entry, i) => {
    const [name, settings] = Object.entries(entry)[0]!;
    const at = [...path, 'to', i, name];
    const type = registry.get(name);
    if (!type) {
      issues.push(source.issue([...path, 'to', i], 'SB_RULE_OUTPUT', `${label}: unknown output "${name}"`, `outputs are: ${[...registry.keys()].join(', ')}`));
      return;
    }
    const parsed = source.validate(type.schema, settings ?? {}, issues, at);
    if (parsed === undefined) return;
    try {
      actions.push(type.compile(parsed, ctx));
    } catch (err) {
      if (!(err instanceof ActionConfigError)) throw err;
      const where = [...at, ...err.path];
      if (err.code === 'SB_RULE_EXPRESSION') issues.push(expressionIssue(source, where, label, name, err.message, err.offset));
      else issues.push(source.issue(where, err.code, `${label}: ${err.message}`));
    }
  });

  if (!spec.allowLoop) {
    actions.forEach((action, i) => {
      if (!action.republishTopic) return;
      const target = templateToFilter(action.republishTopic);
      const hit = filters.find((f) => validateTopicFilter(f) === undefined && filtersOverlap(f, target));
      if (hit !== undefined) {
        issues.push(
          source.issue(
            [...path, 'to', i],
            'SB_RULE_LOOP',
            `${label}: republishes to "${action.republishTopic.source}", which its own filter "${hit}" matches`,
            'republish to a topic outside the rule\'s filters, or set allowLoop: true if the rule stops itself',
          ),
        );
      }
    });
  }
  return { id: spec.id, description: spec.description, enabled: spec.enabled, filters, steps, actions };
}

/** An expression problem, pointing inside the expression when the position is known. */
function expressionIssue(source: YamlSource, path: Path, label: string, what: string, message: string, offset: number | undefined): ConfigIssue {
  const issue = source.issue(path, 'SB_RULE_EXPRESSION', `${label}: ${what}: ${message}`, 'see https://docs.jsonata.org for the expression syntax');
  if (offset === undefined) return issue;
  const pos = positionInScalar(source, path, offset);
  return pos ? { ...issue, ...pos } : issue;
}

/**
 * Maps an offset inside a string value to its line and column in the file: exact for plain
 * and quoted one-line scalars (escapes accounted for) and for `|` block scalars, the
 * scalar's start otherwise.
 */
export function positionInScalar(source: YamlSource, path: Path, offset: number): { line: number; col: number } | undefined {
  const node = source.doc.getIn(path, true);
  if (!isScalar(node) || !node.range || typeof node.value !== 'string') return undefined;
  const start = source.position(node.range[0]);
  const value = node.value;
  if (node.type === 'PLAIN') {
    return value.includes('\n') ? start : { line: start.line, col: start.col + offset };
  }
  if (node.type === 'QUOTE_DOUBLE' || node.type === 'QUOTE_SINGLE') {
    if (value.includes('\n')) return start;
    const raw = source.text.slice(node.range[0] + 1, node.range[1]);
    return { line: start.line, col: start.col + 1 + rawOffset(raw, offset, node.type === 'QUOTE_DOUBLE') };
  }
  if (node.type === 'BLOCK_LITERAL') {
    const before = value.slice(0, offset);
    const lineIdx = before.split('\n').length - 1;
    const colInLine = offset - (before.lastIndexOf('\n') + 1);
    // Indentation comes from the first non-blank content line (leading blank lines are kept in the value).
    const lines = source.text.split('\n');
    let indent = 0;
    for (let i = start.line; i < lines.length; i++) {
      if (lines[i]!.trim() !== '') {
        indent = lines[i]!.length - lines[i]!.trimStart().length;
        break;
      }
    }
    return { line: start.line + 1 + lineIdx, col: indent + colInLine + 1 };
  }
  return start;
}

/** The offset in a quoted scalar's source text of the character at `offset` of its value. */
function rawOffset(raw: string, offset: number, double: boolean): number {
  let i = 0;
  for (let n = 0; n < offset && i < raw.length; n++) {
    if (double && raw[i] === '\\') {
      const c = raw[i + 1];
      i += c === 'x' ? 4 : c === 'u' ? 6 : c === 'U' ? 10 : 2;
      if (c === 'U') n++; // an astral character is two UTF-16 units in the value
    } else if (!double && raw[i] === "'" && raw[i + 1] === "'") {
      i += 2;
    } else {
      i += 1;
    }
  }
  return i;
}
