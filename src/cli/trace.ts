import { TextDecoder } from 'node:util';
import type { Message, QoS } from '../broker/types.js';
import { systemClock, type Clock } from '../clock.js';
import { ConfigError, formatIssues } from '../config/issues.js';
import { loadProject, type Project } from '../config/load.js';
import { toRuleInput } from '../engine/message.js';
import { runRule } from '../engine/pipeline.js';
import { createOutputRegistry } from '../outputs/registry.js';
import type { Effect } from '../outputs/types.js';
import type { CompiledRule } from '../rules/compile.js';
import { matchesFilter } from '../topics/match.js';
import { validateTopicName } from '../topics/validate.js';

/** Arguments of `signalbox trace`, as the command line gave them. */
export interface TraceCommandOptions {
  config: string;
  configExplicit: boolean;
  topic: string;
  /** Raw payload text: `'{"celsius":20}'` is JSON to the rules, `open` is text. */
  payload: string;
  /** `0`, `1` or `2`, as typed. Default 0. */
  qos?: string;
  retain?: boolean;
  /** Client id the rules see. Default {@link TRACE_CLIENT_ID}. */
  clientId?: string;
  /** The trace as one JSON document instead of text. */
  json?: boolean;
}

/** What `signalbox trace` needs besides its arguments; defaults are the real ones. */
export interface TraceCommandDeps {
  /** Where problems go. Default process.stderr. */
  err?: NodeJS.WritableStream;
  env?: NodeJS.ProcessEnv;
  /** The message's timestamp. Default the system clock. */
  clock?: Pick<Clock, 'now'>;
}

/** The client id a traced message carries unless `--client-id` is given. */
export const TRACE_CLIENT_ID = 'signalbox-trace';

/** A republish fan-out can grow with every hop; a trace stops explaining after this many messages. */
export const MAX_TRACED_MESSAGES = 500;

/** What the rules would do with one message (and with what they republish). */
export interface MessageTrace {
  topic: string;
  /** The payload as text (`base64:…` when it is not UTF-8). */
  payload: string;
  qos: QoS;
  retain: boolean;
  clientId: string;
  hops: number;
  /** Set to `engine.maxHops` when rules were not run because the message is past it. */
  hopLimit?: number;
  /** Every rule for the first message; only matched ones for republished messages. */
  rules: RuleTrace[];
}

/** One rule's verdict on one message. */
export interface RuleTrace {
  id: string;
  file: string;
  line: number;
  status: 'not-matched' | 'disabled' | 'skipped' | 'error' | 'ok';
  filters: readonly string[];
  /** The first filter that matched. */
  filter?: string;
  /** Why it was skipped (`when … is false`). */
  reason?: string;
  stage?: string;
  error?: string;
  effects?: EffectTrace[];
}

/** One effect a rule would produce; a republish carries the trace of the message it makes. */
export interface EffectTrace {
  type: string;
  output?: string;
  topic: string;
  /** The payload as text (`base64:…` when it is not UTF-8). */
  payload: string;
  qos: QoS;
  retain: boolean;
  /** The republished message would be refused (it would be a dead letter). */
  error?: string;
  next?: MessageTrace;
}

/**
 * `signalbox trace`: explains what the current rules would do with one message, with no
 * side effects: nothing listens, no database is opened, no output runs. Returns 0 when the
 * trace was printed (rule errors included: they are what it explains), 2 for a bad option
 * or configuration problems (reported on `deps.err`).
 */
export async function traceCommand(options: TraceCommandOptions, out: NodeJS.WritableStream, deps: TraceCommandDeps = {}): Promise<number> {
  const err = deps.err ?? process.stderr;
  const invalid = validateTopicName(options.topic);
  if (invalid) return fail(err, `invalid topic '${options.topic}': ${invalid}`);
  const qosText = options.qos ?? '0';
  if (!/^[012]$/.test(qosText)) return fail(err, `--qos must be 0, 1 or 2, got '${qosText}'`);
  let project: Project;
  try {
    project = loadProject(options.config, { explicit: options.configExplicit, registry: createOutputRegistry(), env: deps.env });
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    err.write(`${formatIssues(e.issues)}\n${e.issues.length} problem(s)\n`);
    return 2;
  }
  const clock = deps.clock ?? systemClock;
  const message: Message = {
    topic: options.topic,
    payload: Buffer.from(options.payload, 'utf8'),
    qos: Number(qosText) as QoS,
    retain: options.retain === true,
    clientId: options.clientId ?? TRACE_CLIENT_ID,
    timestamp: clock.now(),
    hops: 0,
  };
  const tracer = new Tracer(project.compiled.rules, project.config.engine.maxHops, clock);
  const trace = await tracer.trace(message, true);
  out.write(options.json === true ? `${JSON.stringify(trace, null, 2)}\n` : renderTrace(trace, tracer.truncated));
  return 0;
}

function fail(err: NodeJS.WritableStream, message: string): number {
  err.write(`signalbox trace: ${message}\n`);
  return 2;
}

/** Walks a message through the rules the way the processor does, but collects instead of executing. */
class Tracer {
  truncated = false;
  private traced = 0;

  constructor(
    private readonly rules: readonly CompiledRule[],
    private readonly maxHops: number,
    private readonly clock: Pick<Clock, 'now'>,
  ) {}

  async trace(message: Message, all: boolean): Promise<MessageTrace> {
    this.traced++;
    const { topic, qos, retain, clientId, hops } = message;
    const result: MessageTrace = { topic, payload: payloadText(message.payload), qos, retain, clientId, hops, rules: [] };
    const matched = this.rules.map((rule) => ({ rule, filter: rule.filters.find((f) => matchesFilter(f, topic)) }));
    const runnable = matched.filter((m) => m.filter !== undefined && m.rule.enabled);
    // Same order of checks as RuleProcessor.onPublish: the hop limit only matters when a rule matches.
    if (runnable.length > 0 && hops > this.maxHops) {
      result.hopLimit = this.maxHops;
      return result;
    }
    const input = toRuleInput(message);
    for (const { rule, filter } of matched) {
      const base = { id: rule.id, file: rule.file, line: rule.line, filters: rule.filters };
      if (filter === undefined) {
        if (all) result.rules.push({ ...base, status: 'not-matched' });
        continue;
      }
      if (!rule.enabled) {
        if (all) result.rules.push({ ...base, status: 'disabled', filter });
        continue;
      }
      const outcome = await runRule(rule, input);
      if (outcome.status === 'skipped') result.rules.push({ ...base, status: 'skipped', filter, reason: outcome.reason });
      else if (outcome.status === 'error') result.rules.push({ ...base, status: 'error', filter, stage: outcome.stage, error: outcome.error.message });
      else result.rules.push({ ...base, status: 'ok', filter, effects: await Promise.all(outcome.effects.map((e) => this.effect(e))) });
    }
    return result;
  }

  private async effect(effect: Effect): Promise<EffectTrace> {
    const { type, output, topic, qos, retain } = effect;
    const traced: EffectTrace = { type, ...(output === undefined ? {} : { output }), topic, payload: payloadText(effect.payload), qos, retain };
    if (type !== 'republish') return traced;
    // As the broker's publish would: refuse a bad topic, else hand it to the rules one hop further.
    const invalid = validateTopicName(topic);
    if (invalid) return { ...traced, error: `cannot publish to "${topic}": ${invalid}` };
    if (this.traced >= MAX_TRACED_MESSAGES) {
      this.truncated = true;
      return traced;
    }
    const next: Message = { topic, payload: effect.payload, qos, retain, properties: effect.properties, clientId: '', timestamp: this.clock.now(), hops: effect.source.hops + 1 };
    return { ...traced, next: await this.trace(next, false) };
  }
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Payload bytes as text; bytes that are not UTF-8 as `base64:…` so the trace stays printable. */
function payloadText(payload: Buffer): string {
  try {
    return decoder.decode(payload);
  } catch {
    return `base64:${payload.toString('base64')}`;
  }
}

const CONTROL = /[\u0000-\u001f\u007f]/g;

/** One line per payload: control characters escaped, an empty payload shown as ''. */
function showPayload(text: string): string {
  return text === '' ? "''" : text.replace(CONTROL, (c) => (c === '\u007f' ? '\\u007f' : JSON.stringify(c).slice(1, -1)));
}

/** The trace as indented lines; republished messages nest under the effect that makes them. */
export function renderTrace(trace: MessageTrace, truncated = false): string {
  const lines: string[] = [];
  const header = (m: MessageTrace) => `${m.topic} (qos ${m.qos}${m.retain ? ', retain' : ''}${m.hops > 0 ? `, hop ${m.hops}` : `, client ${m.clientId}`}) ${showPayload(m.payload)}`;
  const walk = (m: MessageTrace, pad: string) => {
    if (m.hopLimit !== undefined) {
      lines.push(`${pad}hop limit reached (engine.maxHops ${m.hopLimit}): rules not run for this message`);
      return;
    }
    if (m.rules.length === 0) lines.push(`${pad}no rule matches`);
    for (const r of m.rules) {
      const where = `${r.id} (${r.file}:${r.line})`;
      if (r.status === 'not-matched') {
        lines.push(`${pad}${where}: not matched: no filter matches (${r.filters.join(', ')})`);
        continue;
      }
      lines.push(`${pad}${where}: matched ${r.filter}`);
      if (r.status === 'disabled') lines.push(`${pad}  disabled: not run`);
      else if (r.status === 'skipped') lines.push(`${pad}  skipped: ${r.reason}`);
      else if (r.status === 'error') lines.push(`${pad}  error at ${r.stage}: ${r.error} (would be a dead letter)`);
      else {
        lines.push(`${pad}  ok${r.effects!.length === 0 ? ': no effects' : ''}`);
        for (const e of r.effects!) {
          const target = e.output === undefined ? e.type : `${e.type} ${e.output}`;
          const flags = e.type === 'republish' ? ` (qos ${e.qos}${e.retain ? ', retain' : ''})` : '';
          lines.push(`${pad}    ${target} → ${e.topic}${flags} ${showPayload(e.payload)}`);
          if (e.error !== undefined) lines.push(`${pad}      error: ${e.error} (would be a dead letter)`);
          if (e.next !== undefined && e.next.rules.length === 0 && e.next.hopLimit === undefined) {
            lines.push(`${pad}      → hop ${e.next.hops}: no rule matches ${e.next.topic}`);
          } else if (e.next !== undefined) {
            lines.push(`${pad}      → ${header(e.next)}`);
            walk(e.next, `${pad}        `);
          }
        }
      }
    }
  };
  lines.push(header(trace));
  walk(trace, '  ');
  if (truncated) lines.push(`(trace stopped after ${MAX_TRACED_MESSAGES} messages)`);
  return `${lines.join('\n')}\n`;
}
