/**
 * `tests:` cases run in-process: the real RuleProcessor over the compiled rules, with every
 * output's sink replaced by a recorder, so a case exercises exactly the code the broker runs
 * but opens no socket and no database.
 */
import type { Message, MessageProperties } from '../broker/types.js';
import type { Clock } from '../clock.js';
import { encodePayload, parsePayload } from '../engine/message.js';
import { DEFAULT_MAX_HOPS, RuleProcessor } from '../engine/processor.js';
import { silentLogger, type Logger } from '../log.js';
import type { OutputRegistry } from '../outputs/registry.js';
import type { Effect, EffectSink, OutputType } from '../outputs/types.js';
import type { DeadLetter, DeadLetterStore } from '../storage/dead-letters.js';
import { validateTopicName } from '../topics/validate.js';
import type { CompiledRule, RuleTestCase } from './compile.js';
import type { RuleTestSpec } from './schema.js';

/** The time every test message carries unless a clock is injected: 2026-01-01T00:00:00Z, so `$fromMillis(timestamp)` is stable. */
export const DEFAULT_TEST_TIME = Date.UTC(2026, 0, 1);

/** One effect a rule produced during a case, as tests compare and print it. */
export interface CapturedEffect {
  readonly type: string;
  readonly rule: string;
  readonly topic: string;
  /** Parsed JSON when the bytes parse, else the text. */
  readonly payload: unknown;
  /** The payload bytes as UTF-8 text, for string comparisons. */
  readonly text: string;
  readonly qos: 0 | 1 | 2;
  readonly retain: boolean;
  /** Rule hops of the message that caused it (0 = the case's own publish). */
  readonly hops: number;
}

/** A rule (or output) failure during a case: what the engine would have sent to the dead letters. */
export interface CapturedError {
  readonly rule: string;
  /** The output that failed; undefined when a step or expression of the rule failed. */
  readonly output: string | undefined;
  readonly error: string;
  readonly topic: string;
}

/** The outcome of one case. `diff` is set for failures: expected vs everything captured. */
export interface RuleTestResult {
  readonly name: string;
  readonly file: string;
  readonly line: number;
  readonly passed: boolean;
  /** One line per unmet expectation or error; empty when passed. */
  readonly failures: string[];
  readonly diff: string | undefined;
  readonly effects: CapturedEffect[];
  readonly errors: CapturedError[];
  /** Messages the hop limit stopped (rules republishing into each other). */
  readonly hopLimitDrops: number;
}

/** Every case's result in order, with totals. */
export interface RuleTestReport {
  readonly results: RuleTestResult[];
  readonly passed: number;
  readonly failed: number;
}

/** What the runner needs besides rules and cases. */
export interface RuleTestOptions {
  /** The real output registry; each type's sink is swapped for a recorder. */
  readonly registry: OutputRegistry;
  /** `engine.maxHops` from the config. Default {@link DEFAULT_MAX_HOPS}. */
  readonly maxHops?: number;
  /** Stamps every message. Default: fixed at {@link DEFAULT_TEST_TIME}. */
  readonly clock?: Pick<Clock, 'now'>;
  readonly log?: Logger;
}

type Expectation = Exclude<RuleTestSpec['expect'], 'nothing'>[number];
type ExpectedFields = Expectation[string];
type PublishSpec = Extract<RuleTestSpec['publish'], { topic: string }>;

/** Runs every case in order, each on a fresh processor; never throws for a failing case. */
export async function runRuleTests(rules: readonly CompiledRule[], tests: readonly RuleTestCase[], options: RuleTestOptions): Promise<RuleTestReport> {
  const results: RuleTestResult[] = [];
  for (const test of tests) results.push(await runRuleTest(rules, test, options));
  const passed = results.filter((r) => r.passed).length;
  return { results, passed, failed: results.length - passed };
}

/**
 * Runs one case: publishes its messages one after the other (each fully processed, chained
 * republishes included, before the next), then checks the captured effects and errors
 * against `expect`.
 */
export async function runRuleTest(rules: readonly CompiledRule[], test: RuleTestCase, options: RuleTestOptions): Promise<RuleTestResult> {
  const clock = options.clock ?? { now: () => DEFAULT_TEST_TIME };
  const effects: CapturedEffect[] = [];
  const errors: CapturedError[] = [];
  const failures: string[] = [];
  let processor: RuleProcessor | undefined;

  // Republished messages go back into the processor as the broker would hand them over:
  // validated topic, one more hop, stamped now, published by signalbox itself ('').
  const feedBack = (effect: Effect): Promise<void> | undefined => {
    const invalid = validateTopicName(effect.topic);
    if (invalid) return Promise.reject(new Error(`cannot publish to "${effect.topic}": ${invalid}`));
    const message = toMessage({ topic: effect.topic, payload: effect.payload, qos: effect.qos, retain: effect.retain, properties: effect.properties, clientId: '', hops: effect.source.hops + 1 }, clock.now());
    return processor!.onPublish(message, { clientId: '', protocolVersion: 5 });
  };
  const recorder = (type: OutputType): OutputType => ({
    ...type,
    createSink: (): EffectSink => ({
      execute(effect) {
        effects.push(capture(effect));
        return type.name === 'republish' ? feedBack(effect) : undefined;
      },
    }),
  });
  const registry: OutputRegistry = new Map([...options.registry].map(([name, type]) => [name, recorder(type)]));
  // The processor only ever calls add() on its dead-letter store; a recorder stands in for SQLite.
  const deadLetters: Pick<DeadLetterStore, 'add'> = {
    add: (l: DeadLetter) => void errors.push({ rule: l.ruleId, output: l.output, error: l.error, topic: l.topic }),
  };
  const log = options.log ?? silentLogger();
  processor = new RuleProcessor(rules, options.maxHops ?? DEFAULT_MAX_HOPS, {
    registry,
    deadLetters,
    history: undefined,
    log,
    publish: () => Promise.reject(new Error('publish is captured by the test runner')),
  });

  const publishes = Array.isArray(test.spec.publish) ? test.spec.publish : [test.spec.publish];
  for (const [i, spec] of publishes.entries()) {
    const where = publishes.length > 1 ? `publish[${i}]` : 'publish';
    const invalid = validateTopicName(spec.topic);
    if (invalid) {
      failures.push(`${where}: invalid topic "${spec.topic}": ${invalid}`);
      continue;
    }
    const properties = toProperties(spec.properties, where, failures);
    try {
      await processor.onPublish(toMessage({ ...spec, payload: encodePayload(spec.payload), properties, hops: 0 }, clock.now()), { clientId: spec.clientId, protocolVersion: 5 });
    } catch (err) {
      failures.push(`${where}: processing failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  await processor.close();

  const problems = [...failures, ...errors.map((e) => `rule "${e.rule}" failed on ${e.topic}${e.output ? ` in output ${e.output}` : ''}: ${e.error} (a dead letter)`)];
  const unmet = checkExpectations(test.spec.expect, effects, errors, options.registry);
  const all = [...problems, ...unmet.map((u) => u.headline)];
  const hopLimitDrops = processor.stats.hopLimitDrops;
  const passed = all.length === 0;
  const diff = passed ? undefined : renderDiff(test.spec.expect, problems, unmet, effects, hopLimitDrops);
  return { name: test.spec.name, file: test.file, line: test.line, passed, failures: all, diff, effects, errors, hopLimitDrops };
}

interface Unmet {
  /** One line, for `failures`. */
  readonly headline: string;
  /** What was wanted, then the expected fields pretty-printed, for the diff. */
  readonly summary: string;
  readonly fields: Record<string, unknown>;
  /** Per candidate effect of the expected type, which fields differed. */
  readonly near: string[];
}

function checkExpectations(expect: RuleTestSpec['expect'], effects: CapturedEffect[], errors: CapturedError[], registry: OutputRegistry): Unmet[] {
  if (expect === 'nothing') {
    if (effects.length === 0 && errors.length === 0) return [];
    const got = `${plural(effects.length, 'effect')}${errors.length ? ` and ${plural(errors.length, 'rule error')}` : ''}`;
    return [{ headline: `expected nothing, got ${got}`, summary: `nothing, got ${got}`, fields: {}, near: [] }];
  }
  const unmet: Unmet[] = [];
  for (const expectation of expect) {
    const [type, fields] = Object.entries(expectation)[0]!;
    const candidates = effects.filter((e) => e.type === type);
    const matching = candidates.filter((e) => differences(fields, e).length === 0).length;
    const ok = fields.count === undefined ? matching > 0 : matching === fields.count;
    if (ok) continue;
    const wanted = fields.count === undefined ? 'at least 1' : `exactly ${fields.count}`;
    const unknown = registry.has(type) ? '' : ` ("${type}" is not an output type; outputs are: ${[...registry.keys()].join(', ')})`;
    const summary = `${wanted} ${type} effect(s) matching, got ${matching}${unknown}`;
    unmet.push({
      headline: `expected ${wanted} ${type} effect(s) matching ${JSON.stringify(shown(fields))}, got ${matching}${unknown}`,
      summary,
      fields: shown(fields),
      near: candidates.map((e, i) => `${type} #${i + 1} (rule ${e.rule}): ${differences(fields, e).join('; ') || 'matches'}`),
    });
  }
  return unmet;
}

/** The given fields of an expectation that the effect does not satisfy, as `field: expected X, got Y`. */
function differences(fields: ExpectedFields, e: CapturedEffect): string[] {
  const out: string[] = [];
  const differs = (name: string, expected: unknown, actual: unknown) => out.push(`${name}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  if (fields.topic !== undefined && fields.topic !== e.topic) differs('topic', fields.topic, e.topic);
  if (fields.payload !== undefined && !payloadMatches(fields.payload, e)) differs('payload', fields.payload, e.payload);
  if (fields.qos !== undefined && fields.qos !== e.qos) differs('qos', fields.qos, e.qos);
  if (fields.retain !== undefined && fields.retain !== e.retain) differs('retain', fields.retain, e.retain);
  if (fields.rule !== undefined && fields.rule !== e.rule) differs('rule', fields.rule, e.rule);
  return out;
}

/** JSON-equal to the parsed payload, or, for an expected string, equal to the payload text. */
function payloadMatches(expected: unknown, e: CapturedEffect): boolean {
  return jsonEqual(expected, e.payload) || (typeof expected === 'string' && expected === e.text);
}

/** Deep equality of JSON values; key order does not matter. */
function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === (b as unknown[]).length && a.every((v, i) => jsonEqual(v, (b as unknown[])[i]));
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return ka.length === kb.length && ka.every((k) => Object.hasOwn(b, k) && jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/**
 * The readable failure report: problems (publish errors, rule errors), each unmet
 * expectation with how every candidate effect differed, then every captured effect as JSON.
 */
function renderDiff(expect: RuleTestSpec['expect'], problems: string[], unmet: Unmet[], effects: CapturedEffect[], hopLimitDrops: number): string {
  const lines = [...problems];
  if (expect === 'nothing') {
    for (const u of unmet) lines.push(`expected ${u.summary}`);
  } else if (unmet.length > 0) {
    lines.push(`expected (${unmet.length} of ${expect.length} not met):`);
    for (const u of unmet) {
      lines.push(`  - ${u.summary}:`, indent(pretty(u.fields), 4));
      for (const n of u.near) lines.push(`    ${n}`);
    }
  }
  lines.push(`captured ${plural(effects.length, 'effect')}${effects.length > 0 ? ':' : ''}`);
  if (effects.length > 0) lines.push(indent(pretty(effects.map(({ type, rule, topic, payload, qos, retain }) => ({ type, rule, topic, payload, qos, retain }))), 2));
  if (hopLimitDrops > 0) lines.push(`hop limit reached: ${plural(hopLimitDrops, 'message')} not run through rules (a republish cycle?)`);
  return lines.join('\n');
}

function toMessage(m: Omit<Message, 'timestamp' | 'expiresAt'>, now: number): Message {
  const interval = m.properties?.messageExpiryInterval;
  return { ...m, timestamp: now, expiresAt: interval === undefined ? undefined : now + interval * 1000 };
}

function capture(effect: Effect): CapturedEffect {
  const text = effect.payload.toString('utf8');
  return { type: effect.type, rule: effect.ruleId, topic: effect.topic, payload: parsePayload(effect.payload), text, qos: effect.qos, retain: effect.retain, hops: effect.source.hops };
}

const PROPERTY_KEYS = ['contentType', 'responseTopic', 'correlationData', 'messageExpiryInterval', 'payloadFormatIndicator', 'userProperties'];

/** A case's `properties:` in broker form; unknown keys and wrong types are case failures. */
function toProperties(raw: PublishSpec['properties'], where: string, failures: string[]): MessageProperties | undefined {
  if (raw === undefined) return undefined;
  const p: MessageProperties = {};
  for (const [key, value] of Object.entries(raw)) {
    if ((key === 'contentType' || key === 'responseTopic') && typeof value === 'string') p[key] = value;
    else if (key === 'correlationData' && typeof value === 'string') p.correlationData = Buffer.from(value, 'utf8');
    else if (key === 'messageExpiryInterval' && Number.isSafeInteger(value)) p.messageExpiryInterval = value as number;
    else if (key === 'payloadFormatIndicator' && typeof value === 'boolean') p.payloadFormatIndicator = value;
    else if (key === 'userProperties' && isStringRecord(value)) p.userProperties = value;
    else if (PROPERTY_KEYS.includes(key)) failures.push(`${where}.properties.${key}: unexpected value ${JSON.stringify(value)}`);
    else failures.push(`${where}.properties: unknown key "${key}" (known: ${PROPERTY_KEYS.join(', ')})`);
  }
  return p;
}

function isStringRecord(value: unknown): value is Record<string, string> {
  return value !== null && typeof value === 'object' && !Array.isArray(value) && Object.values(value).every((v) => typeof v === 'string');
}

function shown(fields: ExpectedFields): Record<string, unknown> {
  const { count: _count, ...rest } = fields;
  return rest;
}

function pretty(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

function indent(text: string, n: number): string {
  return text.replace(/^/gm, ' '.repeat(n));
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}
